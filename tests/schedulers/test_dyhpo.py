"""DyHPO: arguments, rung system, decisions on hand-built histories, robustness."""

from __future__ import annotations

import doctest
import json
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pytest

import schedulers.dyhpo as dyhpo_module
from schedulers import (
    Budget,
    Done,
    RunSegment,
    SchedulerArgumentError,
    SearchSpace,
    SegmentFinished,
    SegmentStarted,
    Stop,
    TrialCreated,
    TrialStopped,
    action_events,
)
from schedulers.base import TrialState
from schedulers.dyhpo import (
    DyHPODecision,
    DyHPOScheduler,
    Scores,
    SurrogateFit,
    promotion_quota,
    rung_levels_for,
)
from schedulers.gp import GPError
from schedulers.simulate import simulate
from tests.schedulers.conftest import make, objective

LR = SearchSpace.parse({"lr": {"type": "float", "low": 1e-4, "high": 1.0, "log": True}})


def scheduler(**kwargs: Any) -> DyHPOScheduler:
    args: dict[str, Any] = {
        "space": LR,
        "metric": "loss",
        "max_t": 9,
        "reduction_factor": 3,  # rungs 1, 3, 9: the hand-built histories below
        "probability_sh": 0.0,  # decisions by the surrogate only, unless a test says so
        "num_init_random": 3,
        "num_candidates": 32,
    }
    args.update(kwargs)
    return DyHPOScheduler(**args)


def dy(seed: int = 0, **overrides: Any) -> DyHPOScheduler:
    """The contract-suite DyHPO case, typed."""
    s = make("dyhpo", seed=seed, **overrides)
    assert isinstance(s, DyHPOScheduler)
    return s


def add_trial(
    s: DyHPOScheduler,
    tid: str,
    lr: float,
    curve: Mapping[float, float],
    *,
    stopped: bool = False,
) -> None:
    """Tell ``s`` that trial ``tid`` ran through the rungs in ``curve``."""
    config = {"lr": lr}
    s.tell(TrialCreated(tid, config))
    start = 0.0
    for level, loss in sorted(curve.items()):
        s.tell(SegmentStarted(tid, start, level, config))
        report = {"resource": level, "loss": loss}
        s.tell(SegmentFinished(tid, start, level, (report,), report))
        start = level
    if stopped:
        s.tell(TrialStopped(tid, "reached max_t"))


# ------------------------------------------------------------------ arguments
@pytest.mark.parametrize(
    "kwargs, argument, message",
    [
        ({"probability_sh": 1.5}, "probability_sh", "probability_sh is 1.5, but must be in [0, 1]"),
        ({"reduction_factor": 1}, "reduction_factor", "reduction_factor is 1, but must be >= 2"),
        ({"grace_period": 0}, "grace_period", "grace_period is 0, but must be > 0"),
        ({"grace_period": 10}, "grace_period", "grace_period is 10, but must be <= max_t (9)"),
        ({"max_t": -1}, "max_t", "max_t is -1, but must be > 0"),
        ({"rung_levels": [1, 1, 3]}, "rung_levels", "must be strictly increasing"),
        ({"rung_levels": [1, 30]}, "rung_levels", "must not exceed max_t"),
        ({"rung_spacing": "log"}, "rung_spacing", "must be 'geometric' or 'linear'"),
        ({"num_candidates": 0}, "num_candidates", "num_candidates is 0, but must be an integer"),
        ({"max_gp_points": 2.5}, "max_gp_points", "max_gp_points is 2.5"),
        ({"resource_attr": ""}, "resource_attr", "resource_attr is ''"),
        ({"surrogate": "cnn"}, "surrogate", "surrogate is 'cnn', but must be 'dkgp' or 'gp'"),
        ({"curve_length": -1}, "curve_length", "curve_length is -1, but must be an integer"),
        ({"rung_increment": 0}, "rung_increment", "rung_increment is 0, but must be > 0"),
    ],
)
def test_bad_arguments_name_value_and_rule(
    kwargs: dict[str, Any], argument: str, message: str
) -> None:
    with pytest.raises(SchedulerArgumentError, match=None) as info:
        scheduler(**kwargs)
    assert info.value.argument == argument
    assert message in str(info.value)


