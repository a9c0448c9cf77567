"""ASHA: rungs, the promotion and stopping variants on hand-built results, replay."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
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
)
from schedulers._rungs import asha_rungs, percentile
from schedulers.asha import ASHAScheduler
from schedulers.simulate import simulate
from tests.schedulers.conftest import SPACE, objective
from tests.schedulers.replay_util import apply, check_ask_n, check_replay, finish


def asha(**kwargs: Any) -> ASHAScheduler:
    args: dict[str, Any] = {
        "max_t": 9, "grace_period": 1, "reduction_factor": 3, "budget": Budget(max_trials=20),
    }
    args.update(kwargs)
    return ASHAScheduler(space=SPACE, metric="loss", mode="min", **args)


def start_new(s: ASHAScheduler) -> str:
    (action,) = s.ask(1)
    assert isinstance(action, RunSegment) and action.new_trial, action
    apply(s, action)
    return action.trial_id


# ------------------------------------------------------------------------ rungs
def test_rungs_end_at_max_t() -> None:
    assert asha_rungs(1, 9, 3) == [1, 3, 9]
    assert asha_rungs(1, 10, 3) == [1, 3, 9, 10]
    assert asha_rungs(1, 9, 3, bracket=2) == [9]
    assert asha_rungs(0.1, 2.7, 3) == pytest.approx([0.1, 0.3, 0.9, 2.7])
    assert asha_rungs(0.1, 2.7, 3)[-1] == 2.7  # 0.1 * 27 != 2.7 in floats; no extra rung


@given(st.lists(st.floats(-1e6, 1e6), min_size=1, max_size=60), st.sampled_from([2, 3, 4, 2.5]))
def test_cutoff_matches_numpy(values: list[float], eta: float) -> None:
    q = (1 - 1 / eta) * 100
    ours = percentile(sorted(values), q)
    assert ours == pytest.approx(float(np.nanpercentile(values, q)), rel=1e-12, abs=1e-9)


@pytest.mark.parametrize(
    ("kwargs", "argument", "text"),
    [
        ({"grace_period": 10}, "grace_period", "grace_period is 10, but must be <= max_t (9)"),
        ({"reduction_factor": 1.5}, "reduction_factor", "is 1.5, but must be >= 2"),
        ({"brackets": 4}, "brackets", "brackets is 4, but must be an integer in 1..3"),
        ({"variant": "median"}, "variant", "variant is 'median'"),
        ({"grace_period": -1}, "grace_period", "grace_period is -1, but must be > 0"),
    ],
)
def test_bad_arguments_name_the_argument(kwargs: dict[str, Any], argument: str, text: str) -> None:
    with pytest.raises(SchedulerArgumentError) as info:
        asha(**kwargs)
    assert info.value.argument == argument
    assert text in str(info.value)


# ------------------------------------------------------------ stopping variant
def test_stopping_uses_rays_cutoff_on_results_so_far() -> None:
    s = asha(variant="stopping")
    ids = [start_new(s) for _ in range(4)]
    expected = []
    seen: list[float] = []
    for tid, loss in zip(ids, [0.5, 0.4, 0.9, 0.45], strict=True):
        finish(s, tid, 0, 1, loss)
        (action,) = s.ask(1)
        # Ray: reward = -loss; stop iff reward < nanpercentile(previous rewards).
        cutoff = float(np.nanpercentile(seen, 200 / 3)) if seen else None
        stop = cutoff is not None and -loss < cutoff
        expected.append(stop)
        assert isinstance(action, Stop if stop else RunSegment), (tid, action)
        if isinstance(action, RunSegment):
            assert (action.start, action.stop, action.restore_from.trial_id) == (1, 3, tid)
        apply(s, action)
        seen.append(-loss)
    assert expected == [False, False, True, False]


def test_stopping_stops_at_max_t() -> None:
    s = asha(variant="stopping")
    tid = start_new(s)
    finish(s, tid, 0, 1, 0.5)
    apply(s, s.ask(1)[0])
    finish(s, tid, 1, 3, 0.4)
    apply(s, s.ask(1)[0])
    finish(s, tid, 3, 9, 0.3)
    (action,) = s.ask(1)
    assert isinstance(action, Stop) and action.reason == "max_t reached"


# ----------------------------------------------------------- promotion variant
def test_promotion_pauses_then_promotes_top_third() -> None:
    s = asha()
    ids = [start_new(s) for _ in range(3)]
    for tid, loss in zip(ids, [0.5, 0.4, 0.9], strict=True):
        finish(s, tid, 0, 1, loss)
        (pause,) = s.ask(1)
        assert isinstance(pause, Pause) and pause.trial_id == tid
        apply(s, pause)
    (promote,) = s.ask(1)
    assert isinstance(promote, RunSegment) and promote.trial_id == ids[1]
    assert (promote.start, promote.stop, promote.info["promoted"]) == (1, 3, True)
    assert promote.restore_from is not None and promote.restore_from.trial_id == ids[1]
    apply(s, promote)
    # floor(3 / 3) = 1 already promoted: the free worker starts a new trial.
    (nxt,) = s.ask(1)
    assert nxt.new_trial and nxt.stop == 1


def test_promotion_prefers_the_highest_rung() -> None:
    s = asha(reduction_factor=2, budget=Budget(max_trials=50))
    ids = [start_new(s) for _ in range(4)]
    for tid, loss in zip(ids, [0.1, 0.2, 0.3, 0.4], strict=True):
        finish(s, tid, 0, 1, loss)
        apply(s, s.ask(1)[0])  # pause
    for tid in ids[:2]:  # both promotable at rung 0 (top floor(4/2) = 2)
        (promo,) = s.ask(1)
        assert promo.trial_id == tid
        apply(s, promo)
    finish(s, ids[0], 1, 2, 0.05)
    finish(s, ids[1], 1, 2, 0.15)
    for _ in range(2):
        apply(s, s.ask(1)[0])  # pauses at rung 1
    (promo,) = s.ask(1)
    assert (promo.trial_id, promo.start, promo.stop) == (ids[0], 2, 4)


def test_brackets_round_robin() -> None:
    s = asha(brackets=2, bracket_weights="round_robin")
    actions = s.ask(4)
    assert [(a.info["bracket"], a.stop) for a in actions] == [(0, 1), (1, 3), (0, 1), (1, 3)]


def test_failure_is_not_waited_for_and_not_promoted() -> None:
    s = asha()
    ids = [start_new(s) for _ in range(3)]
    finish(s, ids[0], 0, 1, 0.9)
    apply(s, s.ask(1)[0])
    s.tell(SegmentFailed(ids[1], 0, 1, "boom"))
    finish(s, ids[2], 0, 1, 0.1)
    apply(s, s.ask(1)[0])
    assert s.ask(1)[0].new_trial  # 2 results: floor(2 / 3) = 0, nothing promotable
    for tid in [start_new(s), start_new(s)]:
        finish(s, tid, 0, 1, 0.5)
        apply(s, s.ask(1)[0])
    assert s.ask(1)[0].trial_id == ids[2]


# ------------------------------------------------------------------ whole runs
@pytest.mark.parametrize("variant", ["promotion", "stopping"])
@pytest.mark.parametrize("searcher", ["random", "tpe"])
def test_replay_of_random_prefixes(variant: str, searcher: str) -> None:
    result = check_replay(lambda: asha(seed=9, variant=variant, searcher=searcher), seed=3)
    assert isinstance(result.done, Done)


@pytest.mark.parametrize("variant", ["promotion", "stopping"])
def test_ask_n_is_successive_ask_one(variant: str) -> None:
    make = lambda: asha(seed=2, variant=variant, brackets=2)  # noqa: E731
    result = simulate(make(), objective, max_concurrency=4, seed=5)
    for point in result.decision_points[::3]:
        check_ask_n(make, result.events[:point])


@pytest.mark.parametrize("variant", ["promotion", "stopping"])
def test_resource_budget_is_spent_not_exceeded(variant: str) -> None:
    s = asha(variant=variant, budget=Budget(max_resource=100))
    result = simulate(s, objective, max_concurrency=4)
    assert 100 - 9 < result.resource_used <= 100
    tops = [e for e in result.events if isinstance(e, SegmentStarted) and e.stop == 9]
    assert tops, "some trial reached max_t"


def test_status_extras_is_json() -> None:
    s = asha(variant="stopping")
    simulate(s, objective, max_concurrency=2)
    extras = json.loads(json.dumps(s.status_extras()))
    rung0 = extras["brackets"][0]["rungs"][0]
    assert rung0["recorded"] == 20 and rung0["cutoff"] is not None


# ----------------------------------------------------------- issue 16: rules
def record_at(s: ASHAScheduler, tid: str, rung: int, stop: float, loss: float) -> None:
    """Create ``tid`` and record its result at rung ``rung`` (resource ``stop``)."""
    config = {"lr": 0.01, "width": 8, "act": "relu"}
    apply(s, RunSegment(tid, config, 0, stop, new_trial=True, info={"bracket": 0, "rung": rung}))
    finish(s, tid, 0, stop, loss)


@pytest.mark.parametrize("variant", ["promotion", "stopping"])
def test_promoted_fraction_follows_the_rung_spacing(variant: str) -> None:
    # Rungs [1, 3, 9, 10]: a third goes on from 1 and from 3, but 9/10 from 9 to 10
    # (Syne Tune's r_k / r_{k+1}); floor(n / eta) would cull 2/3 for one more epoch.
    s = asha(max_t=10, variant=variant, budget=Budget(max_trials=100))
    for i in range(10):
        record_at(s, f"a{i}", 0, 1, float(i))
        record_at(s, f"b{i}", 2, 9, float(i))
    rungs = s.status_extras()["brackets"][0]["rungs"]
    assert [r["resource"] for r in rungs] == [1, 3, 9, 10]
    assert (rungs[0]["quota"], rungs[2]["quota"]) == (3, 9)
    if variant == "promotion":
        return
    # Stopping: Ray's percentile (1 - 1/eta) between geometric rungs, 10% before 10.
    assert rungs[0]["cutoff"] == pytest.approx(np.percentile([-i for i in range(10)], 100 * 2 / 3))
    assert rungs[2]["cutoff"] == pytest.approx(np.percentile([-i for i in range(10)], 10))


def test_promotion_at_a_short_last_step_takes_nine_of_ten() -> None:
    s = asha(max_t=10, budget=Budget(max_trials=100))
    for i in range(10):
        record_at(s, f"b{i}", 2, 9, float(i))
        apply(s, s.ask(1)[0])  # paused at rung 2
    promoted = []
    for _ in range(10):
        (action,) = s.ask(1)
        if not (isinstance(action, RunSegment) and action.info.get("promoted")):
            break
        promoted.append(action.trial_id)
        apply(s, action)
    assert promoted == [f"b{i}" for i in range(9)]


def test_ties_at_a_rung_go_to_the_earlier_trial_id() -> None:
    s = asha(budget=Budget(max_trials=100))
    for tid in ("t9", "t1", "t5"):  # equal scores, told in this order
        record_at(s, tid, 0, 1, 0.5)
        apply(s, s.ask(1)[0])
    (promo,) = s.ask(1)
    assert promo.info.get("promoted") and promo.trial_id == "t1"
    # Stopping: a result equal to the cutoff continues (Ray's `<` test).
    st_ = asha(variant="stopping", budget=Budget(max_trials=100))
    for i in range(3):
        record_at(st_, f"s{i}", 0, 1, 0.5)
        (decision,) = st_.ask(1)
        assert isinstance(decision, RunSegment) and decision.info["continued"], decision
        apply(st_, decision)


@pytest.mark.parametrize("rule", ["budget", "exponential"])
def test_bracket_draws_follow_the_weights(rule: str) -> None:
    from schedulers.asha import bracket_probabilities

    weights = bracket_probabilities(5, 3, rule)
    if rule == "budget":  # Optuna: HyperBand's n per bracket, 81 : 34 : 15 : 8 : 5
        assert weights == pytest.approx([w / 143 for w in (81, 34, 15, 8, 5)])
    else:  # Ray: e**(rungs - max rungs)
        assert weights == pytest.approx(np.exp(-np.arange(5)) / np.exp(-np.arange(5)).sum())
    s = asha(max_t=81, brackets=5, bracket_weights=rule, budget=Budget(max_trials=5000))
    actions = s.ask(3000)
    seen = np.bincount([a.info["bracket"] for a in actions], minlength=5) / len(actions)
    assert seen == pytest.approx(weights, abs=0.03)


def test_a_cheaper_bracket_is_tried_before_giving_up() -> None:
    s = asha(brackets=3, bracket_weights="round_robin", budget=Budget(max_resource=10))
    actions = s.ask(10)
    # Round robin wants brackets 0, 1, 2, 0, ... (first rungs 1, 3, 9): bracket 2
    # does not fit the 6 units left, so bracket 1 does; then 0 while 1 unit is left.
    assert [(a.info["bracket"], a.stop) for a in actions] == [(0, 1), (1, 3), (1, 3), (0, 1),
                                                              (0, 1), (0, 1)]
    assert sum(a.stop for a in actions) == 10
