"""What every system adapter shares: the result trace and the method settings.

A *trace* is the list of every result a system saw, in the order it saw it:
``[cumulative_resource, trial_key, resource, value, config]``. The report
derives everything from traces with one rule for all systems (see
:func:`incumbent`), so no system is judged by its own notion of "best".
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Any

__all__ = ["ETA", "GRACE", "Recorder", "incumbent", "pbt_settings"]

#: Reduction factor and grace period of every successive-halving method.
ETA = 3
GRACE = 1


def pbt_settings(max_t: int, budget: int) -> dict[str, int]:
    """PBT gets a population that trains to ``max_t`` once within ``budget``."""
    return {
        "population_size": max(2, budget // max_t),
        "perturbation_interval": max(1, max_t // 9),
    }


class Recorder:
    """Thread-safe trace of results, one epoch of resource per result."""

    def __init__(self) -> None:
        self.rows: list[list[Any]] = []
        self.used = 0
        self._lock = threading.Lock()

    def __getstate__(self) -> dict[str, Any]:
        # Ray pickles callbacks into its experiment state; locks do not pickle.
        return {"rows": self.rows, "used": self.used}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    def add(
        self, trial_key: Any, resource: float, value: float, config: Mapping[str, Any],
        cost: float = 1.0,
    ) -> None:
        with self._lock:
            self.used += cost
            self.rows.append([self.used, str(trial_key), float(resource), float(value),
                              _plain(config)])


def _plain(config: Mapping[str, Any]) -> dict[str, Any]:
    out = {}
    for k, v in config.items():
        if hasattr(v, "item"):
            v = v.item()
        out[str(k)] = v
    return out


def incumbent(rows: list[list[Any]]) -> tuple[float, float, dict[str, Any]] | None:
    """The result a user would pick: highest resource first, then lowest value.

    This is rungflow's ``best_trial`` rule and what multi-fidelity users
    expect (a trial trained to ``max_t`` beats one culled at epoch 1 even if
    the latter's early value happens to be lower). Returns
    ``(resource, value, config)`` of the latest result of the chosen trial.
    """
    last: dict[str, list[Any]] = {}
    for row in rows:
        last[row[1]] = row
    best = None
    for row in last.values():
        key = (-row[2], row[3])
        if best is None or key < best[0]:
            best = (key, row)
    if best is None:
        return None
    row = best[1]
    return row[2], row[3], row[4]