def test_rung_levels() -> None:
    assert rung_levels_for(81, 1, 3) == [1, 3, 9, 27, 81]
    assert rung_levels_for(100, 1, 3) == [1, 3, 9, 27, 81, 100]
    assert rung_levels_for(10, 2, rung_spacing="linear") == [2, 4, 6, 8, 10]
    assert rung_levels_for(1.5, 0.5, 2) == [0.5, 1.0, 1.5]
    assert scheduler(rung_levels=[2, 5]).rung_levels == [2, 5, 9]
    assert scheduler(max_t=1).rung_levels == [1]
    assert scheduler(rung_spacing="linear", grace_period=3).rung_levels == [3, 6, 9]
    assert rung_levels_for(10, 1, rung_spacing="linear", rung_increment=2) == [1, 3, 5, 7, 9, 10]


def test_defaults_geometric_rungs_and_syne_tunes_setting_one_argument_away() -> None:
    """Geometric rungs (measured cheaper, no worse: see the module docstring) and
    Syne Tune's probability_sh 0.25; rung_increment=2 gives Syne Tune's linear rungs."""
    s = DyHPOScheduler(space=LR, metric="loss", max_t=81)
    assert s.rung_levels == [1, 3, 9, 27, 81]
    assert s.probability_sh == 0.25
    assert s.surrogate == "gp" and s.cost_aware
    syne = DyHPOScheduler(space=LR, metric="loss", max_t=9, rung_increment=2)
    assert syne.rung_levels == [1, 3, 5, 7, 9] and syne.probability_sh == 0.25
    assert DyHPOScheduler(space=LR, metric="loss", max_t=9, reduction_factor=3).rung_levels == [
        1,
        3,
        9,
    ]
    assert DyHPOScheduler(
        space=LR, metric="loss", max_t=10, grace_period=2, rung_spacing="linear"
    ).rung_levels == [2, 4, 6, 8, 10]


# ------------------------------------------------------------ obvious choices
def _teachers(s: DyHPOScheduler) -> None:
    """Completed trials that show what the levels mean: improving curves end best."""
    add_trial(s, "a", 1e-4, {1: 1.00, 3: 0.99, 9: 0.98}, stopped=True)
    add_trial(s, "b", 1.0, {1: 0.98, 3: 0.97, 9: 0.97}, stopped=True)
    add_trial(s, "c", 1e-1, {1: 0.60, 3: 0.35, 9: 0.15}, stopped=True)


@pytest.mark.parametrize("seed", range(5))
def test_clearly_improving_paused_trial_is_promoted(seed: int) -> None:
    # Plain EI: per unit of resource a 6-epoch promotion (3 -> 9) rightly loses
    # to 1-epoch new trials on these geometric rungs; this test is about the curve.
    s = scheduler(seed=seed, cost_aware=False)
    _teachers(s)
    add_trial(s, "star", 0.03, {1: 0.50, 3: 0.20})  # steeper than the best finisher
    # Flat bad curves cover the rest of the space, so no region is unexplored.
    for k, lr in enumerate([3e-4, 1e-3, 3e-3, 0.4]):
        add_trial(s, f"flat{k}", lr, {1: 0.99, 3: 0.99})
    for k, lr in enumerate([2e-4, 6e-4, 2e-3, 6e-3, 0.7]):
        add_trial(s, f"one{k}", lr, {1: 0.99})
    (action,) = s.ask(1)
    assert isinstance(action, RunSegment)
    assert (action.trial_id, action.start, action.stop) == ("star", 3, 9)
    assert action.restore_from == s.trials["star"].checkpoint
    assert action.info["decision"] == "dyhpo" and action.info["winner"] == "star"
    assert action.info["best_paused_ei"] > 2 * action.info["best_new_ei"]


@pytest.mark.parametrize("seed", range(5))
def test_with_flat_bad_curves_a_new_configuration_wins(seed: int) -> None:
    s = scheduler(seed=seed)
    add_trial(s, "good", 3e-2, {1: 0.50, 3: 0.30, 9: 0.10}, stopped=True)
    for k, lr in enumerate([1e-4, 1.5e-4, 2e-4, 3e-4, 4e-4]):
        add_trial(s, f"flat{k}", lr, {1: 1.0 + 0.001 * k, 3: 1.0 + 0.001 * k})
    (action,) = s.ask(1)
    assert isinstance(action, RunSegment)
    assert action.new_trial and (action.start, action.stop) == (0, 1)
    assert action.info["winner"] == "new"
    assert action.info["best_new_ei"] > action.info["best_paused_ei"]


