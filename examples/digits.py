"""scikit-learn digits with an MLP, one epoch per resource unit.

Registered as the trainable ``digits``. The model state travels in
checkpoints, so a promoted trial (or a PBT exploit) continues training instead
of starting over.
"""

from __future__ import annotations

import warnings
import zlib
from functools import lru_cache
from typing import Any

import numpy as np

from flows.trainable import SegmentContext, trainable


@lru_cache(maxsize=1)
def _data() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    x, y = load_digits(return_X_y=True)
    x = x / 16.0
    x_tr, x_va, y_tr, y_va = train_test_split(x, y, test_size=0.3, random_state=0, stratify=y)
    return x_tr, x_va, y_tr, y_va


def _model(config: dict[str, Any], seed: int) -> Any:
    from sklearn.neural_network import MLPClassifier

    return MLPClassifier(
        hidden_layer_sizes=(int(config.get("hidden", 32)),),
        learning_rate_init=float(config.get("lr", 1e-3)),
        alpha=float(config.get("alpha", 1e-4)),
        batch_size=int(config.get("batch_size", 64)),
        random_state=seed,
    )


@trainable("digits")
def train_digits(ctx: SegmentContext) -> None:
    """Train an MLPClassifier on digits from ``ctx.start`` to ``ctx.stop`` epochs.

    Reports ``error`` (validation error rate) and ``accuracy`` after each epoch.
    Learning-rate and regularisation changes from PBT take effect on restore.
    """
    x_tr, x_va, y_tr, y_va = _data()
    model = ctx.restore()
    if model is None:
        model = _model(dict(ctx.config), seed=zlib.crc32(ctx.trial_id.encode()))
    else:
        model.set_params(
            learning_rate_init=float(ctx.config.get("lr", model.learning_rate_init)),
            alpha=float(ctx.config.get("alpha", model.alpha)),
        )
    classes = np.arange(10)
    epoch = int(ctx.start)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        while epoch < ctx.stop:
            model.partial_fit(x_tr, y_tr, classes=classes)
            epoch += 1
            accuracy = float(model.score(x_va, y_va))
            ctx.report(min(epoch, ctx.stop), error=1.0 - accuracy, accuracy=accuracy)
    ctx.save(model)
