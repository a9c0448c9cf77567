"""Stored state changes only by what happened; infrastructure errors are not trial errors.

Real Prefect flow runs on real SQLite and PostgreSQL. The full disk is the
kernel's: checkpoint writes go to an fsspec filesystem (registered here) that
writes to the local disk until its quota is spent and then to ``/dev/full``,
whose every write fails with ``ENOSPC``.
"""

from __future__ import annotations

import errno
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import fsspec
import pytest
from fsspec.implementations.local import LocalFileSystem
from typer.testing import CliRunner

import examples.faults  # noqa: F401  (registers the "faults" trainable)
import flows.cli as cli
from flows.engine.runner import ResumeRefusedError, unfinished_segments
from flows.spec import load_spec
from flows.trainable import SegmentContext, register_trainable
from flows.tune import tune
from schedulers import SegmentFailed, SegmentFinished
from storage import (
    CheckpointStoreUnavailableError,
    DatabaseUnavailableError,
    EventStore,
)
from tests.pg import _admin_connect, pg_url

pytestmark = pytest.mark.usefixtures("prefect_harness")

SPEC: dict[str, Any] = {
    "name": "infra",
    "trainable": "faults",
    "metric": "loss",
    "space": {"x": {"type": "float", "low": 0.0, "high": 1.0}},
    "scheduler": "hyperband",
    "scheduler_args": {"max_t": 4, "reduction_factor": 2},
    "budget": {"max_trials": 4},
    "max_concurrency": 1,
    "seed": 5,
}


class FillingFS(LocalFileSystem):
    """The local disk, filling up: after ``writes_left`` writes, every write is ENOSPC."""

    protocol = ("fillingfs",)
    writes_left: ClassVar[int | None] = None

    @classmethod
    def _strip_protocol(cls, path: Any) -> Any:
        path = str(path)
        if path.startswith("fillingfs://"):
            path = path[len("fillingfs://") :]
        return super()._strip_protocol(path)

    def pipe_file(self, path: Any, value: Any, *args: Any, **kwargs: Any) -> Any:
        if FillingFS.writes_left is not None:
            if FillingFS.writes_left <= 0:
                with open("/dev/full", "wb", buffering=0) as full:
                    full.write(value)  # the kernel answers ENOSPC
            FillingFS.writes_left -= 1
        return super().pipe_file(path, value, *args, **kwargs)


