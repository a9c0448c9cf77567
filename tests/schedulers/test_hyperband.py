"""HyperBand: bracket arithmetic, synchronous rungs, concurrency, failures, budget."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from schedulers import (
    Budget,
    Done,
    Pause,
    RunSegment,
    SchedulerArgumentError,
    SegmentFailed,
    SegmentStarted,
    Stop,
    TrialCreated,
)
from schedulers._rungs import Bracket, hyperband_brackets
from schedulers.hyperband import HyperBandScheduler
from schedulers.simulate import simulate
from tests.schedulers.conftest import SPACE, objective
from tests.schedulers.replay_util import apply, check_ask_n, check_replay, finish


def hb(**kwargs: Any) -> HyperBandScheduler:
    args: dict[str, Any] = {"max_t": 9, "reduction_factor": 3, "budget": Budget(max_trials=30)}
    args.update(kwargs)
    return HyperBandScheduler(space=SPACE, metric="loss", mode="min", **args)


# ------------------------------------------------------------ bracket arithmetic
def rungs(max_t: float, eta: float) -> list[tuple[int, list[list[float]]]]:
    return [(b.s, [list(r) for r in b.rungs]) for b in hyperband_brackets(max_t, eta)]


def test_table_1_of_the_paper() -> None:
    assert rungs(81, 3) == [
        (4, [[81, 1], [27, 3], [9, 9], [3, 27], [1, 81]]),
        (3, [[34, 3], [11, 9], [3, 27], [1, 81]]),
        (2, [[15, 9], [5, 27], [1, 81]]),
        (1, [[8, 27], [2, 81]]),
        (0, [[5, 81]]),
    ]
    assert [b.resource_restart for b in hyperband_brackets(81, 3)] == [405, 363, 351, 378, 405]


def test_exact_powers_do_not_lose_a_bracket() -> None:
    # math.log(243, 3) == 4.999..., which floors to the wrong s_max.
    assert hyperband_brackets(243, 3)[0].s == 5
    assert hyperband_brackets(1000, 10)[0].s == 3
    assert hyperband_brackets(8.0, 2.0)[0].rungs[0] == (8, 1.0)


def test_non_power_and_float_resources() -> None:
    brackets = hyperband_brackets(100, 3)
    assert brackets[0].s == 4
    # Whole epochs, rounded down like Ray Tune: R = 100 must not give r0 = 100/81.
    assert [r for _, r in brackets[0].rungs] == [1, 3, 11, 33, 100]
    assert all(isinstance(r, int) for b in brackets for _, r in b.rungs)
    assert all(b.rungs[-1][1] == 100 for b in brackets)
    # The exact rationals are still there for logs written before integer rungs.
    assert hyperband_brackets(100, 3, integer=False)[0].rungs[0] == (81, 100 / 81)
    assert rungs(1.0, 2.0) == [(0, [[1, 1.0]])]
    assert rungs(4.0, 2.0) == [
        (2, [[4, 1.0], [2, 2.0], [1, 4.0]]),
        (1, [[3, 2.0], [1, 4.0]]),
        (0, [[3, 4.0]]),
    ]
    assert isinstance(hyperband_brackets(4.0, 2)[0].rungs[0][1], float)


@given(st.integers(1, 3000), st.sampled_from([2, 3, 4, 2.5, 3.0]))
def test_bracket_invariants(max_t: int, eta: float) -> None:
    brackets = hyperband_brackets(max_t, eta)
    s_max = brackets[0].s
    assert eta**s_max <= max_t * (1 + 1e-12) < eta ** (s_max + 1)
    assert [b.s for b in brackets] == list(range(s_max, -1, -1))
    for b in brackets:
        assert len(b.rungs) == b.s + 1
        assert b.rungs[-1][1] == max_t
        ns = [n for n, _ in b.rungs]
        assert ns == sorted(ns, reverse=True) and ns[-1] >= 1
        for i, (_, r_i) in enumerate(b.rungs):
            # Integer rungs: floor(R * eta**(i - s)), strictly increasing, >= 1.
            assert isinstance(r_i, int) and r_i >= 1
            assert r_i == max_t if i == b.s else r_i == int(max_t / eta ** (b.s - i) + 1e-9)
        rs = [r for _, r in b.rungs]
        assert rs == sorted(set(rs))


# ------------------------------------------------------------------ validation
@pytest.mark.parametrize(
    ("kwargs", "argument", "text"),
    [
        ({"reduction_factor": 1}, "reduction_factor", "reduction_factor is 1, but must be >= 2"),
        ({"max_t": 0}, "max_t", "max_t is 0, but must be > 0"),
        ({"searcher": "grid"}, "searcher", "searcher is 'grid'"),
        ({"stop_last_trials": False}, "stop_last_trials", "budget.max_resource"),
        ({"searcher": "tpe", "searcher_args": {"bogus": 1}}, "searcher_args", "bogus"),
    ],
)
def test_bad_arguments_name_the_argument(kwargs: dict[str, Any], argument: str, text: str) -> None:
    with pytest.raises(SchedulerArgumentError) as info:
        hb(**kwargs)
    assert info.value.argument == argument
    assert text in str(info.value)


# -------------------------------------------------------- hand-built sequences
def test_rung_waits_then_promotes_the_best_with_their_checkpoints() -> None:
    s = hb()
    first = s.ask(9)
    assert [(a.trial_id, a.start, a.stop, a.info["s"]) for a in first] == [
        (f"t{i:04d}", 0, 1, 2) for i in range(9)
    ]
    for a in first:
        apply(s, a)
    losses = [0.9, 0.1, 0.8, 0.3, 0.7, 0.6, 0.2, 0.5, 0.4]
    for i, loss in enumerate(losses[:-1]):
        finish(s, f"t{i:04d}", 0, 1, loss)
        (pause,) = s.ask(1)
        assert isinstance(pause, Pause) and pause.trial_id == f"t{i:04d}"
        apply(s, pause)
    finish(s, "t0008", 0, 1, losses[-1])
    decisions = s.ask(9)
    promoted = {a.trial_id: a for a in decisions if isinstance(a, RunSegment)}
    assert set(promoted) == {"t0001", "t0006", "t0003"}
    for tid, a in promoted.items():
        assert (a.start, a.stop, a.info["promoted"], a.info["rung"]) == (1, 3, True, 1)
        assert a.restore_from is not None and a.restore_from.trial_id == tid
    culled = {a.trial_id for a in decisions if isinstance(a, Stop)}
    assert culled == {f"t{i:04d}" for i in range(9)} - set(promoted)


def test_waiting_bracket_does_not_idle_workers() -> None:
    s = hb()
    for a in s.ask(9):
        apply(s, a)
    for i in range(8):  # t0008 is the straggler
        finish(s, f"t{i:04d}", 0, 1, 0.5 + i)
        apply(s, s.ask(1)[0])
    (nxt,) = s.ask(1)
    assert isinstance(nxt, RunSegment) and nxt.new_trial
    assert (nxt.info["bracket"], nxt.info["s"], nxt.start, nxt.stop) == (1, 1, 0, 3)


def test_failed_trial_leaves_its_rung_without_stalling() -> None:
    s = hb()
    for a in s.ask(9):
        apply(s, a)
    for i in range(8):
        finish(s, f"t{i:04d}", 0, 1, float(i))
        apply(s, s.ask(1)[0])
    s.tell(SegmentFailed("t0008", 0, 1, "boom"))
    decisions = s.ask(9)
    promoted = [a.trial_id for a in decisions if isinstance(a, RunSegment) and not a.new_trial]
    assert promoted == ["t0000", "t0001", "t0002"]


@pytest.mark.parametrize(
    "budget", [Budget(max_trials=30), Budget(max_resource=100)], ids=["trials", "resource"]
)
def test_ask_n_is_successive_ask_one(budget: Budget) -> None:
    make = lambda: hb(seed=5, budget=budget, stop_last_trials=budget.max_trials is not None)  # noqa: E731
    result = simulate(make(), objective, max_concurrency=4, seed=1)
    for point in result.decision_points[::2]:
        check_ask_n(make, result.events[:point])


# ------------------------------------------------------------------ whole runs
@pytest.mark.parametrize("searcher", ["random", "tpe"])
def test_replay_of_random_prefixes(searcher: str) -> None:
    check_replay(lambda: hb(seed=11, searcher=searcher), seed=4)


@pytest.mark.parametrize(("max_t", "eta"), [(9, 3), (2.7, 3), (8.0, 2.0), (10, 3)])
def test_survivors_reach_max_t_exactly(max_t: float, eta: float) -> None:
    s = hb(max_t=max_t, reduction_factor=eta, budget=Budget(max_trials=40))
    result = simulate(s, objective, max_concurrency=3)
    stops = [e.stop for e in result.events if isinstance(e, SegmentStarted)]
    assert max(stops) == max_t
    assert isinstance(result.done, Done)


def test_resource_budget_spends_the_remainder_on_a_partial_bracket() -> None:
    budget = Budget(max_resource=130)  # iteration 1 costs 21 + 21 + 27 = 69
    s = hb(budget=budget)
    result = simulate(s, objective, max_concurrency=4)
    created = [e for e in result.events if isinstance(e, TrialCreated)]
    plans = {e.info["bracket"]: e.info for e in created if "plan" in e.info}
    assert [info["s"] for _, info in sorted(plans.items())] == [2, 1, 0, 2, 1, 0]
    # 111 for five whole brackets; s = 0 (27) no longer fits, 2 of its 3 trials (18) do.
    assert plans[5]["plan"] == [[2, 9]]
    spent = sum(Bracket(i["s"], tuple(map(tuple, i["plan"]))).resource for i in plans.values())
    assert spent == result.resource_used == 129
    assert 130 - result.resource_used < 9  # less than one full training left unspent


def test_stop_last_trials_false_extends_survivors_within_budget() -> None:
    s = hb(stop_last_trials=False, budget=Budget(max_resource=120))
    result = simulate(s, objective, max_concurrency=2)
    extended = [e for e in result.events if isinstance(e, SegmentStarted) and e.start >= 9]
    assert extended and all(e.stop - e.start == 9 for e in extended)
    assert result.resource_used <= 120


def test_status_extras_is_json() -> None:
    s = hb()
    for a in s.ask(5):
        apply(s, a)
    extras = json.loads(json.dumps(s.status_extras()))
    (bracket,) = extras["brackets"]
    assert bracket["s"] == 2 and len(bracket["rungs"][0]["members"]) == 5


# ------------------------------------------------------- stored payloads (issue 14)
def test_payloads_written_before_plans_were_recorded_replay_their_old_arithmetic() -> None:
    # A log from before integer rungs: R = 10 ran r0 = 10/9, and its TrialCreated
    # carried no "plan". Replaying it must keep that bracket's exact-rational rungs.
    s = hb(max_t=10)
    old = {"bracket": 0, "s": 2, "iteration": 1, "rung": 0}
    s.tell(TrialCreated("t0000", {"lr": 0.01, "width": 32, "act": "relu"}, old))
    s.tell(SegmentStarted("t0000", 0, 10 / 9, {"lr": 0.01, "width": 32, "act": "relu"}, None, old))
    (nxt,) = s.ask(1)
    assert isinstance(nxt, RunSegment) and nxt.info["bracket"] == 0
    assert nxt.stop == 10 / 9 and "plan" not in nxt.info
    rungs = s.status_extras()["brackets"][0]["rungs"]
    assert [r["r"] for r in rungs] == [10 / 9, 10 / 3, 10]
    # A new experiment with the same R trains whole epochs and records its plan.
    (first,) = hb(max_t=10).ask(1)
    assert first.stop == 1 and first.info["plan"] == [[9, 1], [3, 3], [1, 10]]


def test_info_round_trips_through_the_stored_mapping() -> None:
    from schedulers.hyperband import HyperBandInfo

    info = HyperBandInfo(3, 1, 2, 1, plan=((5, 3), (1, 9)), promoted=True)
    stored = json.loads(json.dumps(info.to_info()))
    assert HyperBandInfo.parse(stored) == info
    assert HyperBandInfo.parse({"s": 1}) is None
    legacy = {"bracket": 1, "s": 0, "iteration": 1, "rung": 0, "retry": True, "extra": 1}
    assert HyperBandInfo.parse(legacy) == HyperBandInfo(1, 0, 1, 0, retry=True)


@pytest.mark.parametrize("max_resource", [40, 77, 100, 151])
def test_less_than_one_full_training_is_left_unspent(max_resource: int) -> None:
    s = hb(budget=Budget(max_resource=max_resource))
    result = simulate(s, objective, max_concurrency=3)
    assert max_resource - 9 < result.resource_used <= max_resource


def test_a_trainable_is_asked_for_whole_epochs() -> None:
    s = hb(max_t=100, budget=Budget(max_trials=60))
    result = simulate(s, objective, max_concurrency=4)
    stops = {e.stop for e in result.events if isinstance(e, SegmentStarted)}
    assert stops <= {1, 3, 11, 33, 100} and all(float(x).is_integer() for x in stops)


@pytest.mark.parametrize("max_resource", [130, 500])
def test_the_schedule_rungflow_plan_prints_is_what_runs(max_resource: int) -> None:
    from schedulers._rungs import hyperband_schedule

    s = hb(budget=Budget(max_resource=max_resource))
    result = simulate(s, objective, max_concurrency=4)
    created = [e for e in result.events if isinstance(e, TrialCreated) and "plan" in e.info]
    ran = [(e.info["iteration"], e.info["s"], e.info["plan"]) for e in created]
    planned = hyperband_schedule(9, 3, max_resource=max_resource)
    assert ran == [(it, b.s, [list(r) for r in b.rungs]) for it, b in planned]
    assert result.resource_used == sum(b.resource for _, b in planned)