# -------------------------------------------------- probability_sh = 1 is SH
def reference_sh(
    trials: Mapping[str, TrialState],
    levels: Sequence[float],
    affordable: Any = lambda cost: True,
) -> Any:
    """Promotion-based SH (ASHA get_job) with Syne Tune's promotion quantiles
    r_k / r_{k+1}, written independently of the scheduler.

    Trials whose next step does not fit the resource budget are skipped.
    """
    for k in range(len(levels) - 2, -1, -1):
        level = levels[k]
        rung = [(t.results[level], tid) for tid, t in trials.items() if level in t.results]
        rung = [m for m in rung if trials[m[1]].status != "failed"]
        rung.sort()
        for _, tid in rung[: math.floor(len(rung) * level / levels[k + 1] + 1e-9)]:
            t = trials[tid]
            idle = t.resource == level and t.status == "paused" and t.running is None
            if idle and affordable(levels[k + 1] - level):
                return tid
    return None


def test_probability_sh_one_on_hand_built_history() -> None:
    s = scheduler(probability_sh=1.0, max_t=27)  # rungs 1, 3, 9, 27
    losses = [0.9, 0.8, 0.7, 0.6, 0.5, 0.4]
    for k, loss in enumerate(losses):
        add_trial(s, f"t{k}", 1e-3 * (k + 1), {1: loss})
    # 6 at rung 1: top floor(6/3) = 2 -> t5 (0.4) then t4 (0.5).
    (action,) = s.ask(1)
    assert isinstance(action, RunSegment)
    assert (action.trial_id, action.start, action.stop) == ("t5", 1, 3)
    assert action.info["decision"] == "sh"
    s.tell(SegmentStarted("t5", 1, 3, {"lr": 6e-3}))
    s.tell(SegmentFinished("t5", 1, 3, (), {"loss": 0.3}))
    s.tell(SegmentStarted("t4", 1, 3, {"lr": 5e-3}))
    s.tell(SegmentFinished("t4", 1, 3, (), {"loss": 0.35}))
    # Rung 3 has 2 members: floor(2/3) = 0, so nothing there; rung 1 is used up.
    (action,) = s.ask(1)
    assert reference_sh(s.trials, s.rung_levels) is None
    assert isinstance(action, RunSegment) and action.new_trial


@pytest.mark.parametrize(
    "workers, rungs", [(1, {}), (3, {}), (2, {"rung_increment": 2, "reduction_factor": None})]
)
def test_probability_sh_one_matches_reference_at_every_decision(
    workers: int, rungs: dict[str, Any]
) -> None:
    def make_sh() -> DyHPOScheduler:
        return dy(seed=4, probability_sh=1.0, budget=Budget(max_resource=120), **rungs)

    result = simulate(make_sh(), objective, max_concurrency=workers)
    promotions = 0
    for point in result.decision_points:
        s = make_sh()
        for event in result.events[:point]:
            s.tell(event)
        (action,) = s.ask(1)
        if not isinstance(action, RunSegment):
            continue
        expected = reference_sh(s.trials, s.rung_levels, s.can_spend)
        if expected is None:
            assert action.new_trial, f"at event {point}"
        else:
            promotions += 1
            assert action.trial_id == expected and not action.new_trial, f"at event {point}"
    assert promotions > 3


def test_sh_promotes_the_fraction_set_by_the_rung_spacing() -> None:
    """Rungs 2, 4, 6, 8: of 4 trials at r=2 the top 4 * 2/4 = 2 are promoted, not
    floor(4 / eta) = 1; at rungs 1, 3, 9 the top 4 * 1/3 -> 1."""
    assert [promotion_quota(4, r, r_next) for r, r_next in [(2, 4), (4, 6), (1, 3)]] == [2, 2, 1]
    s = scheduler(probability_sh=1.0, rung_spacing="linear", grace_period=2, max_t=8)
    assert s.rung_levels == [2, 4, 6, 8]
    for k, loss in enumerate([0.9, 0.8, 0.7, 0.6]):
        add_trial(s, f"t{k}", 1e-3 * (k + 1), {2: loss})
    promoted = []
    for _ in range(3):
        (action,) = s.ask(1)
        assert isinstance(action, RunSegment)
        promoted.append(action.trial_id if not action.new_trial else "new")
        for e in action_events(action):
            s.tell(e)
    assert promoted == ["t3", "t2", "new"]


