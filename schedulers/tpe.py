"""A BOHB-style searcher: optuna's TPESampler fitted on one fidelity's results.

BOHB (Falkner et al., 2018) fits its density model on the observations of the
*highest* resource that already has enough of them, so the model improves as
rungs fill up while the scheduler (HyperBand or ASHA) decides how far each
trial trains. Here the model is optuna's :class:`~optuna.samplers.TPESampler`.

Determinism: every :meth:`TPESearcher.suggest` builds a fresh in-memory study
from the folded observations and a sampler seeded from the scheduler's
per-decision generator. Nothing carries over between calls, so a replayed log
suggests exactly what the original run did.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from contextlib import contextmanager
from typing import Any

import numpy as np
import optuna
from optuna.distributions import BaseDistribution
from optuna.samplers import TPESampler
from optuna.trial import FrozenTrial, create_trial

from schedulers.searchers import Searcher
from schedulers.space import SearchSpace
from schedulers.validation import check_int, check_number

__all__ = ["TPESearcher"]


@contextmanager
def _quiet_optuna() -> Any:
    # Study creation logs at INFO and multivariate TPE warns that it is
    # experimental; neither means anything to a rungflow user. The previous
    # verbosity is restored so the host program keeps its own settings.
    previous = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            yield
    finally:
        optuna.logging.set_verbosity(previous)


class TPESearcher(Searcher):
    """TPE on the highest rung with enough observations (BOHB's model choice).

    Args:
        space: The search space (optuna distributions: float, int, log, step,
            categorical are all handled by TPESampler).
        min_points: Observations a resource level needs before the model is
            fitted on it. Default ``max(len(space) + 1, 5)`` (BOHB uses d + 1;
            5 keeps TPE's good/bad split meaningful in small spaces).
        max_observations: Cap on the observations fed to TPE: the most recent
            ones at the chosen resource. Refitting costs O(cap) per suggestion,
            so the cap bounds decision latency (about 5 ms at 128 points).
        random_fraction: Share of suggestions drawn uniformly at random even
            when a model exists (BOHB's default 1/3), which keeps exploring.
        multivariate: Use multivariate TPE (closer to BOHB's joint KDE).

    Example:
        >>> import numpy as np
        >>> from schedulers import SearchSpace
        >>> space = SearchSpace.parse({"x": {"type": "float", "low": 0, "high": 1}})
        >>> s = TPESearcher(space, min_points=3, random_fraction=0.0)
        >>> for i, x in enumerate([0.1, 0.5, 0.9, 0.2]):
        ...     s.observe(f"t{i}", {"x": x}, 1, abs(x - 0.15))
        >>> s.model_resource()
        1.0
        >>> 0 <= s.suggest("t4", np.random.default_rng(0))["x"] <= 1
        True
    """

    name = "tpe"

    def __init__(
        self,
        space: SearchSpace,
        *,
        min_points: int | None = None,
        max_observations: int = 128,
        random_fraction: float = 1 / 3,
        multivariate: bool = True,
    ) -> None:
        super().__init__(space)
        if min_points is None:
            min_points = max(len(space) + 1, 5)
        check_int("searcher_args.min_points", min_points, 2)
        # max_observations >= min_points: the model must be allowed the points it needs.
        check_int("searcher_args.max_observations", max_observations, min_points)
        check_number("searcher_args.random_fraction", random_fraction, low=0, high=1)
        self.min_points = min_points
        self.max_observations = max_observations
        self.random_fraction = float(random_fraction)
        self.multivariate = bool(multivariate)
        self._distributions: dict[str, BaseDistribution] = dict(space.items())
        # resource -> trial_id -> frozen trial; dicts keep insertion order, so
        # "most recent" is well defined and identical on replay.
        self._obs: dict[float, dict[str, FrozenTrial]] = {}
        # Resources that reached min_points, in increasing order of resource.
        self._ready: list[float] = []

    def observe(
        self, trial_id: str, config: Mapping[str, Any], resource: float, score: float
    ) -> None:
        try:
            frozen = create_trial(
                params={k: config[k] for k in self._distributions},
                distributions=self._distributions,
                value=float(score),
            )
        except (KeyError, ValueError):
            # A config outside the space (e.g. a hand-made trial) cannot inform TPE.
            return
        level = self._obs.setdefault(float(resource), {})
        level.pop(trial_id, None)
        level[trial_id] = frozen
        if len(level) == self.min_points and float(resource) not in self._ready:
            self._ready.append(float(resource))
            self._ready.sort()

    def model_resource(self) -> float | None:
        """The resource whose observations the model uses (None: still random)."""
        return self._ready[-1] if self._ready else None

    def suggest(self, trial_id: str, rng: np.random.Generator) -> dict[str, Any]:
        # Both draws happen on every call so the generator is consumed the same
        # way whichever branch is taken.
        explore = rng.random() < self.random_fraction
        seed = int(rng.integers(2**31))
        resource = self.model_resource()
        if resource is None or explore:
            return self.space.sample(rng)
        trials = list(self._obs[resource].values())[-self.max_observations :]
        with _quiet_optuna():
            sampler = TPESampler(
                seed=seed, n_startup_trials=0, multivariate=self.multivariate
            )
            study = optuna.create_study(direction="minimize", sampler=sampler)
            study.add_trials(trials)
            params = study.ask(self._distributions).params
        return {name: params[name] for name in self._distributions}
