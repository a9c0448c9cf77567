"""``max_concurrency: 1`` is the reproducible mode: same spec and seed, same log.

Async PBT decides whom to exploit as results arrive; with one segment in
flight the arrival order is fixed, so two runs must write identical decisions.
Real runner, real SQLite, real trainable (examples/pbt_toy.py); segments run
inline (no Prefect) to keep the test cheap.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import examples.pbt_toy  # noqa: F401  (registers "pbt-toy")
from flows.engine.runner import ExperimentRunner
from flows.spec import load_spec
from schedulers import event_to_payload
from storage import EventStore
from tests.flows.inline import InlineExecutor

EXAMPLES = Path(__file__).resolve().parents[3] / "examples"


def decisions(home: Path, name: str = "repro") -> list[tuple[str, str | None, dict[str, Any]]]:
    """The log of one run in its own store, without who ran what."""
    home.mkdir()
    spec = load_spec(EXAMPLES / "pbt-toy.yaml", name=name, max_concurrency=1)
    store = EventStore(f"sqlite:///{home / 'rungflow.db'}")
    try:
        ExperimentRunner(store, spec, str(home / "checkpoints")).run(InlineExecutor())
        log = []
        for record in store.read(name):
            event = record.event
            if event.coordination:
                continue  # who ran a segment, not what was decided
            payload = event_to_payload(event)
            if isinstance(payload.get("info"), dict):
                payload["info"].pop("owner", None)  # this runner's identity
            log.append((event.kind, event.trial, payload))
        return log
    finally:
        store.close()


def test_two_pbt_runs_with_the_same_seed_write_the_same_log(tmp_path: Path) -> None:
    first = decisions(tmp_path / "a")
    second = decisions(tmp_path / "b")
    assert any(kind == "TrialPerturbed" for kind, _, _ in first)  # PBT really exploited
    assert first == second
