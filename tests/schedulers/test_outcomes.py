"""The one trial-status fold (schedulers.outcomes), shared by schedulers and projections."""

from __future__ import annotations

import ast
import sys
from pathlib import Path
from typing import Any

import pytest

from schedulers import SegmentFailed, SegmentFinished, SegmentStarted, TrialCreated, TrialPaused
from schedulers.events import TrialRetried, TrialStopped
from schedulers.outcomes import (
    ENDED,
    error_summary,
    final_status,
    most_common_error,
    next_status,
    normalize_status,
    stop_outcome,
)
from storage.projections import Projection

SCHEDULERS = Path(__file__).resolve().parents[2] / "schedulers"

#: Every reason the schedulers pass to ``Stop`` (f-strings filled in), and its outcome.
REASONS = {
    "max_t reached": "completed",  # hyperband, asha, pbt
    "reached max_t": "completed",  # dyhpo
    "completed": "completed",  # random, fifo
    "max_generations reached": "completed",  # pbt
    "culled at rung 1": "pruned",  # hyperband
    "below the rung 0 cutoff": "pruned",  # asha
    "budget exhausted": "pruned",
    "rung 1 was decided while it had failed": "pruned",
    "metric 'loss' not reported": "failed",
    "metric missing": "failed",
    "metric 'loss' missing (require_attrs)": "failed",
    "segment failed 3 times": "failed",
}


@pytest.mark.parametrize(("reason", "outcome"), sorted(REASONS.items()))
def test_each_stop_reason_has_the_outcome_users_expect(reason: str, outcome: str) -> None:
    assert stop_outcome(reason) == outcome


def test_every_literal_stop_reason_in_the_schedulers_is_listed() -> None:
    """A new ``Stop(tid, "...")`` reason must be classified here on purpose."""
    known = {r.split("{")[0] for r in REASONS}
    for path in sorted(SCHEDULERS.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if not (
                isinstance(node, ast.Call)
                and getattr(node.func, "id", None) == "Stop"
                and len(node.args) >= 2
            ):
                continue
            reason = node.args[1]
            if isinstance(reason, ast.Constant) and isinstance(reason.value, str):
                assert reason.value in REASONS, f"{path.name}: {reason.value!r}"
            elif isinstance(reason, ast.JoinedStr):
                head = next(
                    (v.value for v in reason.values if isinstance(v, ast.Constant)), ""
                )
                assert any(k.startswith(str(head)) or str(head) in k for k in known), (
                    f"{path.name}: f-string reason starting {head!r}"
                )


def test_fold_words_over_a_trial_life() -> None:
    s = next_status(None, TrialCreated("t", {}))
    assert s == "paused"
    s = next_status(s, SegmentStarted("t", 0, 1, {}))
    assert s == "running"
    s = next_status(s, SegmentFinished("t", 0, 1, (), {"loss": 1.0}))
    assert s == "paused"
    assert next_status(s, TrialPaused("t", 1)) == "paused"
    assert next_status(s, TrialStopped("t", "culled at rung 0")) == "pruned"
    assert next_status(s, TrialStopped("t", "max_t reached")) == "completed"
    failed = next_status("running", SegmentFailed("t", 0, 1, "KeyError: 'width'"))
    assert failed == "failed"
    assert next_status("running", SegmentFailed("t", 0, 1, "x", final=False)) == "running"
    assert next_status(failed, TrialStopped("t", "max_t reached")) == "failed"
    assert next_status(failed, TrialRetried("t", 0, 1)) == "paused"
    assert next_status("pruned", TrialRetried("t", 0, 1)) == "pruned"


def test_end_of_experiment_and_old_words() -> None:
    assert final_status("paused", experiment_finished=True) == "pruned"
    assert final_status("paused", experiment_finished=False) == "paused"
    assert final_status("completed", experiment_finished=True) == "completed"
    assert normalize_status("stopped") == "pruned"  # projections stored before the words


def test_errors_are_cut_to_type_and_first_line() -> None:
    assert error_summary("ValueError: bad\nTraceback (most recent call last):\n ...") == (
        "ValueError: bad"
    )
    assert most_common_error(["KeyError: 'width'", "ValueError: x", "KeyError: 'width'"]) == (
        "KeyError: 'width'",
        2,
    )
    assert most_common_error([]) is None


def _hyperband() -> Any:
    from schedulers import Budget, SearchSpace
    from schedulers.hyperband import HyperBandScheduler

    space = SearchSpace.parse({"x": {"type": "float", "low": 0.0, "high": 1.0}})
    return HyperBandScheduler(
        space=space, metric="loss", seed=3, max_t=4, reduction_factor=2,
        budget=Budget(max_trials=12),
    )


def _simulated(scheduler: Any) -> Any:
    """A run of ``scheduler`` where trial t0003 fails: every outcome is in its log."""
    from schedulers.simulate import simulate

    def objective(config: Any, start: float, stop: float, state: Any) -> Any:
        reports = [{"resource": r, "loss": config["x"] / r} for r in range(int(start) + 1,
                                                                            int(stop) + 1)]
        return reports, None

    return simulate(
        scheduler, objective, max_concurrency=2, fail=lambda a: a.trial_id == "t0003"
    )


def test_scheduler_and_projection_fold_agree() -> None:
    """Both views call next_status; a log with every outcome gives the same words."""
    scheduler = _hyperband()
    result = _simulated(scheduler)
    projection = Projection()
    for seq, event in enumerate(result.events, start=1):
        projection.apply(seq, event)
    words = {t: r.status for t, r in projection.trials.items()}
    assert words == {t: s.status for t, s in scheduler.trials.items()}
    assert {"completed", "pruned", "failed"} <= set(words.values())


def test_ended_counter_is_the_count_of_ended_trials_after_every_event() -> None:
    """Scheduler.n_ended (progress reads it instead of scanning) follows the fold,
    through a failure, its retry and a trial created again."""
    events = [*_simulated(_hyperband()).events, TrialRetried("t0003", 0, 1)]
    events += [TrialStopped("t0000", "culled at rung 0"), TrialCreated("t0000", {"x": 0.5})]
    scheduler = _hyperband()
    for event in events:
        scheduler.tell(event)
        assert scheduler.n_ended == sum(t.status in ENDED for t in scheduler.trials.values())
    assert 0 < scheduler.n_ended < len(scheduler.trials)


def test_outcomes_module_imports_only_the_standard_library_and_events() -> None:
    tree = ast.parse((SCHEDULERS / "outcomes.py").read_text())
    modules = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            modules.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            modules.add(node.module)
    allowed = set(sys.stdlib_module_names) | {"__future__", "schedulers.events"}
    tops = {m if m == "schedulers.events" else m.split(".")[0] for m in modules}
    assert tops <= allowed, tops - allowed
