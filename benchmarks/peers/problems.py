"""The two problems every system is run on, as pure segment objectives.

Each problem is an ``objective(config, start, stop, state) -> (reports, state)``
(the :data:`schedulers.simulate.Objective` shape): rungflow drives it through
``schedulers.simulate`` or, wrapped with ``flows.trainable.objective_trainable``,
through its real flow; the peers' adapters call the same function one epoch at a
time. So every system trains exactly the same thing, and one "resource unit" is
one epoch everywhere.

* ``synthetic``: ``examples/synthetic.py`` (crossing learning curves, known
  optimum); regret is exact.
* ``digits``: scikit-learn's digits with the MLP of ``examples/digits.py``,
  one ``partial_fit`` pass per epoch; the model is the state. There is no known
  optimum, so regret is measured against the best validation error any system
  reached in the same benchmark run (an empirical optimum, see ``report.py``).
"""

from __future__ import annotations

import copy
import json
import math
import warnings
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from examples import synthetic
from schedulers.space import SearchSpace

__all__ = ["PROBLEMS", "Problem", "digits_objective", "synthetic_objective"]


@dataclass(frozen=True)
class Problem:
    """A benchmark problem.

    Attributes:
        name: Short name used in the report.
        space: The rungflow search space (optuna distributions); the peers'
            adapters translate it.
        metric: Reported metric, minimised.
        max_t: Epochs of a full training (R).
        budget: Total epochs each system may spend per seed (full mode).
        quick_budget: The same in ``--quick`` mode.
        known_optimum: Value of the best possible result, or None (digits).
    """

    name: str
    space: SearchSpace
    metric: str
    max_t: int
    budget: int
    quick_budget: int
    known_optimum: float | None

    def objective(
        self, config: Mapping[str, Any], start: float, stop: float, state: Any
    ) -> tuple[Sequence[Mapping[str, Any]], Any]:
        return OBJECTIVES[self.name](config, start, stop, state)


def synthetic_objective(
    config: Mapping[str, Any], start: float, stop: float, state: Any
) -> tuple[Sequence[Mapping[str, Any]], Any]:
    """``examples.synthetic.objective``: one report of ``loss`` per epoch."""
    return synthetic.objective(config, start, stop, state)


def _digits_data() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    from examples.digits import _data

    return _data()


def _config_seed(config: Mapping[str, Any]) -> int:
    # Same config, same initial weights, whichever system asked for it.
    return zlib.crc32(json.dumps(dict(config), sort_keys=True, default=str).encode())


def digits_objective(
    config: Mapping[str, Any], start: float, stop: float, state: Any
) -> tuple[Sequence[Mapping[str, Any]], Any]:
    """Train the digits MLP from ``start`` to ``stop`` epochs; report ``error``.

    ``state`` is the model of the segment restored from. It is deep-copied first:
    in-memory drivers hand the same object to a PBT exploiter and keep it as the
    donor's checkpoint, which must not change under the donor's feet.
    """
    from sklearn.neural_network import MLPClassifier

    x_tr, x_va, y_tr, y_va = _digits_data()
    lr = float(config["lr"])
    if state is None:
        model = MLPClassifier(
            hidden_layer_sizes=(int(config["hidden"]),),
            learning_rate_init=lr,
            alpha=float(config["alpha"]),
            batch_size=64,
            random_state=_config_seed(config) % (2**31),
        )
    else:
        model = copy.deepcopy(state)
        model.set_params(learning_rate_init=lr, alpha=float(config["alpha"]))
        # partial_fit keeps the optimizer of the first call; a PBT explore of
        # lr must reach it or the mutation would be a no-op.
        optimizer = getattr(model, "_optimizer", None)
        if optimizer is not None:
            optimizer.learning_rate_init = lr
            optimizer.learning_rate = lr
    reports = []
    classes = np.arange(10)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for epoch in range(math.floor(start) + 1, math.ceil(stop) + 1):
            model.partial_fit(x_tr, y_tr, classes=classes)
            error = 1.0 - float(model.score(x_va, y_va))
            reports.append({"resource": float(epoch), "error": error})
    return reports, model


OBJECTIVES = {"synthetic": synthetic_objective, "digits": digits_objective}

DIGITS_SPACE = SearchSpace.parse(
    {
        "lr": {"type": "float", "low": 0.0001, "high": 0.1, "log": True},
        "hidden": {"type": "int", "low": 16, "high": 128, "step": 16},
        "alpha": {"type": "float", "low": 0.000001, "high": 0.01, "log": True},
    }
)

PROBLEMS: dict[str, Problem] = {
    # 10 full trainings' worth of epochs: enough for ASHA to see ~270 trials.
    # Quick mode: 4, the least that fits HyperBand's largest bracket (297).
    "synthetic": Problem(
        "synthetic", synthetic.SPACE, "loss", synthetic.MAX_T, 810, 324,
        synthetic.optimum(synthetic.MAX_T),
    ),
    # R = 27 epochs; 10 full trainings, as for synthetic.
    "digits": Problem("digits", DIGITS_SPACE, "error", 27, 270, 81, None),
}
