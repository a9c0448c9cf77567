"""The version a runner's snapshot must carry to be used (see :mod:`storage.snapshots`).

Computed here, not in storage, because it fingerprints the scheduler package
and the numerical stack, which storage does not import.
"""

from __future__ import annotations

import hashlib
import json
import pickle
from collections.abc import Mapping
from functools import cache
from pathlib import Path
from typing import Any

import numpy
import optuna

import schedulers
from storage.snapshots import FORMAT

__all__ = ["runner_state_version", "schedulers_fingerprint", "snapshot_version"]

# Layout of what ExperimentRunner._snapshot_state stores; bump when it changes.
_STATE_FORMAT = 1
# Spec fields ExperimentSpec.build_scheduler reads.
_SCHEDULER_FIELDS = ("scheduler", "scheduler_args", "space", "metric", "mode", "seed", "budget")


@cache
def schedulers_fingerprint() -> str:
    """sha256 of the ``schedulers`` package source (every ``.py``, by relative path)."""
    root = Path(schedulers.__file__).resolve().parent
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        digest.update(path.relative_to(root).as_posix().encode())
        digest.update(b"\0")
        digest.update(path.read_bytes())
        digest.update(b"\0")
    return digest.hexdigest()


def snapshot_version(key: str) -> str:
    """The version a snapshot must carry to be used by this code for ``key``.

    Any change to the scheduler package's source, the snapshot format, the
    pickle protocol or the numpy/optuna versions gives another version, so old
    snapshots are ignored (full fold), never trusted.

    Args:
        key: What else the state depends on: the spec fields the scheduler
            was built from (a resumed run with another budget must not reuse it).
    """
    digest = hashlib.sha256()
    for part in (
        f"format={FORMAT}",
        f"pickle={pickle.HIGHEST_PROTOCOL}",
        f"numpy={numpy.__version__}",
        f"optuna={optuna.__version__}",
        f"schedulers={schedulers_fingerprint()}",
        key,
    ):
        digest.update(part.encode())
        digest.update(b"\0")
    return digest.hexdigest()[:40]


def runner_state_version(spec_json: Mapping[str, Any]) -> str:
    """The version of a runner's snapshots, from its spec's JSON (``ExperimentSpec.to_json``).

    What the folded state depends on besides the log: the scheduler's
    construction (a resume may change the budget) and the state's layout.
    Readers holding only the stored spec's JSON (``status``) compute it
    without validating the spec; a stored document that differs from its
    re-validated form only gives another version, i.e. no snapshot found.
    """
    built = {k: v for k, v in spec_json.items() if k in _SCHEDULER_FIELDS}
    return snapshot_version(
        json.dumps(built, sort_keys=True, default=str) + f"|runner={_STATE_FORMAT}"
    )
