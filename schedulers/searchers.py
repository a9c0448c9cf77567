"""Searchers decide *what* to try; schedulers decide *when* and *how far*.

A searcher proposes configurations and learns from observations. Like the
schedulers it is deterministic given its inputs: ``suggest`` receives the
scheduler's per-decision generator, and ``observe`` is a fold, so a replayed log
leaves a searcher in exactly the state it had.

Scores follow the scheduler's convention: lower is better.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from typing import Any

import numpy as np

from schedulers.space import SearchSpace

__all__ = ["RandomSearcher", "Searcher"]


class Searcher(ABC):
    """Proposes configurations from a :class:`SearchSpace`.

    Args:
        space: The search space.
    """

    name: str = "base"

    def __init__(self, space: SearchSpace) -> None:
        self.space = space

    @abstractmethod
    def suggest(self, trial_id: str, rng: np.random.Generator) -> dict[str, Any]:
        """A configuration for the new trial ``trial_id``. Must not change state."""

    def observe(  # noqa: B027 - optional: searchers that don't learn ignore results
        self, trial_id: str, config: Mapping[str, Any], resource: float, score: float
    ) -> None:
        """Fold one result: ``trial_id`` scored ``score`` (lower is better) at ``resource``."""

    def observe_failure(self, trial_id: str) -> None:  # noqa: B027 - optional, as above
        """Fold the failure of ``trial_id``."""


class RandomSearcher(Searcher):
    """Independent uniform draws from the space (optuna RandomSampler's law)."""

    name = "random"

    def suggest(self, trial_id: str, rng: np.random.Generator) -> dict[str, Any]:
        return self.space.sample(rng)
