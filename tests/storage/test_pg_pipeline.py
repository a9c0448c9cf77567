"""The pipelined writer transaction (storage.pg_pipeline) on the real PostgreSQL:
it stores exactly what SQLAlchemy stores, and sends nothing it does not need."""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa

from schedulers.events import (
    ExperimentFinished,
    SegmentFinished,
    SegmentStarted,
    TrialCreated,
    TrialStopped,
)
from storage import EventStore
from tests.storage.conftest import BACKENDS

pg_only = pytest.mark.parametrize("backend", [p for p in BACKENDS if p.id == "postgres"])


def _texts(store: EventStore, name: str) -> list[tuple[object, ...]]:
    """Every stored row of ``name`` as the server's text (JSON as written)."""
    with store._engine.connect() as conn:
        rows = [tuple(r) for r in conn.execute(sa.text(
            "SELECT seq, kind, trial_id, payload::text FROM events "
            "WHERE experiment_id = :n ORDER BY seq"), {"n": name})]
        rows += [tuple(r) for r in conn.execute(sa.text(
            "SELECT trial_id, status, config::text, resource, metrics::text, n_segments, "
            "created_seq FROM trials WHERE experiment_id = :n ORDER BY trial_id"), {"n": name})]
        rows += [tuple(r) for r in conn.execute(sa.text(
            "SELECT seq, trial_id, start, stop, metrics::text FROM results "
            "WHERE experiment_id = :n ORDER BY seq"), {"n": name})]
        rows += [tuple(r) for r in conn.execute(sa.text(
            "SELECT state FROM experiments WHERE name = :n"), {"n": name})]
    return rows


@pg_only
def test_pipelined_appends_store_what_sqlalchemy_stores(store: EventStore) -> None:
    report = {"resource": 1.0, "loss": 0.25, "note": "é ü \" \\ '"}
    batches = [
        [TrialCreated("t0", {"lr": 0.1, "act": "relu"}), SegmentStarted("t0", 0, 1, {"lr": 0.1})],
        [SegmentFinished("t0", 0, 1, (report,), report), TrialStopped("t0", "completed"),
         TrialCreated("t1", {"lr": 0.2}), SegmentStarted("t1", 0, 1.5, {"lr": 0.2})],
        [SegmentFinished("ghost", 0, 1, ({"loss": 1},), {"loss": 1})],  # never created
        [ExperimentFinished("done")],
    ]
    for name in ("plain", "piped"):
        store.create_experiment(name, {})
    seq = 1
    with store.writer() as writer:
        for batch in batches:
            store.append("plain", batch, seq)
            seq = writer.append("piped", batch, seq)

    assert _texts(store, "piped") == _texts(store, "plain")  # all but the write times
    assert [s.event for s in store.read("piped")] == [s.event for s in store.read("plain")]


@pg_only
def test_a_transaction_that_fails_before_anything_was_sent_sends_nothing(
    store: EventStore, tmp_path: Path
) -> None:

    store.create_experiment("e", {})
    trace = tmp_path / "trace"
    with store.writer() as writer:
        writer.append("e", [TrialCreated("a", {})], 1)  # the connection is open
        assert writer._conn is not None
        pgconn = writer._conn.connection.driver_connection.pgconn  # type: ignore[union-attr]
        with trace.open("w") as out:
            pgconn.trace(out.fileno())
            with pytest.raises(RuntimeError), writer.transaction("e", 2, lock=True):
                raise RuntimeError("the caller fails before its first read")
            pgconn.untrace()
        assert writer.append("e", [TrialStopped("a", "pruned")], 2) == 3
    assert trace.read_text() == ""
    assert [t.status for t in store.trials("e")] == ["pruned"]