def test_probability_sh_between_zero_and_one_mixes() -> None:
    s = dy(seed=0, budget=Budget(max_resource=150))  # the default probability_sh, 0.25
    simulate(s, objective, max_concurrency=2)
    summary = s.status_extras()["schedule_summary"]
    assert summary.get("promoted_by_sh", 0) > 0
    assert summary.get("promoted_by_dyhpo", 0) + summary.get("started_by_dyhpo", 0) > 0


# ------------------------------------------------------- rung system, budget
def test_max_t_reached_exactly_and_completed_trials_stopped() -> None:
    s = dy(seed=5, budget=Budget(max_resource=200))
    result = simulate(s, objective, max_concurrency=2)
    levels = set(s.rung_levels) | {0}
    for e in result.events:
        if isinstance(e, SegmentStarted):
            assert e.start in levels and e.stop in levels and e.stop <= 9
    completed = {r[0] for r in s.schedule_records if r[2] == 9}
    assert completed
    stopped = {e.trial_id for e in result.events if isinstance(e, TrialStopped)}
    assert completed <= stopped
    for tid in completed:
        assert s.trials[tid].status == "completed" and s.trials[tid].resource == 9


def test_trial_budget_runs_to_done_without_creating_more() -> None:
    s = dy(seed=1, budget=Budget(max_trials=6))
    result = simulate(s, objective, max_concurrency=3)
    assert isinstance(result.done, Done)
    assert len(s.trials) == 6
    # With only a trial cap, DyHPO keeps promoting until everyone reached max_t.
    assert all(t.resource == 9 for t in s.trials.values())


def test_failed_trials_are_never_scored() -> None:
    s = scheduler(seed=0)
    _teachers(s)
    add_trial(s, "star", 0.12, {1: 0.50, 3: 0.20})
    from schedulers import SegmentFailed

    s.tell(SegmentStarted("star", 3, 9, {"lr": 0.12}))
    s.tell(SegmentFailed("star", 3, 9, "boom"))
    assert "star" not in s.scores().paused  # type: ignore[union-attr]
    (action,) = s.ask(1)
    assert getattr(action, "trial_id", None) != "star"


def test_ask_decides_one_action() -> None:
    """DyHPO decides one step at a time; asking for more returns that one step."""
    s = scheduler(seed=0)
    _teachers(s)
    for k in range(4):
        add_trial(s, f"p{k}", 10 ** (-3 + k * 0.5), {1: 0.8 - 0.1 * k})
    assert s.ask(8) == s.ask(1) and len(s.ask(8)) == 1


