"""PopulationBasedTraining: arguments, exploit rules, barrier, generations, retention."""

from __future__ import annotations

import doctest
import math
from typing import Any

import pytest

import schedulers.pbt
import schedulers.pbt_replay
from schedulers import (
    Budget,
    CheckpointRef,
    Done,
    RunSegment,
    SchedulerArgumentError,
    SearchSpace,
    SegmentFailed,
    SegmentFinished,
    SegmentStarted,
    Stop,
    TrialPerturbed,
    TrialStopped,
    Wait,
    action_events,
)
from schedulers.pbt import PopulationBasedTraining, pbt_lineage
from schedulers.pbt_explore import ExploreError
from schedulers.simulate import simulate
from tests.schedulers.conftest import SPACE, objective

X_SPACE = SearchSpace.parse({"x": {"type": "float", "low": 0.0, "high": 1.0}})


def pbt(**kwargs: Any) -> PopulationBasedTraining:
    args: dict[str, Any] = {
        "space": X_SPACE,
        "metric": "loss",
        "mode": "min",
        "perturbation_interval": 2,
        "population_size": 4,
        "max_generations": 5,
    }
    args.update(kwargs)
    return PopulationBasedTraining(**args)


def apply(s: PopulationBasedTraining, actions: list[Any]) -> None:
    for action in actions:
        for event in action_events(action):
            s.tell(event)


def finish(
    s: PopulationBasedTraining, tid: str, loss: float | None, *, checkpoint: bool = True
) -> SegmentFinished:
    start, stop = s.trials[tid].running or (0.0, 0.0)
    ref = CheckpointRef(f"e/{tid}/{start:g}-{stop:g}", 1, "x", tid, stop) if checkpoint else None
    metrics = {} if loss is None else {"loss": loss}
    event = SegmentFinished(tid, start, stop, ({"resource": stop, **metrics},), metrics, ref)
    s.tell(event)
    return event


def start_population(s: PopulationBasedTraining) -> list[str]:
    actions = s.ask(s.population_size)
    assert all(isinstance(a, RunSegment) and a.new_trial for a in actions)
    apply(s, actions)
    return [a.trial_id for a in actions]


# ------------------------------------------------------------------ arguments
@pytest.mark.parametrize(
    ("kwargs", "argument", "message"),
    [
        ({"quantile_fraction": 0.7}, "quantile_fraction",
         "quantile_fraction is 0.7, but must be in [0, 0.5]"),
        ({"resample_probability": 1.5}, "resample_probability", "in [0, 1]"),
        ({"perturbation_interval": 0}, "perturbation_interval", "is 0, but must be > 0"),
        ({"population_size": 1}, "population_size", "population_size is 1, but must be"),
        ({"max_generations": 0}, "max_generations", "max_generations is 0"),
        ({"exploit": "greedy"}, "exploit", "exploit is 'greedy'"),
        ({"boundary": "wrap"}, "boundary", "boundary is 'wrap'"),
        ({"perturbation_factors": ()}, "perturbation_factors", "non-empty"),
        ({"perturbation_factors": (1.2, -1)}, "perturbation_factors[1]", "> 0"),
        ({"burn_in_period": -1}, "burn_in_period", ">= 0"),
        ({"synch": "yes"}, "synch", "true or false"),
        ({"max_generations": None}, "max_generations", "at least one is needed"),
        ({"budget": Budget(max_trials=3)}, "population_size", "budget.max_trials is 3"),
        ({"hyperparam_mutations": {"y": [1, 2]}}, "hyperparam_mutations.y", "no parameter"),
        ({"hyperparam_mutations": {"x": [0.5, 2.0]}}, "hyperparam_mutations.x", "outside"),
        ({"hyperparam_mutations": {"x": {"type": "float", "low": 0, "high": 3}}},
         "hyperparam_mutations.x", "spans [0.0, 3.0]"),
        ({"initial_configs": [{"x": 4.0}]}, "initial_configs", "does not fit"),
        ({"custom_explore_fn": 3}, "custom_explore_fn", "must be callable"),
    ],
)
def test_argument_errors_name_value_and_rule(
    kwargs: dict[str, Any], argument: str, message: str
) -> None:
    with pytest.raises(SchedulerArgumentError) as info:
        pbt(**kwargs)
    assert info.value.argument == argument
    assert message in str(info.value)


def test_short_form_mutations_and_lists_are_accepted() -> None:
    s = pbt(
        space=SPACE,
        hyperparam_mutations={
            "lr": {"type": "float", "low": 1e-3, "high": 1e-1, "log": True},
            "width": [8, 16, 32],
            "act": {"type": "categorical", "choices": ["relu", "tanh"]},
        },
    )
    assert s.mutations["width"] == [8, 16, 32]