@pytest.fixture
def filling_disk(rungflow_home: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    fsspec.register_implementation("fillingfs", FillingFS, clobber=True)
    root = f"fillingfs://{rungflow_home / 'ckpt'}"
    monkeypatch.setenv("RUNGFLOW_CHECKPOINTS", root)
    FillingFS.writes_left = None
    try:
        yield root
    finally:
        FillingFS.writes_left = None


def store_for(home: Path) -> EventStore:
    return EventStore(f"sqlite:///{home / 'rungflow.db'}")


def states(store: EventStore) -> dict[str, tuple[str, int]]:
    return {e.name: (e.state, e.last_seq) for e in store.list_experiments()}


def assert_each_segment_once(events: list[Any]) -> None:
    done = [(e.trial_id, e.start, e.stop) for e in events if isinstance(e, SegmentFinished)]
    assert len(done) == len(set(done))
    assert not [e for e in events if isinstance(e, SegmentFailed)]


# ------------------------------------------------------------------ item 6
def test_refused_resume_changes_nothing_finished_or_running(rungflow_home: Path) -> None:
    tune(load_spec(SPEC))
    with store_for(rungflow_home) as store:
        store.create_experiment("idle", {**load_spec({**SPEC, "name": "idle"}).to_json()})
        before = states(store)
    assert before["infra"][0] == "finished" and before["idle"][0] == "running"
    changed = {"space": {"x": {"type": "float", "low": 0.0, "high": 9.0}}}
    for name in ("infra", "idle"):
        with pytest.raises(ResumeRefusedError):
            tune(load_spec({**SPEC, **changed, "name": name}))
    with store_for(rungflow_home) as store:
        assert states(store) == before


def test_a_runner_that_stops_leaves_the_state_alone(rungflow_home: Path, tmp_path: Path) -> None:
    """A lost worker stops this runner; the experiment did not fail, others may go on."""
    crashing = {**SPEC, "trainable_args": {"crash_once_at": 2, "crash_marker": str(tmp_path / "m")}}
    with pytest.raises(BaseException, match="worker lost"):
        tune(load_spec(crashing))
    with store_for(rungflow_home) as store:
        assert states(store)["infra"][0] == "running"
    tune(load_spec(crashing))
    with store_for(rungflow_home) as store:
        assert states(store)["infra"][0] == "finished"
        assert_each_segment_once([r.event for r in store.read("infra")])


# ------------------------------------------------------------------ item 7
def test_full_disk_stops_the_run_and_a_resume_continues(
    rungflow_home: Path, filling_disk: str
) -> None:
    reference = tune(load_spec({**SPEC, "name": "reference"}))
    FillingFS.writes_left = 3
    with pytest.raises(CheckpointStoreUnavailableError, match="No space left on device") as info:
        tune(load_spec(SPEC))
    assert "free space, then run the same command again" in str(info.value)
    with store_for(rungflow_home) as store:
        events = [r.event for r in store.read("infra")]
        assert states(store)["infra"][0] == "running"
    assert sum(isinstance(e, SegmentFinished) for e in events) == 3
    assert not [e for e in events if isinstance(e, SegmentFailed)], "not a trial error"
    assert len(unfinished_segments(events)) == 1, "the segment stays un-finished"

    FillingFS.writes_left = None  # space freed
    summary = tune(load_spec(SPEC))
    assert summary["state"] == "finished" and summary["resumed_segments"] == 1
    with store_for(rungflow_home) as store:
        events = [r.event for r in store.read("infra")]
        ref = [r.event for r in store.read("reference")]
    assert_each_segment_once(events)
    key = [(e.trial_id, e.start, e.stop) for e in ref if isinstance(e, SegmentFinished)]
    assert sorted(key) == sorted(
        (e.trial_id, e.start, e.stop) for e in events if isinstance(e, SegmentFinished)
    )
    assert summary["best_metric"] == reference["best_metric"]


def test_full_disk_is_one_error_line_and_exit_1_from_the_cli(
    rungflow_home: Path, filling_disk: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec_file = tmp_path / "spec.yaml"
    spec_file.write_text(__import__("yaml").safe_dump(SPEC))
    FillingFS.writes_left = 2  # the preflight's probe, then one checkpoint
    result = CliRunner().invoke(cli.app, ["run", str(spec_file)], catch_exceptions=False)
    assert result.exit_code == 1, result.output
    errors = [ln for ln in result.output.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and "No space left on device" in errors[0], result.output
    assert "checkpoint store" in errors[0]


def test_checkpoint_store_error_carries_the_errno_reason() -> None:
    from storage import CheckpointStore

    fsspec.register_implementation("fillingfs", FillingFS, clobber=True)
    FillingFS.writes_left = 0
    try:
        store = CheckpointStore("fillingfs:///tmp/rungflow-never-written")
        with pytest.raises(CheckpointStoreUnavailableError) as info:
            store.put("e", "t0000", "0-1", b"w", 1.0)
        assert isinstance(info.value.__cause__, OSError)
        assert info.value.__cause__.errno == errno.ENOSPC
    finally:
        FillingFS.writes_left = None


# ------------------------------------------------------------------ database gone
_GONE: dict[str, str] = {}


def _drop_out(ctx: SegmentContext) -> None:
    """At its first segment reaching 2, rename the database away (the server "loses" it)."""
    if ctx.stop == 2 and "renamed" not in _GONE:
        _GONE["renamed"] = "yes"
        db = _GONE["db"]
        with _admin_connect() as conn:
            conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (db,)
            )
            conn.execute(f'ALTER DATABASE "{db}" RENAME TO "{db}_away"')
    ctx.report(ctx.stop, loss=1.0 / (1.0 + ctx.stop))


register_trainable("test-db-drop-out", _drop_out)


def test_database_gone_stops_the_run_and_a_resume_continues(
    rungflow_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = pg_url()
    db = url.rsplit("/", 1)[1]
    _GONE.clear()
    _GONE["db"] = db
    monkeypatch.setenv("RUNGFLOW_DATABASE_URL", url)
    spec = load_spec({**SPEC, "trainable": "test-db-drop-out"})
    try:
        # Without a pre-ping per checkout (the hot path), the first statement on the
        # severed connection reports the disconnect; a fresh one says the database is gone.
        with pytest.raises(
            DatabaseUnavailableError,
            match=f"no database '{db}'|{db}\\) cannot be used: terminating connection",
        ):
            tune(spec)
    finally:
        if "renamed" in _GONE:
            with _admin_connect() as conn:
                conn.execute(f'ALTER DATABASE "{db}_away" RENAME TO "{db}"')
    with EventStore(url) as store:
        events = [r.event for r in store.read("infra")]
        assert states(store)["infra"][0] == "running"
    assert not [e for e in events if isinstance(e, SegmentFailed)]
    assert len(unfinished_segments(events)) == 1
    summary = tune(spec)
    assert summary["state"] == "finished"
    with EventStore(url) as store:
        assert_each_segment_once([r.event for r in store.read("infra")])
