"""Imported observations (warm start) and retried trials in every scheduler's fold."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from schedulers import (
    Budget,
    Done,
    Pause,
    RunSegment,
    SegmentFailed,
    SegmentFinished,
    SegmentStarted,
    Stop,
    action_events,
)
from schedulers.asha import ASHAScheduler
from schedulers.base import Scheduler
from schedulers.dyhpo import DyHPOScheduler
from schedulers.events import Event, ObservationImported, TrialRetried
from schedulers.hyperband import HyperBandScheduler
from schedulers.simulate import simulate
from tests.schedulers.conftest import SPACE, curve, make, objective

COMMON: dict[str, Any] = {"space": SPACE, "metric": "loss", "mode": "min"}


def prior(i: int, loss_at: dict[float, float], **config: Any) -> ObservationImported:
    cfg = {"lr": 0.01, "width": 32, "act": "relu", **config}
    reports = tuple({"resource": r, "loss": v} for r, v in sorted(loss_at.items()))
    return ObservationImported(f"i{i:04d}", "optuna:sqlite:///old.db:s", cfg, reports)


def priors_from_curve(n: int, resources: list[float], seed: int = 0) -> list[ObservationImported]:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        config = SPACE.sample(rng)
        reports = tuple({"resource": r, "loss": curve(config, r)} for r in resources)
        out.append(ObservationImported(f"i{i:04d}", "experiment:old", config, reports))
    return out


def quick(name: str, seed: int = 0) -> Scheduler:
    """The contract case, with a smaller DyHPO budget (its GP dominates test time)."""
    if name == "dyhpo":
        return make(name, seed=seed, budget=Budget(max_resource=14))
    return make(name, seed=seed)


def test_imported_observations_are_not_trials_and_cost_no_budget(scheduler_name: str) -> None:
    s = quick(scheduler_name)
    before = (s.ask(3), s.new_trial_id(), s.can_create_trial(), s.resource_used)
    fresh = quick(scheduler_name)
    for event in priors_from_curve(5, [1.0, 3.0, 9.0]):
        fresh.tell(event)
    assert fresh.trials == {}
    assert len(fresh.imported) == 5
    assert fresh.resource_used == 0.0
    assert fresh.new_trial_id() == before[1] == "t0000"
    assert fresh.can_create_trial() == before[2]
    assert fresh.best_trial() is None
    # Priors may change *which* config is tried, never how much may be spent.
    result = simulate(fresh, objective, max_concurrency=2)
    assert result.done is not None
    budget = fresh.budget
    if budget.max_trials is not None:
        assert len(fresh.trials) <= budget.max_trials
    if budget.max_resource is not None:
        assert fresh.resource_used <= budget.max_resource + 1e-9
    assert all(not tid.startswith("i") for tid in fresh.trials)


def test_replay_with_priors_gives_same_decisions(scheduler_name: str) -> None:
    priors = priors_from_curve(6, [1.0, 3.0, 9.0], seed=4)
    s = quick(scheduler_name, seed=5)
    for event in priors:
        s.tell(event)
    result = simulate(s, objective, max_concurrency=3)
    for point in result.decision_points[:: max(1, len(result.decision_points) // 5)]:
        replayed = quick(scheduler_name, seed=5)
        log: list[Event] = [*priors, *result.events[:point]]
        for told in log:
            replayed.tell(told)
        expected = action_events(replayed.ask(1)[0])
        assert expected == result.events[point : point + len(expected)]


def test_tpe_searcher_fits_on_imported_observations() -> None:
    asha = ASHAScheduler(
        **COMMON, max_t=9, grace_period=1, reduction_factor=3, searcher="tpe",
        searcher_args={"min_points": 4, "random_fraction": 0.0}, budget=Budget(max_trials=4),
    )
    # Points at 2.0 match no rung: they are not observations of this scheduler.
    for event in priors_from_curve(6, [1.0, 2.0, 9.0]):
        asha.tell(event)
    searcher: Any = asha.searcher
    assert sorted(searcher._obs) == [1.0, 9.0]
    assert len(searcher._obs[9.0]) == 6
    assert searcher.model_resource() == 9.0  # the model is used from the first trial on


def test_asha_priors_count_in_the_quota_but_are_never_promoted() -> None:
    def run(prior_loss: float) -> list[Any]:
        asha = ASHAScheduler(**COMMON, max_t=9, grace_period=1, reduction_factor=3,
                             budget=Budget(max_trials=1))
        asha.tell(prior(0, {1.0: prior_loss}))
        asha.tell(prior(1, {1.0: prior_loss}))
        for event in action_events(asha.ask(1)[0]):  # t0000 0 -> 1
            asha.tell(event)
        asha.tell(SegmentFinished("t0000", 0, 1, ({"resource": 1, "loss": 0.5},),
                                  {"resource": 1, "loss": 0.5}))
        for event in action_events(asha.ask(1)[0]):  # paused at rung 0
            asha.tell(event)
        return asha.ask(1)

    # 3 results at rung 0, quota floor(3 / 3) = 1: bad priors let t0000 through ...
    promoted = run(prior_loss=0.9)[0]
    assert isinstance(promoted, RunSegment) and promoted.trial_id == "t0000"
    assert promoted.info.get("promoted")
    # ... good priors take the quota; they never run themselves.
    assert isinstance(run(prior_loss=0.1)[0], Done)


def test_asha_stopping_cutoff_uses_priors() -> None:
    asha = ASHAScheduler(**COMMON, max_t=9, grace_period=1, reduction_factor=3,
                         variant="stopping", budget=Budget(max_trials=1))
    for i in range(3):
        asha.tell(prior(i, {1.0: 0.1}))
    for event in action_events(asha.ask(1)[0]):
        asha.tell(event)
    asha.tell(SegmentFinished("t0000", 0, 1, ({"resource": 1, "loss": 0.5},),
                              {"resource": 1, "loss": 0.5}))
    action = asha.ask(1)[0]
    assert isinstance(action, Stop) and "cutoff" in action.reason


def _hb_first_rung(priors: list[ObservationImported]) -> tuple[list[str], list[str]]:
    """(trials promoted from bracket 0's rung 0, its best 3 trials at r=1)."""
    hb = HyperBandScheduler(**COMMON, max_t=9, reduction_factor=3, budget=Budget(max_trials=9))
    for event in priors:
        hb.tell(event)
    result = simulate(hb, objective, max_concurrency=9)
    assert result.done is not None
    at_1 = sorted(
        (e.metrics["loss"], e.trial_id)
        for e in result.events
        if isinstance(e, SegmentFinished) and e.stop == 1
    )
    promoted = [e.trial_id for e in result.events
                if isinstance(e, SegmentStarted) and e.start == 1 and e.stop == 3]
    return sorted(promoted), sorted(tid for _, tid in at_1[:3])


def test_hyperband_priors_raise_the_bar_and_bad_ones_change_nothing() -> None:
    promoted, best = _hb_first_rung([])
    assert promoted == best and len(best) == 3  # bracket s=2: 9 trials at r=1, best 3 go on
    promoted, best = _hb_first_rung([prior(i, {1.0: 99.0}) for i in range(9)])
    assert promoted == best and len(best) == 3
    promoted, _ = _hb_first_rung([prior(i, {1.0: -1.0}) for i in range(9)])
    assert promoted == []  # every trial ranks below 9 better priors


def test_dyhpo_uses_priors_as_gp_training_data_and_skips_warm_up() -> None:
    s = DyHPOScheduler(**COMMON, max_t=9, grace_period=1, reduction_factor=3,
                       num_init_random=4, num_candidates=16, budget=Budget(max_resource=20))
    for event in priors_from_curve(3, [1.0, 2.0, 3.0, 9.0]):
        s.tell(event)
    _, y, best_at = s.training_data()
    assert len(y) == 9  # 3 priors x rungs 1, 3, 9 (2.0 is no rung level)
    assert sorted(best_at) == [1.0, 3.0, 9.0]
    action = s.ask(1)[0]
    assert isinstance(action, RunSegment) and action.info["decision"] == "dyhpo"


# ---------------------------------------------------------------------- retry
def _fail_once(target: str) -> Any:
    seen: set[str] = set()

    def fail(action: RunSegment) -> bool:
        if action.trial_id == target and target not in seen:
            seen.add(target)
            return True
        return False

    return fail


def _retry_events(events: list[Event], trial_id: str, scheduler: Scheduler) -> None:
    """Tell a retry of ``trial_id``'s failed segment and its (successful) result."""
    started = [e for e in events if isinstance(e, SegmentStarted) and e.trial_id == trial_id][-1]
    reports, _ = objective(started.config, started.start, started.stop, None)
    for event in (
        TrialRetried(trial_id, started.start, started.stop),
        SegmentStarted(trial_id, started.start, started.stop, started.config,
                       started.restore_from, {**started.info, "retried": True}),
        SegmentFinished(trial_id, started.start, started.stop, tuple(reports), reports[-1]),
    ):
        scheduler.tell(event)


def test_retry_after_finish_reopens_and_every_scheduler_accepts_the_result(
    scheduler_name: str,
) -> None:
    s = quick(scheduler_name, seed=2)
    result = simulate(s, objective, max_concurrency=2, fail=_fail_once("t0001"))
    assert result.done is not None and s.finished
    assert s.trials["t0001"].status == "failed"
    _retry_events(result.events, "t0001", s)
    assert not s.finished  # reopened
    assert s.trials["t0001"].status == "paused"
    assert s.trials["t0001"].results  # the result is the scheduler's
    more = simulate(s, objective, max_concurrency=2)  # carries on to Done again
    assert more.done is not None
    assert s.trials["t0001"].status in ("paused", "completed", "pruned")


def test_retry_of_a_stopped_or_unknown_trial_is_a_no_op() -> None:
    s = make("asha", seed=2)
    result = simulate(s, objective, max_concurrency=2)
    stopped = next(t for t in s.trials.values() if t.status in ("completed", "pruned"))
    s.tell(TrialRetried(stopped.trial_id, 0, 1))
    s.tell(TrialRetried("t9999", 0, 1))
    assert stopped.status in ("completed", "pruned") and s.finished
    assert isinstance(s.ask(1)[0], Done)
    assert result.done is not None


def test_asha_records_a_retried_result_at_its_rung() -> None:
    asha = ASHAScheduler(**COMMON, max_t=9, grace_period=1, reduction_factor=3,
                         budget=Budget(max_trials=6))
    result = simulate(asha, objective, max_concurrency=1, fail=_fail_once("t0002"))
    rung0 = asha._rungs[0][0]
    assert all(tid != "t0002" for _, tid in rung0.recorded)
    _retry_events(result.events, "t0002", asha)
    assert any(tid == "t0002" for _, tid in rung0.recorded)
    action = asha.ask(1)[0]
    assert isinstance(action, Pause) and action.trial_id == "t0002"


def test_hyperband_retried_into_a_decided_rung_is_stopped() -> None:
    hb = HyperBandScheduler(**COMMON, max_t=9, reduction_factor=3, budget=Budget(max_trials=9))
    result = simulate(hb, objective, max_concurrency=3, fail=_fail_once("t0004"))
    assert isinstance(result.events[-1], type(action_events(Done("x"))[0]))
    assert any(isinstance(e, SegmentFailed) and e.trial_id == "t0004" for e in result.events)
    _retry_events(result.events, "t0004", hb)
    action = hb.ask(1)[0]
    assert isinstance(action, Stop) and action.trial_id == "t0004"
    assert "decided" in action.reason


@pytest.mark.parametrize("workers", [1, 3])
def test_hyperband_retried_into_an_open_rung_is_ranked(workers: int) -> None:
    hb = HyperBandScheduler(**COMMON, max_t=9, reduction_factor=3, budget=Budget(max_trials=9))
    failed: list[Event] = []
    # Stop right after the failure, while bracket 0's first rung is still open.
    fail = _fail_once("t0000")
    while True:
        action = hb.ask(1)[0]
        assert isinstance(action, RunSegment)
        for event in action_events(action):
            hb.tell(event)
            failed.append(event)
        if fail(action):
            hb.tell(SegmentFailed(action.trial_id, action.start, action.stop, "boom"))
            break
    _retry_events(failed, "t0000", hb)
    assert hb.trials["t0000"].status == "paused"
    more = simulate(hb, objective, max_concurrency=workers)
    assert more.done is not None
    rung0 = hb.status_extras()  # closed brackets are not listed; the log tells
    assert rung0["closed_brackets"] >= 1
    # t0000 competed in its rung: it was either promoted or culled at rung 0.
    fate = [e for e in more.events if getattr(e, "trial_id", None) == "t0000"]
    assert fate, "the retried trial must get a decision"
