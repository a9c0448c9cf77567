"""Scheduler names used in specs, mapped to their classes.

Imports are lazy so that naming one scheduler does not import the numerical
stack of another (DyHPO's GP, for instance). The table is fixed in code: an
experiment spec chooses a *name*, never an import path.
"""

from __future__ import annotations

import importlib
from typing import Any

from schedulers.base import Scheduler

__all__ = ["SCHEDULERS", "create_scheduler", "scheduler_class"]

SCHEDULERS: dict[str, tuple[str, str]] = {
    "random": ("schedulers.random_search", "RandomScheduler"),
    "fifo": ("schedulers.random_search", "FIFOScheduler"),
    "hyperband": ("schedulers.hyperband", "HyperBandScheduler"),
    "asha": ("schedulers.asha", "ASHAScheduler"),
    "pbt": ("schedulers.pbt", "PopulationBasedTraining"),
    "pbt_replay": ("schedulers.pbt_replay", "PBTReplay"),
    "dyhpo": ("schedulers.dyhpo", "DyHPOScheduler"),
}


def scheduler_class(name: str) -> type[Scheduler]:
    """The class registered as ``name``.

    Raises:
        ValueError: if ``name`` is not a registered scheduler.
    """
    if name not in SCHEDULERS:
        raise ValueError(f"scheduler is {name!r}, but must be one of {sorted(SCHEDULERS)}")
    module, attr = SCHEDULERS[name]
    cls = getattr(importlib.import_module(module), attr)
    assert issubclass(cls, Scheduler)
    return cls


def create_scheduler(name: str, **kwargs: Any) -> Scheduler:
    """Instantiate scheduler ``name`` with keyword arguments (validated by the class)."""
    return scheduler_class(name)(**kwargs)