@pytest.mark.parametrize(
    ("n", "q", "k"), [(2, 0.25, 1), (4, 0.25, 1), (10, 0.25, 3), (10, 0.5, 5), (3, 0.5, 1),
                      (7, 0.0, 0), (1, 0.5, 0), (1000, 0.25, 250)]
)
def test_quantile_size_is_ceil_but_at_most_half(n: int, q: float, k: int) -> None:
    assert pbt(quantile_fraction=q).quantile_size(n) == k


def test_boundaries_start_after_burn_in_and_stop_at_max_t() -> None:
    s = pbt(perturbation_interval=2, burn_in_period=5, max_t=10)
    assert [s.next_boundary(r) for r in (0, 5, 7, 9)] == [5, 7, 9, 10]


# -------------------------------------------------------------------- exploit
def test_bottom_member_exploits_a_top_member_at_its_resource() -> None:
    s = pbt()
    ids = start_population(s)
    for tid, loss in zip(ids, [0.1, 0.2, 0.3, 0.9], strict=True):
        finish(s, tid, loss)
    actions = s.ask(4)
    by_id = {a.trial_id: a for a in actions if isinstance(a, RunSegment)}
    worst = by_id[ids[3]]
    assert worst.perturbation is not None and worst.perturbation.donor_id == ids[0]
    assert worst.restore_from == s.trials[ids[0]].checkpoint
    assert worst.start == 2 and worst.stop == 4
    assert worst.perturbation.old_config == s.trials[ids[3]].config
    for tid in ids[:3]:
        assert by_id[tid].perturbation is None
        assert by_id[tid].restore_from == s.trials[tid].checkpoint


def test_async_member_ahead_is_copied_at_its_own_resource() -> None:
    s = pbt(population_size=2)
    a, b = start_population(s)
    finish(s, a, 0.1)
    apply(s, s.ask(1))  # a continues to 4 (b has no score yet)
    finish(s, a, 0.05)
    apply(s, s.ask(1))  # a continues to 6
    finish(s, b, 0.5)
    [action] = s.ask(1)
    assert isinstance(action, RunSegment) and action.perturbation is not None
    assert action.perturbation.donor_id == a
    assert (action.start, action.stop) == (4, 6)
    assert action.restore_from is not None and action.restore_from.resource == 4


def test_donor_without_checkpoint_or_failed_is_never_chosen() -> None:
    s = pbt()
    ids = start_population(s)
    finish(s, ids[0], 0.1, checkpoint=False)
    s.tell(SegmentFailed(ids[1], 0, 2, "boom"))
    finish(s, ids[2], 0.5)
    finish(s, ids[3], 0.9)
    # Ranked: ids[0], ids[2], ids[3]; top set {ids[0]} has no checkpoint.
    for action in s.ask(4):
        assert not isinstance(action, RunSegment) or action.perturbation is None


def test_ties_are_broken_by_the_seed_deterministically() -> None:
    donors = set()
    for seed in range(12):
        s = pbt(seed=seed, population_size=2)
        a, b = start_population(s)
        finish(s, a, 0.5)
        finish(s, b, 0.5)
        [first, second] = s.ask(2)
        assert isinstance(first, RunSegment) and isinstance(second, RunSegment)
        loser = first if first.perturbation is not None else second
        assert loser.perturbation is not None
        donors.add(loser.perturbation.donor_id)
        assert s.ask(2) == [first, second]
    assert donors == {"t0000", "t0001"}  # the seed decides, not the trial id


def test_binary_tournament_copies_only_a_strictly_better_member() -> None:
    s = pbt(exploit="binary_tournament", population_size=3)
    ids = start_population(s)
    for tid, loss in zip(ids, [0.1, 0.5, 0.9], strict=True):
        finish(s, tid, loss)
    actions = {a.trial_id: a for a in s.ask(3) if isinstance(a, RunSegment)}
    assert actions[ids[0]].perturbation is None  # nobody is better than the best
    worst = actions[ids[2]]
    assert worst.perturbation is not None and worst.perturbation.donor_id in ids[:2]


def test_quantile_zero_never_exploits() -> None:
    result = simulate(pbt(quantile_fraction=0.0), objective_x, max_concurrency=2)
    assert not any(isinstance(e, TrialPerturbed) for e in result.events)


def objective_x(config: Any, start: float, stop: float, state: Any) -> tuple[list[Any], Any]:
    w = (state or 0.0) + (stop - start) * (1.0 - config["x"])
    return [{"resource": stop, "loss": 1.0 / (1.0 + w)}], w


