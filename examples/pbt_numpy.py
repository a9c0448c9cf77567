"""Population Based Training of a two-layer numpy MLP (no PyTorch, no scikit-learn).

The model classifies two interleaved spirals, a problem a linear model cannot
solve. It is trained by minibatch SGD with momentum and L2 weight decay; PBT
tunes ``lr``, ``momentum`` and ``weight_decay`` *during* training. The
checkpoint holds the weights **and** the momentum buffers, so a member that
exploits a better one continues that member's optimisation exactly, with its
own freshly explored hyperparameters.

Registered as the trainable ``pbt-numpy``; run it with
``rungflow run --example pbt-numpy`` (spec: ``examples/pbt-numpy.yaml``).
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from functools import cache
from typing import Any

import numpy as np

from flows.trainable import SegmentContext, trainable

__all__ = ["Model", "evaluate", "make_model", "spirals", "train_epoch", "train_pbt_numpy"]

#: Hidden units of the MLP.
HIDDEN = 32
#: Minibatch size of SGD.
BATCH = 32
#: Half-turns of each spiral arm (2 = one full turn): harder as it grows.
TURNS = 2.0


@cache
def spirals(n: int = 800, noise: float = 0.15, seed: int = 0) -> tuple[np.ndarray, ...]:
    """Two interleaved spirals: ``(x_train, y_train, x_val, y_val)``, 2-D inputs, labels 0/1.

    Generated from a fixed seed, so every member sees the same data.
    """
    rng = np.random.default_rng(seed)
    t = np.sqrt(rng.uniform(0.05, 1.0, size=n)) * TURNS * np.pi
    arm = rng.integers(0, 2, size=n)
    sign = np.where(arm == 0, 1.0, -1.0)
    x = np.stack([sign * t * np.cos(t), sign * t * np.sin(t)], axis=1) / (TURNS * np.pi)
    x += rng.normal(scale=noise / 3.0, size=x.shape)
    split = int(0.7 * n)
    return x[:split], arm[:split], x[split:], arm[split:]


@dataclass
class Model:
    """Weights of ``x -> tanh(x W1 + b1) W2 + b2 -> sigmoid`` and their momentum buffers."""

    w1: np.ndarray
    b1: np.ndarray
    w2: np.ndarray
    b2: np.ndarray
    velocity: list[np.ndarray]
    epochs: int = 0

    @property
    def params(self) -> list[np.ndarray]:
        return [self.w1, self.b1, self.w2, self.b2]


def make_model(seed: int) -> Model:
    """Fresh weights (Glorot-scaled) and zero momentum."""
    rng = np.random.default_rng(seed)
    w1 = rng.normal(scale=np.sqrt(2.0 / (2 + HIDDEN)), size=(2, HIDDEN))
    w2 = rng.normal(scale=np.sqrt(2.0 / (HIDDEN + 1)), size=(HIDDEN, 1))
    params = [w1, np.zeros(HIDDEN), w2, np.zeros(1)]
    return Model(*params, velocity=[np.zeros_like(p) for p in params])


def _forward(model: Model, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    hidden = np.tanh(x @ model.w1 + model.b1)
    logits = (hidden @ model.w2 + model.b2)[:, 0]
    return hidden, logits


def evaluate(model: Model, x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """``(log_loss, error_rate)`` of ``model`` on ``(x, y)``."""
    _, logits = _forward(model, x)
    # log(1 + exp(-z)) for the true class, computed stably.
    z = np.where(y == 1, logits, -logits)
    loss = float(np.mean(np.logaddexp(0.0, -z)))
    error = float(np.mean((logits > 0).astype(int) != y))
    return loss, error


def train_epoch(
    model: Model, x: np.ndarray, y: np.ndarray, *, lr: float, momentum: float,
    weight_decay: float, rng: np.random.Generator,
) -> None:
    """One pass of minibatch SGD with momentum and L2 weight decay, in place."""
    order = rng.permutation(len(x))
    for start in range(0, len(x), BATCH):
        idx = order[start : start + BATCH]
        xb, yb = x[idx], y[idx]
        hidden, logits = _forward(model, xb)
        # d(log loss)/d(logits) = sigmoid(logits) - y, averaged over the batch.
        g_logits = (1.0 / (1.0 + np.exp(-logits)) - yb)[:, None] / len(xb)
        g_w2 = hidden.T @ g_logits
        g_b2 = g_logits.sum(axis=0)
        g_hidden = (g_logits @ model.w2.T) * (1.0 - hidden**2)
        g_w1 = xb.T @ g_hidden
        g_b1 = g_hidden.sum(axis=0)
        grads = [g_w1, g_b1, g_w2, g_b2]
        for p, g, v in zip(model.params, grads, model.velocity, strict=True):
            g = g + weight_decay * p
            v *= momentum
            v -= lr * g
            p += v
    model.epochs += 1


@trainable("pbt-numpy")
def train_pbt_numpy(ctx: SegmentContext) -> None:
    """Train from ``ctx.start`` to ``ctx.stop`` epochs; report ``error`` and ``loss`` each epoch.

    ``ctx.restore()`` is this member's own checkpoint or, after a PBT exploit,
    the donor's: either way training continues from those weights and momentum
    buffers with the (possibly explored) hyperparameters in ``ctx.config``.
    """
    x_tr, y_tr, x_va, y_va = spirals()
    model: Model | None = ctx.restore()
    if model is None:
        model = make_model(seed=zlib.crc32(ctx.trial_id.encode()))
    # A per-segment generator: reproducible shuffles without a global RNG.
    rng = np.random.default_rng([zlib.crc32(ctx.trial_id.encode()), int(ctx.start)])
    config: dict[str, Any] = dict(ctx.config)
    epoch = int(ctx.start)
    while epoch < ctx.stop:
        train_epoch(
            model, x_tr, y_tr, lr=float(config["lr"]), momentum=float(config["momentum"]),
            weight_decay=float(config["weight_decay"]), rng=rng,
        )
        epoch += 1
        loss, error = evaluate(model, x_va, y_va)
        ctx.report(epoch, error=error, loss=loss)
    ctx.save(model)
