"""A deep-kernel GP for DyHPO, in numpy/scipy.

Wistuba, Kadra and Grabocka (NeurIPS 2022) model the learning curve with a
Gaussian process whose kernel acts on learned features: a small network maps
(configuration, budget, learning curve so far) to a feature vector ``phi``,
and a squared-exponential kernel on ``phi`` gives the GP. The network and the
GP hyperparameters are trained together by maximising the log marginal
likelihood. This module is that model with a one-hidden-layer MLP as the
feature network (the paper uses a 2-layer MLP and a 1-D convolution over the
curve; here the curve enters as its last ``L`` points, see
:mod:`schedulers.dyhpo`), next to a linear skip path of the scaled inputs::

    h   = tanh(x W1 + b1)                        # x: inputs, shape (n, d_in)
    phi = [x / ls, h W2 + b2]                    # features, d_in + d_out columns
    k(i, j) = signal * exp(-|phi_i - phi_j|^2 / 2) + noise * [i == j]

The skip path (one lengthscale per input) makes an ARD squared-exponential GP
the special case of a zero network, so on a few dozen points, where the
weight penalty keeps the network small, the model is no worse than a plain
GP; with more data the network learns what the curve says about the
future. The network's lengthscale is folded into ``W2``. Training minimises the negative log
marginal likelihood of standardised targets plus an L2 penalty on the weights
(``weight_decay``, a Gaussian prior that keeps a fit on a few dozen points from
memorising them), with hand-written backpropagation and
``scipy.optimize.minimize(method="L-BFGS-B")``, warm-started from the last fit.

Parameters are plain floats in :class:`DKGPParams` (JSON round-trip exact
after :meth:`DKGPParams.rounded`), so a scheduler can record a fit in its
decision event and rebuild the identical posterior on replay without training.
Numerical failures raise :class:`schedulers.gp.GPError`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.linalg import cho_solve, solve_triangular
from scipy.optimize import minimize

from schedulers.gp import GPError, _cholesky, _training_data, standardise

__all__ = ["DKGPParams", "DeepKernelGP", "fit_dkgp", "nll_and_grad"]

SIGNAL_BOUNDS = (0.05, 20.0)
NOISE_BOUNDS = (1e-4, 1.0)
WEIGHT_BOUND = 8.0
LENGTHSCALE_BOUNDS = (0.01, 50.0)


@dataclass(frozen=True)
class DKGPParams:
    """Feature-network weights and GP hyperparameters.

    Attributes:
        n_in: Input width ``d_in``.
        hidden: Hidden units.
        n_out: Feature width ``d_out``.
        weights: ``W1`` (row-major, ``n_in x hidden``), ``b1``, ``W2``
            (``hidden x n_out``), ``b2``, flattened.
        lengthscales: One per input, of the skip path.
        signal: Signal variance of the kernel on features.
        noise: Observation-noise variance (targets are standardised).
    """

    n_in: int
    hidden: int
    n_out: int
    weights: tuple[float, ...]
    lengthscales: tuple[float, ...]
    signal: float
    noise: float

    @staticmethod
    def n_weights(n_in: int, hidden: int, n_out: int) -> int:
        return n_in * hidden + hidden + hidden * n_out + n_out

    def unpack(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        return _unpack(np.asarray(self.weights, dtype=float), self.n_in, self.hidden, self.n_out)

    def to_vector(self) -> np.ndarray:
        """``[weights..., log lengthscales..., log signal, log noise]``."""
        return np.concatenate(
            [
                np.asarray(self.weights, dtype=float),
                np.log(np.asarray(self.lengthscales, dtype=float)),
                [math.log(self.signal), math.log(self.noise)],
            ]
        )

    @classmethod
    def from_vector(cls, theta: np.ndarray, n_in: int, hidden: int, n_out: int) -> DKGPParams:
        n_w = cls.n_weights(n_in, hidden, n_out)
        return cls(
            n_in,
            hidden,
            n_out,
            tuple(float(v) for v in theta[:n_w]),
            tuple(float(math.exp(v)) for v in theta[n_w : n_w + n_in]),
            float(math.exp(theta[-2])),
            float(math.exp(theta[-1])),
        )

    @classmethod
    def initial(cls, n_in: int, hidden: int, n_out: int, rng: np.random.Generator) -> DKGPParams:
        """Glorot-scaled random weights, signal 1, noise 0.05."""
        w1 = rng.normal(0.0, 1.0 / math.sqrt(n_in), size=(n_in, hidden))
        b1 = rng.normal(0.0, 0.1, size=hidden)
        w2 = rng.normal(0.0, 1.0 / math.sqrt(hidden), size=(hidden, n_out))
        b2 = np.zeros(n_out)
        flat = np.concatenate([w1.ravel(), b1, w2.ravel(), b2])
        ls = (math.sqrt(n_in),) * n_in
        return cls(n_in, hidden, n_out, tuple(float(v) for v in flat), ls, 1.0, 0.05)

    def rounded(self, digits: int = 5) -> DKGPParams:
        """Parameters rounded to ``digits`` significant digits (small, JSON-exact)."""

        def r(x: float) -> float:
            return float(f"{x:.{digits}g}")

        return DKGPParams(
            self.n_in,
            self.hidden,
            self.n_out,
            tuple(r(v) for v in self.weights),
            tuple(r(v) for v in self.lengthscales),
            r(self.signal),
            r(self.noise),
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "shape": [self.n_in, self.hidden, self.n_out],
            "w": list(self.weights),
            "ls": list(self.lengthscales),
            "signal": self.signal,
            "noise": self.noise,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> DKGPParams:
        n_in, hidden, n_out = (int(v) for v in data["shape"])
        weights = tuple(float(v) for v in data["w"])
        ls = tuple(float(v) for v in data["ls"])
        if len(weights) != cls.n_weights(n_in, hidden, n_out) or len(ls) != n_in:
            raise ValueError("weights do not match the shape")
        return cls(n_in, hidden, n_out, weights, ls, float(data["signal"]), float(data["noise"]))


def _unpack(
    w: np.ndarray, n_in: int, hidden: int, n_out: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    i = n_in * hidden
    w1 = w[:i].reshape(n_in, hidden)
    b1 = w[i : i + hidden]
    i += hidden
    w2 = w[i : i + hidden * n_out].reshape(hidden, n_out)
    b2 = w[i + hidden * n_out : i + hidden * n_out + n_out]
    return w1, b1, w2, b2


def _features(
    x: np.ndarray,
    ls: np.ndarray,
    w1: np.ndarray,
    b1: np.ndarray,
    w2: np.ndarray,
    b2: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Hidden activations and features ``[x / ls, tanh(x W1 + b1) W2 + b2]``."""
    h = np.tanh(x @ w1 + b1)
    return h, np.hstack([x / ls, h @ w2 + b2])