def test_explored_configs_stay_in_space_and_info_records_the_decision() -> None:
    result = simulate(pbt(space=SPACE, population_size=6, max_generations=6), objective,
                      max_concurrency=3)
    perturbed = [e for e in result.events if isinstance(e, TrialPerturbed)]
    assert perturbed
    for e in perturbed:
        assert SPACE.contains(e.new_config)
        info = e.info["pbt"]
        assert info["decision"] == "exploit" and info["explore"]["changes"]
        assert info["donor_score"] <= info["score"]


# ---------------------------------------------------------------- generations
@pytest.mark.parametrize("synch", [False, True])
def test_each_member_trains_exactly_max_generations_segments(synch: bool) -> None:
    s = pbt(space=SPACE, population_size=5, max_generations=4, synch=synch)
    result = simulate(s, objective, max_concurrency=3)
    finished: dict[str, int] = {}
    for e in result.events:
        if isinstance(e, SegmentFinished):
            finished[e.trial_id] = finished.get(e.trial_id, 0) + 1
    assert finished == {f"t000{i}": 4 for i in range(5)}
    stops = [e for e in result.events if isinstance(e, TrialStopped)]
    assert {e.reason for e in stops} == {"max_generations reached"}


def test_max_t_stops_members() -> None:
    s = pbt(max_generations=None, max_t=7)
    result = simulate(s, objective_x, max_concurrency=2)
    starts = [e for e in result.events if isinstance(e, SegmentStarted)]
    assert max(e.stop for e in starts) == 7
    assert all(e.reason == "max_t reached" for e in result.events if isinstance(e, TrialStopped))


def test_resource_budget_ends_the_experiment() -> None:
    s = pbt(max_generations=None, budget=Budget(max_resource=30))
    result = simulate(s, objective_x, max_concurrency=2)
    assert result.resource_used <= 30
    assert isinstance(result.done, Done)


# ---------------------------------------------------------------- synchronous
def test_sync_barrier_waits_for_every_live_member() -> None:
    s = pbt(synch=True)
    ids = start_population(s)
    for tid, loss in zip(ids[:3], [0.1, 0.2, 0.9], strict=True):
        finish(s, tid, loss)
    assert s.ask(4) == [Wait()]
    finish(s, ids[3], 0.3)
    actions = s.ask(4)
    assert len(actions) == 4
    exploit = [a for a in actions if isinstance(a, RunSegment) and a.perturbation]
    assert [a.trial_id for a in exploit] == [ids[2]]


def test_sync_failed_member_leaves_the_round_instead_of_blocking_it() -> None:
    s = pbt(synch=True)
    ids = start_population(s)
    for tid, loss in zip(ids[:3], [0.1, 0.2, 0.9], strict=True):
        finish(s, tid, loss)
    s.tell(SegmentFailed(ids[3], 0, 2, "OOM"))
    actions = s.ask(4)
    assert {a.trial_id for a in actions} == set(ids[:3])
    assert s.status_extras()["population"] == 3


def test_sync_exploit_uses_the_round_checkpoint_after_the_donor_moved_on() -> None:
    s = pbt(synch=True, population_size=2)
    a, b = start_population(s)
    finish(s, a, 0.1)
    round_ckpt = s.trials[a].checkpoint
    finish(s, b, 0.9)
    # The top member continues first and finishes its next segment.
    apply(s, [x for x in s.ask(2) if x.trial_id == a])
    assert round_ckpt is not None and round_ckpt.key in s.live_checkpoints()
    finish(s, a, 0.05)
    [action] = s.ask(1)
    assert isinstance(action, RunSegment) and action.trial_id == b
    assert action.perturbation is not None and action.restore_from == round_ckpt
    assert action.start == 2


@pytest.mark.parametrize("exploit", ["truncation", "binary_tournament"])
def test_sync_with_injected_failures_finishes(exploit: str) -> None:
    def fail(action: RunSegment) -> bool:
        return action.trial_id in ("t0001", "t0004") and action.start >= 4

    s = pbt(space=SPACE, population_size=6, max_generations=5, synch=True, exploit=exploit)
    result = simulate(s, objective, max_concurrency=4, fail=fail)
    assert isinstance(result.done, Done)
    failed = {e.trial_id for e in result.events if isinstance(e, SegmentFailed)}
    assert failed == {"t0001", "t0004"}
    dead: set[str] = set()
    for e in result.events:  # a failed member is never a donor after it failed
        if isinstance(e, SegmentFailed):
            dead.add(e.trial_id)
        elif isinstance(e, TrialPerturbed):
            assert e.donor_id not in dead


def test_non_final_failure_retries_the_same_segment_then_gives_up() -> None:
    s = pbt(population_size=2)
    a, b = start_population(s)
    finish(s, b, 0.5)
    for attempt in range(3):
        s.tell(SegmentFailed(a, 0, 2, "flaky", final=False))
        actions = s.ask(2)
        if attempt < 2:
            retry = [x for x in actions if x.trial_id == a]
            assert isinstance(retry[0], RunSegment) and (retry[0].start, retry[0].stop) == (0, 2)
            apply(s, retry)
    assert Stop(a, "segment failed 3 times") in s.ask(2)


