"""Versioned snapshots of folded state: resume = latest snapshot + the log's tail.

A snapshot is a cache of ``fold(log[1..seq])`` and nothing more: the log stays
the truth. Because the log is append-only, a snapshot taken at ``seq`` stays
valid for ever, whenever it is written, so writing one needs no coordination
with appends: it is saved in its own short transaction, and of two runners
saving one the newer ``seq`` wins.

Trust. Stored bytes must never choose code to run, so snapshots are pickles
read by :class:`RestrictedUnpickler`, whose ``find_class`` only resolves
classes of the scheduler package, numpy, ``optuna.distributions`` and a few
builtins. A snapshot is also only used if its *version* matches the reader's
exactly (:func:`flows.engine.snapshots.snapshot_version`): the version
hashes the format, the source of the ``schedulers`` package, the numpy/optuna
versions and the spec the scheduler was built from. Any code change therefore
invalidates old snapshots automatically: they are ignored (full fold), never
trusted. A snapshot that fails to load for any reason is ignored the same way.
"""

from __future__ import annotations

import gc
import io
import logging
import pickle
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from storage.models import SNAPSHOTS as _SNAPSHOTS

__all__ = [
    "FORMAT",
    "RestrictedUnpickler",
    "Snapshot",
    "UnsafeSnapshotError",
    "delete_snapshots",
    "dumps",
    "gc_paused",
    "load_snapshot",
    "loads",
    "save_snapshot",
]

log = logging.getLogger("rungflow")

#: Bump when the layout of what callers put in a snapshot changes.
FORMAT = 1

# What a snapshot may name: the scheduler package's classes (pure state), the
# numpy pieces arrays, scalars and generators pickle through, optuna's
# distributions, and plain builtins. Functions are allowed only where listed;
# anything else (eval, os.system, functools.partial, numpy.memmap...) is refused.
_ALLOWED_MODULES = ("schedulers", "optuna.distributions")
_ALLOWED_FUNCTIONS = {
    ("copyreg", "_reconstructor"),
    ("_codecs", "encode"),
    *(
        (module, name)
        for module in ("numpy.core.multiarray", "numpy._core.multiarray")
        for name in ("_reconstruct", "scalar")
    ),
    ("numpy.core.numeric", "_frombuffer"),
    ("numpy._core.numeric", "_frombuffer"),
    ("numpy.random._pickle", "__generator_ctor"),
    ("numpy.random._pickle", "__bit_generator_ctor"),
    ("numpy.random._pickle", "__randomstate_ctor"),
}
_ALLOWED_TYPES = {
    ("builtins", name)
    for name in (
        "dict", "list", "tuple", "set", "frozenset", "int", "float", "complex", "str",
        "bytes", "bytearray", "bool", "slice", "range", "object",
    )
} | {
    ("collections", "OrderedDict"),
    ("collections", "defaultdict"),
    ("collections", "deque"),
    ("collections", "Counter"),
    ("datetime", "datetime"),
    ("datetime", "timezone"),
    ("datetime", "timedelta"),
    ("fractions", "Fraction"),
    ("decimal", "Decimal"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
}


class UnsafeSnapshotError(pickle.UnpicklingError):
    """The snapshot names a class outside the allow-list; it is not loaded."""


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that only resolves allow-listed names (see the module doc)."""

    def find_class(self, module: str, name: str) -> Any:
        key = (module, name)
        if key in _ALLOWED_FUNCTIONS or key in _ALLOWED_TYPES:
            return super().find_class(module, name)
        if module in _ALLOWED_MODULES or module.startswith(
            tuple(m + "." for m in _ALLOWED_MODULES)
        ) or module == "numpy" or module == "numpy.dtypes":
            found = super().find_class(module, name)
            if isinstance(found, type) and not name.startswith("__"):
                numpy = sys.modules["numpy"]  # find_class above imported it
                # numpy's module namespace holds types that touch files (memmap):
                # only dtypes and scalar types are state.
                if module not in ("numpy", "numpy.dtypes") or issubclass(
                    found, (numpy.generic, numpy.dtype)
                ):
                    return found
        raise UnsafeSnapshotError(f"snapshot refers to {module}.{name}, which is not allowed")


def dumps(state: Any) -> bytes:
    """Pickle ``state`` (highest protocol)."""
    return pickle.dumps(state, protocol=pickle.HIGHEST_PROTOCOL)


@contextmanager
def gc_paused() -> Iterator[None]:
    """No cyclic garbage collection inside the block (restored afterwards).

    Building hundreds of thousands of containers that all stay alive (an
    unpickled scheduler, decoded events, JSON rows) triggers a collection
    every 700 allocations, each walking the ever larger young heap and
    every tenth one the whole heap: a third or more of the time spent.
    Nothing built here is garbage, so nothing is lost by waiting.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def loads(data: bytes) -> Any:
    """Unpickle with :class:`RestrictedUnpickler` (collector paused, see :func:`gc_paused`).

    Raises:
        UnsafeSnapshotError: a class outside the allow-list.
    """
    with gc_paused():
        return RestrictedUnpickler(io.BytesIO(data)).load()


@dataclass(frozen=True)
class Snapshot:
    """A stored snapshot: the state after folding events ``1..seq``."""

    experiment: str
    seq: int
    version: str
    state: bytes
    taken_at: datetime


def save_snapshot(engine: sa.Engine, experiment: str, seq: int, version: str,
                  state: bytes) -> bool:
    """Store the snapshot of ``experiment`` at ``seq`` unless a newer one exists.

    One row per (experiment, version); rows of other versions older than
    ``seq`` are deleted (they can only be used by other code). Returns whether
    the row was written.
    """
    s = _SNAPSHOTS.c
    now = datetime.now(UTC)
    try:
        with engine.begin() as conn:
            updated = conn.execute(
                sa.update(_SNAPSHOTS)
                .where(s.experiment_id == experiment, s.version == version, s.seq < seq)
                .values(seq=seq, state=state, taken_at=now)
            ).rowcount
            if not updated:
                exists = conn.execute(
                    sa.select(s.seq).where(s.experiment_id == experiment, s.version == version)
                ).first()
                if exists is not None:
                    return False  # another runner saved a newer (or the same) one
                conn.execute(
                    sa.insert(_SNAPSHOTS).values(
                        experiment_id=experiment, version=version, seq=seq, state=state,
                        taken_at=now,
                    )
                )
            conn.execute(
                sa.delete(_SNAPSHOTS).where(
                    s.experiment_id == experiment, s.version != version, s.seq < seq
                )
            )
    except IntegrityError:
        return False  # a racing runner inserted first, or the experiment is gone
    return True


def load_snapshot(engine: sa.Engine, experiment: str, version: str) -> Snapshot | None:
    """The snapshot of ``experiment`` with exactly ``version``; None if there is none."""
    s = _SNAPSHOTS.c
    stmt = sa.select(s.seq, s.state, s.taken_at).where(
        s.experiment_id == experiment, s.version == version
    )
    with engine.connect() as conn:
        row = conn.execute(stmt).first()
    if row is None:
        return None
    return Snapshot(experiment, int(row.seq), version, bytes(row.state), row.taken_at)


def delete_snapshots(conn: sa.Connection, experiment: str) -> None:
    """Drop every snapshot of ``experiment`` (inside the caller's transaction)."""
    conn.execute(sa.delete(_SNAPSHOTS).where(_SNAPSHOTS.c.experiment_id == experiment))
