"""Event versions and upcasters, and the events module's light import."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from dataclasses import dataclass
from typing import Any, ClassVar

import pytest

import schedulers
from schedulers import events as ev
from schedulers.events import (
    VERSION_KEY,
    Event,
    EventVersionError,
    TrialPaused,
    event_from_record,
    event_to_payload,
    upcaster,
)

HEAVY = ("numpy", "scipy", "optuna", "sklearn", "prefect")


@pytest.mark.parametrize(
    "statement",
    [
        "import schedulers.events",
        "import schedulers.actions",
        "from schedulers import Event, RunSegment, event_from_record",
        "import storage",
    ],
)
def test_events_and_storage_import_no_numerical_stack(statement: str) -> None:
    """Decoding a log must not pay for numpy or optuna (a fresh interpreter tells)."""
    code = f"{statement}\nimport sys\nprint(sorted(m for m in {HEAVY!r} if m in sys.modules))"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    assert out.stdout.strip() == "[]", out.stdout


def test_lazy_package_keeps_every_public_name() -> None:
    assert set(schedulers._WHERE) == set(schedulers.__all__)
    for name in schedulers.__all__:
        assert getattr(schedulers, name) is not None
    with pytest.raises(AttributeError, match="no attribute 'Nope'"):
        schedulers.Nope  # noqa: B018
    assert "ASHA" not in schedulers.__all__  # scheduler classes go through the registry


# ------------------------------------------------------------------ versions
@dataclass(frozen=True)
class Probe(Event):
    """A test-only event kind whose fields changed twice.

    v1: ``(trial_id, loss)``; v2 renamed ``loss`` to ``value``; v3 added the
    required ``metric`` and dropped ``legacy`` (which v2 wrote).
    """

    kind: ClassVar[str] = "Probe"
    version: ClassVar[int] = 3
    trial_id: str
    value: float
    metric: str


@pytest.fixture
def probe(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Register ``Probe`` and its upcasters in isolated tables; returns the call log."""
    monkeypatch.setitem(ev.EVENT_TYPES, "Probe", Probe)
    monkeypatch.setattr(ev, "_UPCASTERS", {})
    calls: list[str] = []

    @upcaster("Probe", 1)
    def _rename(payload: dict[str, Any]) -> dict[str, Any]:
        calls.append("1->2")
        out = dict(payload)
        out["value"] = out.pop("loss")
        return out

    @upcaster("Probe", 2)
    def _add_metric(payload: dict[str, Any]) -> dict[str, Any]:
        calls.append("2->3")
        out = dict(payload)
        out.pop("legacy", None)  # dropped on purpose: this upcaster says so
        out["metric"] = "loss"
        return out

    return calls


def test_upcaster_chain_v1_v2_v3(probe: list[str]) -> None:
    v1 = {"loss": 0.5}  # as a log written before versions existed: no version key
    assert event_from_record("Probe", "t0000", v1) == Probe("t0000", 0.5, "loss")
    assert probe == ["1->2", "2->3"]
    assert v1 == {"loss": 0.5}  # the stored payload is not modified

    probe.clear()
    v2 = {"value": 0.25, "legacy": "x", VERSION_KEY: 2}
    assert event_from_record("Probe", "t0001", v2) == Probe("t0001", 0.25, "loss")
    assert probe == ["2->3"]

    probe.clear()
    current = event_to_payload(Probe("t0002", 1.5, "acc"))
    assert current == {"value": 1.5, "metric": "acc", VERSION_KEY: 3}
    assert event_from_record("Probe", "t0002", current) == Probe("t0002", 1.5, "acc")
    assert probe == []


def test_newer_log_fails_clearly(probe: list[str]) -> None:
    with pytest.raises(EventVersionError, match="written as version 4, but this rungflow reads "
                                                "versions up to 3"):
        event_from_record("Probe", "t0000", {"value": 1, "metric": "m", VERSION_KEY: 4})


@pytest.mark.parametrize("bad", [0, -1, "2", True, 1.5])
def test_malformed_version_fails(probe: list[str], bad: Any) -> None:
    with pytest.raises(EventVersionError, match="must be an integer >= 1"):
        event_from_record("Probe", "t0000", {"value": 1, "metric": "m", VERSION_KEY: bad})


def test_missing_upcaster_fails(probe: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    del ev._UPCASTERS[("Probe", 2)]
    with pytest.raises(EventVersionError, match="version 2 has no upcaster to version 3"):
        event_from_record("Probe", "t0000", {"loss": 1.0})


def test_unknown_field_still_fails_unless_an_upcaster_drops_it(probe: list[str]) -> None:
    with pytest.raises(ValueError, match="has no field 'legacy'"):
        event_from_record("Probe", "t0000", {"value": 1, "metric": "m", "legacy": 1,
                                             VERSION_KEY: 3})
    with pytest.raises(ValueError, match="has no field 'surprise'"):
        event_from_record("TrialPaused", "t0000", {"resource": 1.0, "surprise": 1})


def test_upcaster_registration_is_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ev, "_UPCASTERS", {})
    upcaster("Probe", 1)(dict)
    with pytest.raises(ValueError, match="already registered"):
        upcaster("Probe", 1)(dict)
    with pytest.raises(ValueError, match="from_version is 0"):
        upcaster("Probe", 0)


def test_every_real_event_is_version_1_and_writes_no_version_key() -> None:
    """Today's payloads are byte-for-byte what unversioned rungflow wrote and read."""
    for cls in ev.EVENT_TYPES.values():
        assert cls.version == 1, cls
        fields = {f.name for f in dataclasses.fields(cls)}
        assert VERSION_KEY not in fields
    payload = event_to_payload(TrialPaused("t0000", 3.0, {"why": "rung"}))
    assert VERSION_KEY not in payload


def test_payload_values_are_plain_json_whatever_the_input_types() -> None:
    """The encoder's fast path (exact builtins) and its general path give the same values."""
    import math
    from collections import OrderedDict

    import numpy as np

    from schedulers.events import SegmentFinished

    class Score(float):
        pass

    report = {"resource": 1, "loss": math.nan, "acc": np.float32(0.5), "n": np.int64(3)}
    metrics = OrderedDict([("loss", math.inf), ("flag", True), ("tags", ("a", 1)), ("s", Score(2))])
    payload = event_to_payload(SegmentFinished("t0", 0, 1, (report,), metrics))
    assert payload["reports"] == [{"resource": 1, "loss": None, "acc": 0.5, "n": 3}]
    assert payload["metrics"] == {"loss": None, "flag": True, "tags": ["a", 1], "s": 2.0}
    assert type(payload["metrics"]["s"]) is float and type(payload["reports"][0]["n"]) is int
    assert type(payload["metrics"]) is dict and type(payload["metrics"]["flag"]) is bool
    nested = event_to_payload(TrialPaused("t0", 1.0, info={"k": {1: [math.nan, -math.inf]}}))
    assert nested["info"] == {"k": {"1": [None, None]}}