def test_require_attrs_stops_a_member_without_the_metric() -> None:
    s = pbt(population_size=2)
    a, b = start_population(s)
    finish(s, a, None)
    finish(s, b, 0.5)
    assert Stop(a, "metric 'loss' missing (require_attrs)") in s.ask(2)
    lax = pbt(population_size=2, require_attrs=False)
    a, b = start_population(lax)
    finish(lax, a, None)
    assert isinstance(lax.ask(1)[0], RunSegment)


# ------------------------------------------------------------------ retention
def test_live_checkpoints_keep_the_donor_checkpoint_of_an_exploit_in_flight() -> None:
    s = pbt(population_size=2)
    a, b = start_population(s)
    finish(s, a, 0.1)
    apply(s, s.ask(1))  # a continues 2 -> 4
    finish(s, b, 0.9)
    [exploit] = s.ask(1)
    assert isinstance(exploit, RunSegment) and exploit.restore_from is not None
    apply(s, [exploit])
    finish(s, a, 0.05)  # the donor moves on; its 0-2 checkpoint is no longer its latest
    assert s.trials[a].checkpoint != exploit.restore_from
    assert exploit.restore_from.key in s.live_checkpoints()
    finish(s, b, 0.2)
    assert exploit.restore_from.key not in s.live_checkpoints()


def test_custom_explore_fn_is_clipped_and_recorded() -> None:
    s = pbt(population_size=2, custom_explore_fn=lambda c: {**c, "x": c["x"] + 5})
    a, b = start_population(s)
    finish(s, a, 0.1)
    finish(s, b, 0.9)
    exploit = next(x for x in s.ask(2) if isinstance(x, RunSegment) and x.perturbation)
    assert exploit.config["x"] == 1.0
    assert exploit.info["pbt"]["explore"]["clipped"]["x"][1] == 1.0


def test_custom_explore_fn_with_an_invalid_value_names_the_key() -> None:
    s = pbt(space=SPACE, population_size=2, custom_explore_fn=lambda c: {**c, "act": "gelu"})
    a, b = start_population(s)
    finish(s, a, 0.1)
    finish(s, b, 0.9)
    with pytest.raises(ExploreError) as info:
        s.ask(2)
    assert info.value.key == "act"


def test_same_seed_same_lineage_other_seed_other_lineage() -> None:
    def lineage(seed: int) -> dict[str, Any]:
        s = pbt(space=SPACE, seed=seed, population_size=6, max_generations=6)
        return pbt_lineage(simulate(s, objective, max_concurrency=3, seed=1).events)

    assert lineage(4) == lineage(4)
    assert lineage(4) != lineage(5)


def test_status_extras_report_generations() -> None:
    s = pbt()
    result = simulate(s, objective_x, max_concurrency=2)
    extras = s.status_extras()
    assert extras["perturbations"] == sum(isinstance(e, TrialPerturbed) for e in result.events)
    assert extras["population"] == 0 and extras["time_attr"] == "training_iteration"


@pytest.mark.parametrize("module", [schedulers.pbt, schedulers.pbt_replay])
def test_docstring_examples_run(module: Any) -> None:
    failures, tried = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert tried and not failures


def test_population_fills_before_any_decision() -> None:
    s = pbt(population_size=3)
    a = s.ask(1)
    apply(s, a)
    finish(s, a[0].trial_id, 0.1)
    nxt = s.ask(1)[0]
    assert isinstance(nxt, RunSegment) and nxt.new_trial
    assert math.isclose(nxt.stop, 2)


def test_a_member_going_back_waits_instead_of_overwriting_a_checkpoint_being_read() -> None:
    s = pbt(population_size=4, quantile_fraction=0.5)
    m, w, c, d = start_population(s)
    finish(s, m, 0.10)
    apply(s, s.ask(1))  # m alone is ranked: it continues 2 -> 4
    finish(s, m, 0.05)
    finish(s, w, 0.90)
    exploit = next(a for a in s.ask(4) if a.trial_id == w)
    assert isinstance(exploit, RunSegment) and exploit.perturbation is not None
    assert exploit.perturbation.donor_id == m and exploit.start == 4
    apply(s, [exploit])  # w restores m's checkpoint at 4, in flight
    finish(s, c, 0.02)
    finish(s, d, 0.01)
    # m is now in the bottom half and would copy c or d at 2, re-training 2 -> 4
    # and replacing the checkpoint w is reading: it must wait.
    assert m not in {a.trial_id for a in s.ask(4)}
    finish(s, w, 0.5)
    assert m in {a.trial_id for a in s.ask(4)}
