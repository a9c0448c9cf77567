"""Artifacts after real ``tune`` flow runs, read back through the Prefect client."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

import pytest

from flows.artifacts import (
    ExperimentArtifacts,
    artifact_key,
    leaderboard_rows,
    live_rows,
    live_snapshot,
    progress_fraction,
)
from flows.deploy_params import experiment_name
from flows.engine.runner import RunSummary
from flows.engine.status import experiment_status
from flows.spec import SpecError, load_spec
from flows.tune import tune
from storage import EventStore

SPEC: dict[str, Any] = {
    "name": "Art_1",
    "trainable": "faults",
    "metric": "loss",
    "space": {"x": {"type": "float", "low": 0.0, "high": 1.0}},
    "scheduler": "hyperband",
    "scheduler_args": {"max_t": 4, "reduction_factor": 2},
    "budget": {"max_trials": 6},
    "max_concurrency": 2,
    "seed": 1,
}


def read_artifacts(flow_run_id: UUID) -> dict[str, Any]:
    """Artifacts of a flow run by key (latest version of each)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    async def read() -> list[Any]:
        async with get_client() as client:
            return await client.read_artifacts(
                artifact_filter=ArtifactFilter(
                    flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id])
                )
            )

    return {a.key: a for a in asyncio.run(read())}


def read_logs(flow_run_id: UUID) -> str:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId

    async def read() -> list[Any]:
        async with get_client() as client:
            return await client.read_logs(
                log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id])),
                limit=200,
            )

    return "\n".join(log.message for log in asyncio.run(read()))


def run_tune(**changes: Any) -> tuple[UUID, dict[str, Any]]:
    state = tune(load_spec({**SPEC, **changes}), return_state=True)
    assert state.is_completed(), state
    flow_run_id = state.state_details.flow_run_id
    assert flow_run_id is not None
    return flow_run_id, state.result()


@pytest.mark.usefixtures("prefect_harness")
def test_run_creates_progress_leaderboard_and_summary(rungflow_home: Path) -> None:
    flow_run_id, summary = run_tune()
    found = read_artifacts(flow_run_id)
    kinds = ("progress", "leaderboard", "curves", "summary")
    keys = {artifact_key("Art_1", k) for k in kinds}
    assert keys == {f"rungflow-art-1-{k}" for k in kinds}
    assert keys <= set(found)
    # Learning curves: an embedded PNG (matplotlib is a dev dependency).
    assert "data:image/png;base64," in found["rungflow-art-1-curves"].data
    assert "top " in found["rungflow-art-1-leaderboard"].description

    assert float(found["rungflow-art-1-progress"].data) == 100.0

    store = EventStore(f"sqlite:///{rungflow_home / 'rungflow.db'}")
    status = experiment_status(store, "Art_1")
    store.close()
    rows = json.loads(found["rungflow-art-1-leaderboard"].data)
    assert rows == leaderboard_rows(status)
    assert rows[0]["trial_id"] == summary["best_trial_id"]
    assert rows[0]["resource"] == 4
    assert rows[0]["loss"] == pytest.approx(summary["best_metric"], rel=1e-5)  # 6 digits
    assert set(rows[0]) == {"rank", "trial_id", "status", "resource", "loss", "x"}
    assert [r["rank"] for r in rows] == list(range(1, len(rows) + 1))

    markdown = found["rungflow-art-1-summary"].data
    assert "`hyperband`" in markdown
    assert f"`{summary['best_trial_id']}`" in markdown
    assert "budget used" in markdown and "of 6" in markdown
    checkpoint = status["best"]["checkpoint"]
    assert checkpoint.startswith(f"Art_1/{summary['best_trial_id']}/")
    assert f"`{checkpoint}`" in markdown

    # Storage locations reach neither artifacts nor logs.
    text = "\n".join(f"{a.description} {a.data}" for a in found.values())
    text += read_logs(flow_run_id)
    assert "Art_1" in text
    assert str(rungflow_home) not in text
    assert "sqlite" not in text


