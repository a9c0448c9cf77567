"""Every scheduler, end to end: a real Prefect flow on digits with a small budget."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from flows.engine.status import experiment_status
from flows.spec import load_spec
from flows.tune import tune
from storage import EventStore
from tests.log_checks import assert_log_integrity

pytestmark = pytest.mark.usefixtures("prefect_harness")

SPACE = {
    "lr": {"type": "float", "low": 1e-3, "high": 0.2, "log": True},
    "alpha": {"type": "float", "low": 1e-6, "high": 1e-2, "log": True},
    "hidden": {"type": "int", "low": 8, "high": 32, "step": 8},
}

CASES: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
    "hyperband": ({"max_t": 9, "reduction_factor": 3}, {"max_trials": 17}),
    "asha": ({"max_t": 9, "grace_period": 1, "reduction_factor": 3, "searcher": "tpe"},
             {"max_resource": 40}),
    "pbt": ({"perturbation_interval": 2, "population_size": 4, "max_generations": 3}, {}),
    "dyhpo": ({"max_t": 9, "grace_period": 1, "reduction_factor": 3, "num_init_random": 4,
               "num_candidates": 32}, {"max_resource": 30}),
    "fifo": ({"max_t": 3, "points_per_dim": 2, "grid": {"hidden": [32], "lr": [0.05]}}, {}),
}


@pytest.mark.parametrize("scheduler", sorted(CASES))
def test_scheduler_runs_digits_end_to_end(rungflow_home: Path, scheduler: str) -> None:
    args, budget = CASES[scheduler]
    spec = load_spec(
        {
            "name": f"e2e-{scheduler}",
            "trainable": "digits",
            "metric": "error",
            "space": SPACE,
            "scheduler": scheduler,
            "scheduler_args": args,
            "budget": budget,
            "max_concurrency": 3,
            "seed": 1,
        }
    )
    summary = tune(spec)
    assert summary["state"] == "finished"
    assert summary["segments_failed"] == 0
    assert summary["best_metric"] is not None and summary["best_metric"] < 0.5
    store = EventStore(f"sqlite:///{rungflow_home / 'rungflow.db'}")
    try:
        events = [r.event for r in store.read(spec.name)]
        assert_log_integrity(events)
        status = experiment_status(store, spec.name)
    finally:
        store.close()
    assert status["state"] == "finished"
    assert status["best"]["trial_id"] == summary["best_trial_id"]
    if "max_resource" in budget:
        assert status["resource_used"] <= budget["max_resource"]
    if scheduler == "hyperband":
        assert max(t["resource"] for t in status["trials"]) == 9
