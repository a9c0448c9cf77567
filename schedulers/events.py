"""Events: the facts every scheduler folds and every store persists.

Events are frozen dataclasses named in the past tense. The event log in
``storage`` is the single source of truth; schedulers rebuild their state by
folding events with :meth:`schedulers.Scheduler.tell`. Payloads are plain JSON
values so that a log written by one version can be read by the next.

**Versions and upcasters.** Each event class has a ``version`` (1 unless its
fields changed). A payload stores it under ``"_version"`` when it is above 1;
an absent key means 1, which is what every log written before versions
existed holds. :func:`event_from_record` lifts an old payload to the current
version through the upcasters registered with :func:`upcaster`, one step at a
time (v1 -> v2 -> v3), and only then checks its fields. So:

* adding a field with a default needs no upcaster (an old payload simply
  lacks it); adding one without a default, renaming or dropping a field
  raises the class's ``version`` and registers an upcaster that fills,
  renames or drops it;
* a field the class does not know is still an error, unless an upcaster
  removed it: data is never dropped silently;
* a payload *newer* than the class (a log written by a later rungflow, read
  by this one) fails with :class:`EventVersionError` naming both versions,
  instead of losing the fields this version cannot know.

This module imports only the standard library (checked by import-linter and
``tests/schedulers/test_events_versions.py``): the storage layer, the
schedulers and the CLI all share it, and none of them should pay for numpy
or optuna to decode a log.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

__all__ = [
    "EVENT_TYPES",
    "VERSION_KEY",
    "CheckpointRef",
    "Event",
    "EventVersionError",
    "ExperimentCreated",
    "ExperimentFinished",
    "ImportCompleted",
    "JobUpdated",
    "ObservationImported",
    "SegmentFailed",
    "SegmentFinished",
    "SegmentReclaimed",
    "SegmentStarted",
    "TrialCreated",
    "TrialPaused",
    "TrialPerturbed",
    "TrialRetried",
    "TrialStopped",
    "event_from_record",
    "event_to_payload",
    "segment_key",
    "upcaster",
]


def segment_key(start: float, stop: float) -> str:
    """Stable, path-safe name of the segment that trains ``start -> stop``.

    ``repr`` of a float round-trips exactly, so the same resource range always
    maps to the same key, which is what makes a retried segment idempotent.
    """
    return f"{_num(start)}-{_num(stop)}"


def _num(value: float) -> str:
    if float(value).is_integer():
        return str(int(value))
    return repr(float(value))


@dataclass(frozen=True)
class CheckpointRef:
    """Where a segment's checkpoint lives and how to verify it.

    Attributes:
        key: Blob-store key ``experiment/trial/segment``; relative, never absolute.
        size: Number of bytes written.
        sha256: Hex digest of the bytes, checked on restore.
        trial_id: Trial that wrote it (a PBT exploit restores another trial's).
        resource: Resource the trial had reached when the checkpoint was saved.
    """

    key: str
    size: int
    sha256: str
    trial_id: str
    resource: float

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: Mapping[str, Any] | None) -> CheckpointRef | None:
        if data is None:
            return None
        return cls(
            key=str(data["key"]),
            size=int(data["size"]),
            sha256=str(data["sha256"]),
            trial_id=str(data["trial_id"]),
            resource=float(data["resource"]),
        )


@dataclass(frozen=True)
class Event:
    """Base class of all events. ``trial_id`` is ``None`` for experiment events."""

    kind: ClassVar[str] = "Event"
    #: Version of this class's fields. Raise it, and register an upcaster
    #: from the previous version (:func:`upcaster`), when a change would not
    #: read an old payload as it was meant.
    version: ClassVar[int] = 1
    #: True for facts about *who* does the work (claims, progress notes), not
    #: about the search. Schedulers skip them entirely (see
    #: :meth:`schedulers.Scheduler.tell`), so a crash that leaves a reclaim in
    #: the log cannot change any later decision.
    coordination: ClassVar[bool] = False

    @property
    def trial(self) -> str | None:
        return getattr(self, "trial_id", None)


@dataclass(frozen=True)
class ExperimentCreated(Event):
    """The experiment exists; ``spec`` is the validated spec as JSON."""

    kind: ClassVar[str] = "ExperimentCreated"
    spec: Mapping[str, Any]


@dataclass(frozen=True)
class TrialCreated(Event):
    """A scheduler/searcher chose a new configuration.

    ``info`` records why (bracket, searcher, DyHPO scores, ...).
    """

    kind: ClassVar[str] = "TrialCreated"
    trial_id: str
    config: Mapping[str, Any]
    info: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class SegmentStarted(Event):
    """A segment ``start -> stop`` of ``trial_id`` was handed to a worker.

    It is written *before* the task is submitted, so a crash afterwards leaves
    a started-but-unfinished segment that resume runs again.
    """

    kind: ClassVar[str] = "SegmentStarted"
    trial_id: str
    start: float
    stop: float
    config: Mapping[str, Any]
    restore_from: CheckpointRef | None = None
    info: Mapping[str, Any] = field(default_factory=dict)

    @property
    def segment(self) -> str:
        return segment_key(self.start, self.stop)


@dataclass(frozen=True)
class SegmentFinished(Event):
    """A segment returned.

    Attributes:
        reports: Every ``report(resource, **metrics)`` the trainable made, in
            order, each as ``{"resource": r, **metrics}``.
        metrics: The last report (the value schedulers compare at ``stop``).
        checkpoint: Saved state, if the trainable called ``save``.
        attempts: How many task attempts it took (1 when no retry was needed).
    """

    kind: ClassVar[str] = "SegmentFinished"
    trial_id: str
    start: float
    stop: float
    reports: tuple[Mapping[str, Any], ...]
    metrics: Mapping[str, Any]
    checkpoint: CheckpointRef | None = None
    attempts: int = 1

    @property
    def segment(self) -> str:
        return segment_key(self.start, self.stop)


@dataclass(frozen=True)
class SegmentFailed(Event):
    """A segment raised after all retries; ``final`` means the trial is failed."""

    kind: ClassVar[str] = "SegmentFailed"
    trial_id: str
    start: float
    stop: float
    error: str
    attempts: int = 1
    final: bool = True


@dataclass(frozen=True)
class TrialPaused(Event):
    """The scheduler parked a trial at ``resource`` (it may be promoted later)."""

    kind: ClassVar[str] = "TrialPaused"
    trial_id: str
    resource: float
    info: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class TrialStopped(Event):
    """The scheduler ended a trial for good (culled, completed or out of budget)."""

    kind: ClassVar[str] = "TrialStopped"
    trial_id: str
    reason: str
    info: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class TrialPerturbed(Event):
    """PBT exploit/explore: ``trial_id`` takes ``donor_id``'s weights and a new config."""

    kind: ClassVar[str] = "TrialPerturbed"
    trial_id: str
    donor_id: str
    donor_resource: float
    old_config: Mapping[str, Any]
    new_config: Mapping[str, Any]
    checkpoint: CheckpointRef | None = None
    info: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ExperimentFinished(Event):
    """Nothing is left to run; ``best_trial_id`` is the winner (if any)."""

    kind: ClassVar[str] = "ExperimentFinished"
    reason: str
    best_trial_id: str | None = None


@dataclass(frozen=True)
class SegmentReclaimed(Event):
    """The open segment ``start -> stop`` of ``trial_id`` changed owner.

    Written by a runner (or job-API worker) that found the segment's owner dead:
    its lease expired, it released its lease without finishing, or it was a
    process on the same host that no longer exists. The new owner runs the
    segment again; a late result from the previous owner is discarded.

    Attributes:
        owner: Identity of the new owner (``host/pid/token``).
        previous_owner: Owner it was taken from; None for a segment started
            before owners were recorded.
        reason: Why it was reclaimed (``lease expired``, ``process gone``...).
    """

    kind: ClassVar[str] = "SegmentReclaimed"
    coordination: ClassVar[bool] = True
    trial_id: str
    start: float
    stop: float
    owner: str
    previous_owner: str | None = None
    reason: str = ""


@dataclass(frozen=True)
class JobUpdated(Event):
    """Intermediate results a job-API worker pushed for its running job.

    Progress notes only: the segment's outcome is its ``SegmentFinished``.
    """

    kind: ClassVar[str] = "JobUpdated"
    coordination: ClassVar[bool] = True
    trial_id: str
    results: Mapping[str, Any]
    owner: str | None = None


@dataclass(frozen=True)
class ObservationImported(Event):
    """A result from outside this experiment, imported as prior knowledge (warm start).

    It is *not* a trial: it has no ``trial_id`` (so the projections, the
    budget and ``new_trial_id`` ignore it) and no scheduler ever runs,
    promotes or stops it. Schedulers that learn from results fold it into
    their searcher, their rung results or their surrogate (see
    :meth:`schedulers.base.Scheduler.tell`).

    Attributes:
        observation_id: Id unique within the experiment (``i0000``, ...),
            never of the ``t0000`` form trial ids take.
        source: Where it came from, e.g. ``optuna:sqlite:///old.db:study`` or
            ``experiment:digits-hb``; never contains a password.
        config: The configuration, already checked against this experiment's space.
        reports: ``{"resource": r, <metric>: value}`` per known point of the
            learning curve, in increasing resource.
        source_trial: The trial's id or number in the source.
        checkpoint: A checkpoint copied into this experiment's keys
            (``--with-checkpoints``); informational, imported observations are
            never resumed.
        info: Anything else worth keeping (source state, original params).
    """

    kind: ClassVar[str] = "ObservationImported"
    observation_id: str
    source: str
    config: Mapping[str, Any]
    reports: tuple[Mapping[str, Any], ...]
    source_trial: str | None = None
    checkpoint: CheckpointRef | None = None
    info: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ImportCompleted(Event):
    """A warm-start import from ``source`` is complete (written in the same append).

    Its presence in a log is what makes an import happen once: running the
    same command again finds it and imports nothing.

    Attributes:
        source: Same string as the observations' ``source``.
        imported: Observations imported.
        skipped: Source trials left out, per reason.
        dropped_params: Source parameters not in this space, per name (the
            trial is kept without them).
    """

    kind: ClassVar[str] = "ImportCompleted"
    source: str
    imported: int
    skipped: Mapping[str, int] = field(default_factory=dict)
    dropped_params: Mapping[str, int] = field(default_factory=dict)
    info: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class TrialRetried(Event):
    """A failed trial is given another attempt at its failed segment ``start -> stop``.

    The common fold turns the trial from ``failed`` back into ``paused`` (the
    ``SegmentStarted`` that follows makes it ``running``) and reopens a
    finished experiment, so the scheduler decides about the trial's result
    like any other.
    """

    kind: ClassVar[str] = "TrialRetried"
    trial_id: str
    start: float
    stop: float
    retries: int = 0
    info: Mapping[str, Any] = field(default_factory=dict)


EVENT_TYPES: dict[str, type[Event]] = {
    cls.kind: cls
    for cls in (
        ExperimentCreated,
        TrialCreated,
        SegmentStarted,
        SegmentFinished,
        SegmentFailed,
        TrialPaused,
        TrialStopped,
        TrialPerturbed,
        ExperimentFinished,
        SegmentReclaimed,
        JobUpdated,
        ObservationImported,
        ImportCompleted,
        TrialRetried,
    )
}

_CHECKPOINT_FIELDS = {"restore_from", "checkpoint"}


def _jsonable(value: Any) -> Any:
    """Turn tuples and numpy scalars into JSON values; keep NaN as ``None``.

    JSON has no NaN; storing NaN as null keeps PostgreSQL's JSON type happy and
    lets schedulers treat a missing metric and a NaN metric alike.
    """
    # Fast path for the exact builtin types nearly every payload holds (every
    # event appended is encoded on the flow's hot path); same values as below.
    kind = type(value)
    if kind is str or kind is int or kind is bool or value is None:
        return value
    if kind is float:
        return None if math.isnan(value) or math.isinf(value) else value
    if kind is dict:
        return {k if type(k) is str else str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return None if math.isnan(value) or math.isinf(value) else float(value)
    if hasattr(value, "item"):  # numpy scalar
        return _jsonable(value.item())
    raise TypeError(f"value {value!r} of type {type(value).__name__} is not JSON-serialisable")


#: Payload key holding the event's version; absent means 1.
VERSION_KEY = "_version"

Payload = dict[str, Any]
Upcaster = Callable[[Payload], Payload]

#: ``(kind, from_version) -> function`` lifting a payload to ``from_version + 1``.
_UPCASTERS: dict[tuple[str, int], Upcaster] = {}


class EventVersionError(ValueError):
    """A stored payload's version cannot be read by this code (too new, or no upcaster)."""


def upcaster(kind: str, from_version: int) -> Callable[[Upcaster], Upcaster]:
    """Register a function that lifts a ``kind`` payload from ``from_version`` by one.

    The function receives a copy of the payload's fields (without the version
    key) and returns the fields of version ``from_version + 1``. Upcasters
    chain: a v1 payload read by a v3 class goes through the v1 and the v2
    upcaster in that order. Example::

        @upcaster("TrialPaused", 1)
        def _rung_from_resource(payload):
            return {**payload, "rung": 0}

    Raises:
        ValueError: an upcaster for ``(kind, from_version)`` is already registered.
    """
    if isinstance(from_version, bool) or not isinstance(from_version, int) or from_version < 1:
        raise ValueError(f"from_version is {from_version!r}, but must be an integer >= 1")

    def register(fn: Upcaster) -> Upcaster:
        if (kind, from_version) in _UPCASTERS:
            raise ValueError(f"an upcaster for {kind} v{from_version} is already registered")
        _UPCASTERS[(kind, from_version)] = fn
        return fn

    return register


_FIELD_NAMES: dict[type[Event], tuple[str, ...]] = {}


def _field_names(cls: type[Event]) -> tuple[str, ...]:
    """The dataclass fields of ``cls`` (cached: every event appended or read asks)."""
    names = _FIELD_NAMES.get(cls)
    if names is None:
        names = _FIELD_NAMES[cls] = tuple(f.name for f in dataclasses.fields(cls))
    return names


def event_to_payload(event: Event) -> dict[str, Any]:
    """Serialise an event's fields (all but ``trial_id``) to a JSON object.

    Version-1 events carry no version key, so their payloads are exactly what
    rungflow wrote before events were versioned (and older code can read them).
    """
    payload: dict[str, Any] = {}
    for name in _field_names(type(event)):
        if name == "trial_id":
            continue
        value = getattr(event, name)
        if name in _CHECKPOINT_FIELDS:
            payload[name] = None if value is None else value.to_json()
        else:
            payload[name] = _jsonable(value)
    if event.version != 1:
        payload[VERSION_KEY] = event.version
    return payload


def _upcast(cls: type[Event], payload: Mapping[str, Any]) -> dict[str, Any]:
    """``payload``'s fields lifted to ``cls.version`` (a new dict; the input is not touched)."""
    fields = dict(payload)
    stored = fields.pop(VERSION_KEY, 1)
    if isinstance(stored, bool) or not isinstance(stored, int) or stored < 1:
        raise EventVersionError(
            f"event {cls.kind} has version {stored!r}, but it must be an integer >= 1"
        )
    if stored > cls.version:
        raise EventVersionError(
            f"event {cls.kind} was written as version {stored}, but this rungflow reads "
            f"versions up to {cls.version}: upgrade rungflow to read this log"
        )
    for version in range(stored, cls.version):
        step = _UPCASTERS.get((cls.kind, version))
        if step is None:
            raise EventVersionError(
                f"event {cls.kind} version {version} has no upcaster to version {version + 1}"
            )
        fields = dict(step(fields))
    return fields


def event_from_record(kind: str, trial_id: str | None, payload: Mapping[str, Any]) -> Event:
    """Rebuild an event from its stored ``(kind, trial_id, payload)``.

    The payload is first lifted to the class's current version (see the
    module docstring), then each field is checked against the class.

    Raises:
        EventVersionError: the payload is newer than this code, or an
            upcaster is missing (a :class:`ValueError`).
        ValueError: if ``kind`` is unknown or the payload does not fit it.
    """
    cls = EVENT_TYPES.get(kind)
    if cls is None:
        raise ValueError(f"unknown event kind {kind!r}; known: {sorted(EVENT_TYPES)}")
    kwargs: dict[str, Any] = {}
    names = _field_names(cls)
    for name, value in _upcast(cls, payload).items():
        if name not in names:
            raise ValueError(f"event {kind} has no field {name!r}")
        if name in _CHECKPOINT_FIELDS:
            kwargs[name] = CheckpointRef.from_json(value)
        elif name == "reports":
            kwargs[name] = tuple(value)
        else:
            kwargs[name] = value
    if "trial_id" in names:
        kwargs["trial_id"] = trial_id
    try:
        return cls(**kwargs)
    except TypeError as exc:
        raise ValueError(f"event {kind} payload does not fit: {exc}") from exc
