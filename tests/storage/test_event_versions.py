"""A log written today still replays after an event gains a field (upcasters).

Runs on every backend: the payload goes through SQLite's and PostgreSQL's
JSON columns, and the projections are rebuilt from the upcast events.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import pytest

from schedulers import Done, TrialPaused, action_events
from schedulers import events as ev
from schedulers.events import (
    EVENT_TYPES,
    VERSION_KEY,
    EventVersionError,
    event_from_record,
    event_to_payload,
    upcaster,
)
from schedulers.simulate import simulate
from storage import EventStore
from tests.schedulers.conftest import make, objective


@dataclass(frozen=True)
class TrialPausedV2(TrialPaused):
    """What a later ``TrialPaused`` might be: it also names the rung it paused at."""

    version: ClassVar[int] = 2
    rung_resource: float = -1.0  # required in spirit; the upcaster always fills it


@pytest.fixture
def v2(monkeypatch: pytest.MonkeyPatch) -> None:
    """Swap in ``TrialPausedV2`` with its v1 -> v2 upcaster, for this test only."""
    monkeypatch.setitem(ev.EVENT_TYPES, "TrialPaused", TrialPausedV2)
    monkeypatch.setattr(ev, "_UPCASTERS", {})

    @upcaster("TrialPaused", 1)
    def _rung_from_resource(payload: dict[str, Any]) -> dict[str, Any]:
        return {**payload, "rung_resource": payload["resource"]}


def write_todays_log(store: EventStore) -> list[Any]:
    """A finished HyperBand run, appended by today's (v1) code."""
    result = simulate(make("hyperband"), objective, max_concurrency=3, seed=1)
    store.create_experiment("e", {"scheduler": "hyperband"})
    store.append("e", result.events, expected_seq=1)
    assert any(isinstance(e, TrialPaused) for e in result.events)
    return result.events


def test_todays_log_replays_after_a_field_is_added(
    store: EventStore, v2: None
) -> None:
    original = write_todays_log(store)
    trials_before = store.trials("e")

    stored = [r.event for r in store.read("e")][1:]  # without ExperimentCreated
    paused = [e for e in stored if isinstance(e, TrialPaused)]
    assert paused and all(type(e) is TrialPausedV2 for e in paused)
    assert all(e.rung_resource == e.resource for e in paused)

    # Replaying every prefix of the upcast log decides exactly as the original.
    for cut in range(0, len(original), max(1, len(original) // 15)):
        a, b = make("hyperband"), make("hyperband")
        for e in original[:cut]:
            a.tell(e)
        for e in stored[:cut]:
            b.tell(e)
        assert a.ask(1) == b.ask(1), cut
    replayed = make("hyperband")
    for e in stored:
        replayed.tell(e)
    assert [type(a) for a in replayed.ask(1)] == [Done]

    store.rebuild_projections("e")
    assert store.trials("e") == trials_before


def test_new_events_record_their_version_and_old_code_refuses_them(
    store: EventStore, monkeypatch: pytest.MonkeyPatch, v2: None
) -> None:
    store.create_experiment("e", {})
    created = make("random", max_t=3)
    (start,) = [e for e in action_events(created.ask(1)[0]) if e.kind == "TrialCreated"]
    store.append("e", [start, TrialPausedV2("t0000", 1.0, rung_resource=1.0)], expected_seq=1)
    assert store.read("e")[-1].event == TrialPausedV2("t0000", 1.0, rung_resource=1.0)

    # The same log read by code that only knows TrialPaused v1 fails, naming both versions.
    monkeypatch.setitem(ev.EVENT_TYPES, "TrialPaused", TrialPaused)
    with pytest.raises(EventVersionError, match="written as version 2, but this rungflow "
                                                "reads versions up to 1"):
        store.read("e")


def test_payload_records_the_version(v2: None) -> None:
    payload = ev.event_to_payload(TrialPausedV2("t0000", 2.0, rung_resource=2.0))
    assert payload[VERSION_KEY] == 2


#: One record of every event kind as rungflow wrote them before events had
#: versions. Never regenerate this file: it stands for the logs users already
#: have. A change to an event's fields that breaks it needs a version and an
#: upcaster; a new event kind adds a record.
GOLDEN = Path(__file__).parent / "data" / "log_v1.json"


def test_a_log_written_before_versions_still_reads(store: EventStore) -> None:
    records = json.loads(GOLDEN.read_text())
    assert {r["kind"] for r in records} == set(EVENT_TYPES)
    events = []
    for r in records:
        event = event_from_record(r["kind"], r["trial_id"], r["payload"])
        if type(event).version == 1:  # unchanged kinds write exactly what they read
            assert event_to_payload(event) == r["payload"], r["kind"]
        events.append(event)
    store.create_experiment("golden", events[0].spec)
    store.append("golden", events[1:], expected_seq=1)
    assert [r.event for r in store.read("golden")] == events