# ------------------------------------------------------------- replay, state
def test_tell_never_fits_and_replay_rebuilds_state(monkeypatch: pytest.MonkeyPatch) -> None:
    original = dy(seed=2, budget=Budget(max_resource=120), dkgp_min_points=16, surrogate="dkgp")
    result = simulate(original, objective, max_concurrency=3)
    used = {e.info.get("surrogate") for e in result.events if isinstance(e, SegmentStarted)}
    assert "dkgp" in used  # the deep kernel decided, not only its fallback

    def boom(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("tell() must not fit a surrogate")

    monkeypatch.setattr(dyhpo_module, "fit_gp", boom)
    monkeypatch.setattr(dyhpo_module, "fit_dkgp", boom)
    replayed = dy(seed=2, budget=Budget(max_resource=120), dkgp_min_points=16, surrogate="dkgp")
    for event in result.events:
        replayed.tell(event)
    assert replayed.schedule_records == original.schedule_records
    assert replayed._gp_params == original._gp_params
    assert replayed.status_extras() == original.status_extras()


def test_recorded_fit_is_reused_until_refit_every(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []

    def counting(real: Any) -> Any:
        def fit(*args: Any, **kwargs: Any) -> Any:
            calls.append(1)
            return real(*args, **kwargs)

        return fit

    monkeypatch.setattr(dyhpo_module, "fit_gp", counting(dyhpo_module.fit_gp))
    monkeypatch.setattr(dyhpo_module, "fit_dkgp", counting(dyhpo_module.fit_dkgp))
    s = dy(seed=0, refit_every=3, surrogate="gp")
    result = simulate(s, objective, max_concurrency=1)
    model = [
        e for e in result.events if isinstance(e, SegmentStarted) and e.info["decision"] == "dyhpo"
    ]
    fits = [e for e in model if "fit" in e.info]
    assert len(calls) == len(fits)
    assert fits[0] is model[0]
    assert len(model) / 3 - 1 <= len(fits) <= len(model) / 3 + 1


def test_decision_info_is_small_json_and_records_are_exposed() -> None:
    s = dy(seed=0)
    result = simulate(s, objective, max_concurrency=2)
    for e in result.events:
        if isinstance(e, SegmentStarted):
            info = dict(e.info)
            assert len(json.dumps(info.pop("fit", {}))) < 8000  # a deep-kernel fit: ~300 floats
            assert len(json.dumps(info)) < 400
    records = s.schedule_records
    assert records and {r[3] for r in records} == {"new", "promoted"}
    assert all(r[3] == "new" for r in records if r[1] == 0)
    extras = json.loads(json.dumps(s.status_extras()))
    assert extras["schedule_records"] == [list(r) for r in records]
    assert extras["rung_levels"] == [1, 3, 9]


def test_different_seeds_differ() -> None:
    a = simulate(dy(seed=1), objective, max_concurrency=2)
    b = simulate(dy(seed=2), objective, max_concurrency=2)
    assert a.events != b.events


# --------------------------------------------------------------- robustness
def test_nan_metrics_do_not_crash_and_are_stopped() -> None:
    def nan_objective(config: Any, start: float, stop: float, state: Any) -> Any:
        reports, state = objective(config, start, stop, state)
        if config["act"] == "sigmoid":
            reports = [{**r, "loss": math.nan} for r in reports]
        return reports, state

    s = dy(seed=3)
    result = simulate(s, nan_objective, max_concurrency=2)
    assert isinstance(result.done, Done)
    nan_trials = {t.trial_id for t in s.trials.values() if t.config["act"] == "sigmoid"}
    assert nan_trials
    for e in result.events:
        if isinstance(e, SegmentStarted) and e.trial_id in nan_trials:
            assert e.start == 0  # never promoted past a NaN
    assert all(s.trials[t].status == "failed" for t in nan_trials if s.trials[t].resource > 0)


@pytest.mark.parametrize("case", ["constant", "single", "duplicates"])
def test_degenerate_histories_give_a_decision(case: str) -> None:
    s = scheduler(seed=0, num_init_random=1)
    if case == "constant":
        for k in range(6):
            add_trial(s, f"t{k}", 10 ** (-4 + k * 0.7), {1: 0.5, 3: 0.5})
    elif case == "single":
        add_trial(s, "t0", 1e-2, {1: 0.5})
    else:
        for k in range(6):
            add_trial(s, f"t{k}", 1e-2, {1: 0.5 + 0.01 * k})
    (action,) = s.ask(1)
    assert isinstance(action, RunSegment)
    assert action.info["decision"] == "dyhpo"


def test_numerical_failure_falls_back_to_sh_with_reason(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*args: Any, **kwargs: Any) -> Any:
        raise GPError("kernel matrix is not positive definite even with jitter")

    monkeypatch.setattr(dyhpo_module, "fit_gp", broken)
    monkeypatch.setattr(dyhpo_module, "fit_dkgp", broken)
    s = scheduler(seed=0)
    for k, loss in enumerate([0.9, 0.8, 0.7, 0.6]):
        add_trial(s, f"t{k}", 1e-3 * (k + 1), {1: loss})
    (action,) = s.ask(1)
    assert isinstance(action, RunSegment)
    assert (action.trial_id, action.stop) == ("t3", 3)  # SH: top 1/3 of rung 1
    assert "not positive definite" in action.info["fallback"]
    result = simulate(dy(seed=0), objective, max_concurrency=2)
    assert isinstance(result.done, Done)
    assert any("fallback" in e.info for e in result.events if isinstance(e, SegmentStarted))


def test_max_t_trial_is_stopped_before_anything_else() -> None:
    s = scheduler(seed=0)
    add_trial(s, "done", 1e-2, {1: 0.5, 3: 0.4, 9: 0.3})
    (action,) = s.ask(1)
    assert action == Stop("done", "reached max_t", {"resource": 9})
    for e in action_events(action):
        s.tell(e)
    assert s.trials["done"].status == "completed"
    assert s.ask(1)[0] != action


def test_docstring_examples() -> None:
    failures, tests = doctest.testmod(dyhpo_module)
    assert tests > 0 and failures == 0
    import schedulers.gp as gp_module

    failures, tests = doctest.testmod(gp_module)
    assert tests > 0 and failures == 0
    import schedulers.dkgp as dkgp_module

    failures, tests = doctest.testmod(dkgp_module)
    assert tests > 0 and failures == 0


# ------------------------------------------------- the algorithm, not its shape
def test_mf_ei_incumbent_is_the_best_score_at_the_target_resource() -> None:
    """MF-EI compares a candidate's prediction at resource r with the best score
    observed at r, not the best overall (a finished trial at max_t is far better
    than anything at rung 3, and must not make every promotion to 3 look useless)."""
    s = scheduler(seed=0)
    add_trial(s, "champ", 0.01, {1: 0.3, 3: 0.1, 9: 0.01}, stopped=True)
    for k, lr in enumerate([1e-4, 3e-4, 1e-3, 0.3, 1.0]):
        add_trial(s, f"r{k}", lr, {1: 0.9 - 0.02 * k, 3: 0.8 - 0.02 * k})
    add_trial(s, "p", 3e-3, {1: 0.5})
    scores = s.scores()
    assert isinstance(scores, Scores)
    _, incumbent = scores.paused["p"]
    assert incumbent == 0.1  # best at r = 3, the target of p (champ's 0.1)
    assert scores.paused["r0"][1] == 0.01  # target 9: best at 9
    assert scores.new_incumbent == 0.3  # new trials target r = 1
    (action,) = s.ask(1)
    assert isinstance(action, RunSegment)
    expected = {1: 0.3, 3: 0.1, 9: 0.01}[int(action.stop)]
    assert action.info["incumbent"] == expected


def _curve_world(curve_length: int) -> DyHPOScheduler:
    """Final loss = loss at rung 3 minus 0.1, whatever the config: only the curve
    tells two paused trials with the same config apart."""
    s = scheduler(seed=0, curve_length=curve_length, surrogate="gp", num_candidates=8)
    rng = np.random.default_rng(0)
    for k in range(14):
        mid = float(rng.uniform(0.2, 1.0))
        add_trial(s, f"c{k}", float(10 ** rng.uniform(-4, 0)), {1: mid + 0.1, 3: mid, 9: mid - 0.1},
                  stopped=True)
    add_trial(s, "good", 1e-2, {1: 0.35, 3: 0.25})
    add_trial(s, "bad", 1e-2, {1: 1.05, 3: 0.95})
    return s


def test_the_learning_curve_changes_predictions_and_decisions() -> None:
    with_curve = _curve_world(4).scores()
    without = _curve_world(0).scores()
    assert isinstance(with_curve, Scores) and isinstance(without, Scores)
    assert with_curve.paused["good"][0] > 10 * max(with_curve.paused["bad"][0], 1e-6)
    # Without the curve the two inputs are identical, so are their scores.
    assert without.paused["good"][0] == pytest.approx(without.paused["bad"][0])
    (action,) = _curve_world(4).ask(1)
    assert getattr(action, "trial_id", None) == "good"


def _crossing_world(seed: int, target: str) -> DyHPOScheduler:
    """Crossing curves: large learning rates lead at rung 1 and end worst at 9."""
    s = scheduler(seed=seed, new_config_target=target, num_candidates=64)
    rng = np.random.default_rng(seed)
    for k in range(12):
        u = float(rng.uniform(-4, 0))  # log10 lr
        fast = (u + 4) / 4  # 0 (slow, ends best) .. 1 (fast, ends worst)
        curve = {1: 1.0 - 0.6 * fast, 3: 0.8 - 0.4 * fast, 9: 0.1 + 0.5 * fast}
        add_trial(s, f"t{k}", 10**u, curve, stopped=True)
    return s


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_new_configuration_is_chosen_for_its_final_score(seed: int) -> None:
    """With crossing curves the first rung favours fast learners; the new trial's
    configuration must be chosen for its predicted score at max_t (slow learners),
    while the paper's first-rung rule picks a fast one."""
    lrs = {}
    for target in ("max_t", "first_rung"):
        s = _crossing_world(seed, target)
        (action,) = s.ask(1)
        assert isinstance(action, RunSegment) and action.new_trial
        assert action.info["decision"] == "dyhpo"
        lrs[target] = math.log10(action.config["lr"])
    assert lrs["max_t"] < -2.5
    assert lrs["first_rung"] > -1.5


def test_curve_inputs_improve_the_fit() -> None:
    """On the same world the surrogate with curve inputs predicts held-out final
    losses far better than one that sees config and budget only."""
    errors = {}
    for n in (4, 0):
        s = _curve_world(n)
        x, y, _ = s.training_data()
        rng = np.random.default_rng(1)
        gp = dyhpo_module.fit_gp(x, y, rng, restarts=1)
        at_max = x[:, len(s.space)] == 1.0  # target column: r / max_t
        mu, _ = gp.predict(x[at_max])
        errors[n] = float(np.abs(mu - y[at_max]).mean())
    assert errors[4] < 0.5 * errors[0]


def test_decision_record_round_trips_and_old_payloads_still_fold() -> None:
    fit = SurrogateFit("gp", dyhpo_module.GPParams((0.5, 0.2), 1.0, 0.01))
    record = DyHPODecision("dyhpo", winner="new", surrogate="gp", incumbent=0.3, fit=fit)
    back = DyHPODecision.from_info(json.loads(json.dumps(record.to_info())))
    assert (back.decision, back.winner, back.fit) == ("dyhpo", "new", fit)
    # A log written before the typed record: Matern parameters under "gp_fit".
    old = {"decision": "dyhpo", "winner": "new", "gp_fit": {"ls": [0.5, 0.2], "signal": 1.0,
                                                              "noise": 0.01}}
    assert DyHPODecision.from_info(old).fit == fit
    assert DyHPODecision.from_info({"decision": "?", "gp_fit": {"ls": "x"}}).decision == "unknown"
    s = scheduler(seed=0)
    config = {"lr": 1e-2}
    s.tell(TrialCreated("t0000", config, old))
    s.tell(SegmentStarted("t0000", 0, 1, config, info=old))
    s.tell(SegmentFinished("t0000", 0, 1, ({"resource": 1, "loss": 0.5},), {"loss": 0.5}))
    assert s._latest_fit == fit
    assert s.status_extras()["schedule_summary"] == {"started_by_dyhpo": 1}
    (action,) = s.ask(1)  # the old fit has other inputs: a new decision refits, no crash
    assert isinstance(action, RunSegment)


def test_deep_kernel_decisions_replay_exactly() -> None:
    """Same log, same decisions: replaying a prefix reproduces every sampled
    deep-kernel decision, refits included (the recorded fit is what the replay
    uses afterwards)."""

    def make_dk() -> DyHPOScheduler:
        return dy(
            seed=6, budget=Budget(max_resource=100), dkgp_min_points=16, refit_every=3,
            surrogate="dkgp",
        )

    result = simulate(make_dk(), objective, max_concurrency=2)
    points = [
        p
        for p in result.decision_points
        if isinstance(result.events[p], (SegmentStarted, TrialCreated))
        and result.events[p].info.get("surrogate") == "dkgp"
    ]
    assert len(points) >= 3
    for point in points[:: max(1, len(points) // 5)]:
        replayed = make_dk()
        for event in result.events[:point]:
            replayed.tell(event)
        expected = action_events(replayed.ask(1)[0])
        assert expected == result.events[point : point + len(expected)], f"at event {point}"


def test_candidate_pool_matches_the_space_and_its_encoding() -> None:
    from schedulers.dyhpo import CandidatePool
    from schedulers.gp import encode_config

    space = SearchSpace.parse(
        {
            "lr": {"type": "float", "low": 1e-4, "high": 1.0, "log": True},
            "width": {"type": "int", "low": 8, "high": 64, "step": 8},
            "batch": {"type": "int", "low": 16, "high": 256, "log": True},
            "drop": {"type": "float", "low": 0.0, "high": 0.6, "step": 0.05},
            "act": {"type": "categorical", "choices": ["relu", "tanh", "sigmoid"]},
            "fixed": {"type": "float", "low": 2.0, "high": 2.0},
        }
    )
    pool = CandidatePool(space, 200, np.random.default_rng(0))
    for k in range(len(pool)):
        config = pool.config(k)
        assert space.contains(config), config
        assert np.allclose(encode_config(space, config), pool.encoded[k])
    assert {pool.config(k)["act"] for k in range(len(pool))} == {"relu", "tanh", "sigmoid"}