@pytest.mark.usefixtures("prefect_harness")
def test_a_run_where_every_trial_failed_ends_failed_naming_the_error(
    rungflow_home: Path,
) -> None:
    """The synthetic trainable without `width` in the space raises KeyError in every trial."""
    spec = load_spec(
        {
            **SPEC, "name": "all-fail", "trainable": "synthetic",
            "space": {"lr": {"type": "float", "low": 0.001, "high": 0.1}},
            "budget": {"max_trials": 3},
        }
    )
    state = tune(spec, return_state=True)
    assert state.is_failed(), state
    assert "3 of 3 trial(s) failed" in str(state.message)
    assert "KeyError: 'width'" in str(state.message)
    flow_run_id = state.state_details.flow_run_id
    assert flow_run_id is not None
    markdown = read_artifacts(flow_run_id)["rungflow-all-fail-summary"].data
    assert "Failed trials (3)" in markdown and "KeyError: 'width'" in markdown
    store = EventStore(f"sqlite:///{rungflow_home / 'rungflow.db'}")
    try:
        status = experiment_status(store, "all-fail")
        listed = {e.name: e.state for e in store.list_experiments()}
    finally:
        store.close()
    assert status["state"] == listed["all-fail"] == "failed"
    assert {t["status"] for t in status["trials"]} == {"failed"}
    assert all(t["error"] == "KeyError: 'width'" for t in status["trials"])