def _sqdist(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    d = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2.0 * a @ b.T
    return np.maximum(d, 0.0)


def nll_and_grad(
    theta: np.ndarray,
    x: np.ndarray,
    z: np.ndarray,
    shape: tuple[int, int, int],
    weight_decay: float,
) -> tuple[float, np.ndarray]:
    """Negative log marginal likelihood (+ L2 on weights) and its gradient.

    ``theta = [weights..., log lengthscales..., log signal, log noise]``;
    ``z`` standardised targets.
    """
    n_in, hidden, n_out = shape
    n = x.shape[0]
    n_w = DKGPParams.n_weights(n_in, hidden, n_out)
    w = theta[:n_w]
    ls = np.exp(theta[n_w : n_w + n_in])
    signal = math.exp(theta[-2])
    noise = math.exp(theta[-1])
    w1, b1, w2, b2 = _unpack(w, n_in, hidden, n_out)
    h, phi = _features(x, ls, w1, b1, w2, b2)
    kf = signal * np.exp(-0.5 * _sqdist(phi, phi))
    try:
        chol = _cholesky(kf + noise * np.eye(n))
    except GPError:
        return 1e10, np.zeros_like(theta)
    alpha = cho_solve((chol, True), z)
    nll = (
        0.5 * float(z @ alpha)
        + float(np.log(np.diag(chol)).sum())
        + 0.5 * n * math.log(2 * math.pi)
    )
    kinv = cho_solve((chol, True), np.eye(n))
    dk = 0.5 * (kinv - np.outer(alpha, alpha))  # dNLL/dK (symmetric)
    grad = np.empty_like(theta)
    grad[-2] = float((dk * kf).sum())
    grad[-1] = noise * float(np.trace(dk))
    g = dk * kf
    # d kf_ij / d phi_i = -kf_ij (phi_i - phi_j); K_ij and K_ji both depend on phi_i.
    dphi = -2.0 * (g.sum(1)[:, None] * phi - g @ phi)
    # Skip path: d (x_d / ls_d) / d log ls_d = -x_d / ls_d.
    grad[n_w : n_w + n_in] = -(dphi[:, :n_in] * phi[:, :n_in]).sum(0)
    dnet = dphi[:, n_in:]
    dw2 = h.T @ dnet
    db2 = dnet.sum(0)
    da1 = (dnet @ w2.T) * (1.0 - h * h)
    dw1 = x.T @ da1
    db1 = da1.sum(0)
    grad[:n_w] = np.concatenate([dw1.ravel(), db1, dw2.ravel(), db2]) + weight_decay * w
    nll += 0.5 * weight_decay * float(w @ w)
    if not (math.isfinite(nll) and np.all(np.isfinite(grad))):
        return 1e10, np.zeros_like(theta)
    return nll, grad


class DeepKernelGP:
    """GP posterior with a deep kernel and known :class:`DKGPParams` (no training).

    Raises:
        GPError: on NaN data, a shape mismatch or a kernel that is not PD.
    """

    def __init__(self, x: np.ndarray, y: np.ndarray, params: DKGPParams) -> None:
        x, y = _training_data(x, y)
        if x.shape[1] != params.n_in:
            raise GPError(f"network expects {params.n_in} inputs, got {x.shape[1]}")
        self.params = params
        self._w = (np.asarray(params.lengthscales), *params.unpack())
        self.y_mean, self.y_std = standardise(y)
        z = (y - self.y_mean) / self.y_std
        _, self.phi = _features(x, *self._w)
        k = params.signal * np.exp(-0.5 * _sqdist(self.phi, self.phi))
        self.chol = _cholesky(k + params.noise * np.eye(len(x)))
        self.alpha = cho_solve((self.chol, True), z)

    def predict(self, xs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Posterior mean and standard deviation of the latent f, in y units."""
        _, phis = _features(np.asarray(xs, dtype=float), *self._w)
        ks = self.params.signal * np.exp(-0.5 * _sqdist(self.phi, phis))
        mu = ks.T @ self.alpha
        v = solve_triangular(self.chol, ks, lower=True, check_finite=False)
        var = np.maximum(self.params.signal - (v * v).sum(0), 1e-12)
        return mu * self.y_std + self.y_mean, np.sqrt(var) * self.y_std


def fit_dkgp(
    x: np.ndarray,
    y: np.ndarray,
    rng: np.random.Generator,
    *,
    hidden: int = 16,
    n_out: int = 4,
    init: DKGPParams | None = None,
    weight_decay: float = 3.0,
    maxiter: int = 100,
) -> DKGPParams:
    """Train the feature network and GP hyperparameters jointly (L-BFGS-B).

    Args:
        x: Inputs ``(n, d_in)``, roughly in ``[0, 1]``.
        y: Targets ``(n,)``; standardised internally.
        rng: Draws the initial weights when ``init`` is None.
        hidden: Hidden units of the feature network.
        n_out: Feature width.
        init: Warm start (ignored when its shape does not match).
        weight_decay: L2 penalty on the weights (Gaussian prior).
        maxiter: L-BFGS-B iterations.

    Returns:
        The fitted parameters (not rounded).

    Raises:
        GPError: on NaN data or if the optimum is not finite.

    Example:
        >>> import numpy as np
        >>> rng = np.random.default_rng(0)
        >>> x = rng.uniform(size=(40, 2))
        >>> y = np.sin(4 * x[:, 0]) + x[:, 1]
        >>> params = fit_dkgp(x, y, rng)
        >>> mu, sd = DeepKernelGP(x, y, params).predict(x[:3])
        >>> bool(np.abs(mu - y[:3]).max() < 0.2)
        True
    """
    x, y = _training_data(x, y)
    n_in = x.shape[1]
    mean, std = standardise(y)
    z = (y - mean) / std
    shape = (n_in, hidden, n_out)
    if init is None or (init.n_in, init.hidden, init.n_out) != shape:
        init = DKGPParams.initial(n_in, hidden, n_out, rng)
    n_w = DKGPParams.n_weights(*shape)
    ls_bounds = (math.log(LENGTHSCALE_BOUNDS[0]), math.log(LENGTHSCALE_BOUNDS[1]))
    bounds = [(-WEIGHT_BOUND, WEIGHT_BOUND)] * n_w + [ls_bounds] * n_in + [
        (math.log(SIGNAL_BOUNDS[0]), math.log(SIGNAL_BOUNDS[1])),
        (math.log(NOISE_BOUNDS[0]), math.log(NOISE_BOUNDS[1])),
    ]
    lo = np.array([b[0] for b in bounds])
    hi = np.array([b[1] for b in bounds])
    theta0 = np.clip(init.to_vector(), lo, hi)
    try:
        res = minimize(
            nll_and_grad,
            theta0,
            args=(x, z, shape, weight_decay),
            jac=True,
            method="L-BFGS-B",
            bounds=bounds,
            options={"maxiter": maxiter},
        )
    except (ValueError, FloatingPointError, np.linalg.LinAlgError) as exc:
        raise GPError(f"deep-kernel fit failed: {exc}") from exc
    if not math.isfinite(float(res.fun)) or float(res.fun) >= 1e10:
        raise GPError("deep-kernel marginal likelihood is not finite")
    return DKGPParams.from_vector(np.asarray(res.x), *shape)