@pytest.mark.usefixtures("prefect_harness")
def test_artifacts_off_setting(rungflow_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RUNGFLOW_ARTIFACTS", "off")
    flow_run_id, _ = run_tune(name="quiet")
    assert read_artifacts(flow_run_id) == {}


@pytest.mark.usefixtures("prefect_harness")
def test_database_url_from_a_secret_block(
    rungflow_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from prefect.blocks.system import Secret

    db = tmp_path / "secret-place" / "team.db"
    db.parent.mkdir()
    block = f"rungflow-db-{uuid4().hex[:8]}"
    Secret(value=f"sqlite:///{db}").save(block)  # type: ignore[arg-type]  # str is coerced
    monkeypatch.setenv("RUNGFLOW_DATABASE_BLOCK", block)
    flow_run_id, summary = run_tune(name="blocky")
    assert summary["state"] == "finished"
    assert db.exists()
    assert not (rungflow_home / "rungflow.db").exists()
    text = read_logs(flow_run_id) + json.dumps(
        {k: str(a.data) for k, a in read_artifacts(flow_run_id).items()}
    )
    assert "secret-place" not in text and "team.db" not in text


@pytest.mark.usefixtures("prefect_harness")
def test_experiment_suffix_flow_run_names_a_new_experiment(rungflow_home: Path) -> None:
    from prefect.client.orchestration import get_client

    _, summary = run_tune(name="per-run")
    assert summary["experiment"] == "per-run"
    state = tune(load_spec({**SPEC, "name": "per-run"}), "flow_run", return_state=True)
    flow_run_id = state.state_details.flow_run_id
    assert flow_run_id is not None

    async def name() -> str:
        async with get_client() as client:
            return str((await client.read_flow_run(flow_run_id)).name)

    assert state.result()["experiment"] == f"per-run-{asyncio.run(name())}"
    assert state.result()["segments_run"] > 0  # a new experiment, not the finished one


def test_experiment_name_rules() -> None:
    start = datetime(2026, 3, 1, 23, 30, tzinfo=timezone(timedelta(hours=-2)))
    assert experiment_name("hb", "none") == "hb"
    assert experiment_name("hb", "date", scheduled_start=start) == "hb-20260302"
    assert experiment_name("hb", "datetime", scheduled_start=start) == "hb-20260302T0130"
    assert experiment_name("hb", "flow_run", flow_run_name="crimson tiger!") == "hb-crimson-tiger"
    with pytest.raises(SpecError, match="experiment_suffix"):
        experiment_name("hb", "date")
    with pytest.raises(SpecError, match=r"spec\.name"):
        experiment_name("n" * 95, "datetime", scheduled_start=datetime.now(UTC))


# ------------------------------------------------------------- throttling
@dataclass
class FakeScheduler:
    resource_used: float = 0.0
    trials: dict[str, Any] = field(default_factory=dict)
    finished: bool = False

    def best_trial(self) -> None:
        return None


@dataclass
class FakeRunner:
    scheduler: FakeScheduler
    summary: RunSummary


def test_progress_updates_are_throttled(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[str, float]] = []

    def create(progress: float, **_: Any) -> UUID:
        calls.append(("create", progress))
        return uuid4()

    def update(_id: UUID, progress: float, **_: Any) -> UUID:
        calls.append(("update", progress))
        return _id

    import prefect.artifacts

    monkeypatch.setattr(prefect.artifacts, "create_progress_artifact", create)
    monkeypatch.setattr(prefect.artifacts, "update_progress_artifact", update)
    now = [100.0]
    spec = load_spec({**SPEC, "budget": {"max_resource": 100}})
    reporter = ExperimentArtifacts(spec, min_interval=2.0, clock=lambda: now[0])
    runner = FakeRunner(FakeScheduler(), RunSummary("Art_1"))
    reporter.__enter__()
    for step in range(1, 101):  # 100 results within 1 s: no update
        now[0] += 0.01
        runner.scheduler.resource_used = step * 0.5
        reporter(runner)  # type: ignore[arg-type]
    assert calls == [("create", 0.0)]
    now[0] += 2.0
    reporter(runner)  # type: ignore[arg-type]
    reporter.flush()  # the update runs on a background thread
    assert calls[-1] == ("update", 50.0)
    assert reporter.updates == 2


def test_progress_fraction_by_budget() -> None:
    spec = load_spec({**SPEC, "scheduler": "random", "scheduler_args": {"max_t": 4}})
    assert progress_fraction(spec, FakeScheduler(resource_used=12)) == 0.5  # type: ignore[arg-type]
    spec = load_spec({**SPEC, "budget": {"max_resource": 10}})
    assert progress_fraction(spec, FakeScheduler(resource_used=20)) == 1.0  # type: ignore[arg-type]


def test_live_leaderboard_copies_the_top_rows_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """The live snapshot (taken on the flow thread) holds the top rows, not every
    trial, yet gives the ranking of the full status and its counts."""
    from schedulers.outcomes import ENDED
    from tests.schedulers.test_outcomes import _hyperband, _simulated

    scheduler = _hyperband()
    _simulated(scheduler)
    spec = load_spec(SPEC)
    full = {
        "metric": "loss", "mode": "min",
        "trials": [
            {"trial_id": t.trial_id, "status": t.status, "resource": t.resource,
             "config": t.config,
             "metrics": None if t.last_score is None else {"loss": t.last_score}}
            for t in scheduler.trials.values()
        ],
    }
    import flows.curves_image

    monkeypatch.setattr(flows.curves_image, "MAX_CURVES", 2)
    snap = live_snapshot(spec, scheduler, limit=3)
    assert live_rows(snap, 3) == leaderboard_rows(full, 3)
    assert len(snap.trials) == 3 and snap.n_trials == len(scheduler.trials) == 12
    assert list(snap.curves()) == [row["trial_id"] for row in leaderboard_rows(full, 2)]
    assert snap.ranked == sum(t.last_score is not None for t in scheduler.trials.values())
    best = scheduler.best_trial()
    assert best is not None and snap.best == best.trial_id
    # Progress by max_trials reads the fold's counter: equal to a scan.
    ended = sum(t.status in ENDED for t in scheduler.trials.values())
    scheduler.finished = False
    assert progress_fraction(spec, scheduler) == min(1.0, ended / 6)
