"""A small Gaussian-process surrogate for DyHPO: encoding, fit, predict, EI.

Pure numpy/scipy, no state outside the objects returned, so each function can
be unit-tested on its own and a scheduler decision that uses them stays a pure
function of its inputs.

* :func:`encode_config` maps a configuration to ``[0, 1]^d`` from its optuna
  distributions: floats and ints are scaled linearly (or on the log scale when
  ``log=True``), categoricals are one-hot.
* :func:`fit_gp` fits a zero-mean GP with a Matern-5/2 ARD kernel plus
  Gaussian noise to standardised targets. Hyperparameters (one lengthscale per
  input, signal variance, noise variance) are found by maximising the log
  marginal likelihood with ``scipy.optimize.minimize`` (L-BFGS-B, analytic
  gradients, bounded log-parameters, a warm start plus restarts drawn from the
  caller's generator).
* :meth:`GaussianProcess.predict` and :func:`expected_improvement` score
  candidates.

Numerical failures raise :class:`GPError` (never a bare ``LinAlgError``), so a
caller can fall back to a model-free rule with a reason.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)
from scipy.linalg import cho_solve, cholesky, solve_triangular
from scipy.optimize import minimize
from scipy.special import ndtr

__all__ = [
    "GPError",
    "GPParams",
    "GaussianProcess",
    "encode_config",
    "encoded_dim",
    "expected_improvement",
    "fit_gp",
    "matern52",
]

_SQRT5 = math.sqrt(5.0)
#: Bounds of the log-parameters. Inputs live in [0, 1] and targets are
#: standardised, so these ranges cover every sensible fit while keeping the
#: optimiser away from degenerate corners (zero noise, infinite lengthscale).
LENGTHSCALE_BOUNDS = (0.01, 20.0)
SIGNAL_BOUNDS = (0.05, 20.0)
NOISE_BOUNDS = (1e-6, 1.0)
_JITTERS = (0.0, 1e-8, 1e-6, 1e-4, 1e-2)


class GPError(RuntimeError):
    """The GP could not be fitted or evaluated (non-PD kernel, NaN data, ...)."""


# ------------------------------------------------------------------ encoding
def encoded_dim(space: Mapping[str, BaseDistribution]) -> int:
    """Number of columns :func:`encode_config` produces for ``space``."""
    return sum(
        len(d.choices) if isinstance(d, CategoricalDistribution) else 1 for d in space.values()
    )


def _unit(value: float, low: float, high: float, log: bool) -> float:
    if high <= low:
        return 0.5
    if log:
        value, low, high = math.log(value), math.log(low), math.log(high)
    return min(1.0, max(0.0, (value - low) / (high - low)))


def encode_config(space: Mapping[str, BaseDistribution], config: Mapping[str, Any]) -> np.ndarray:
    """Encode ``config`` as a vector in ``[0, 1]^d`` (d = :func:`encoded_dim`).

    Floats and ints: ``(x - low) / (high - low)``, on ``log`` values when the
    distribution is log-scaled. Categoricals: one-hot over ``choices``.

    Example:
        >>> from optuna.distributions import CategoricalDistribution, FloatDistribution
        >>> space = {"lr": FloatDistribution(1e-4, 1.0, log=True),
        ...          "act": CategoricalDistribution(["relu", "tanh"])}
        >>> encode_config(space, {"lr": 1e-2, "act": "tanh"}).tolist()
        [0.5, 0.0, 1.0]
    """
    out: list[float] = []
    for name, dist in space.items():
        value = config[name]
        if isinstance(dist, CategoricalDistribution):
            onehot = [0.0] * len(dist.choices)
            onehot[int(dist.to_internal_repr(value))] = 1.0
            out.extend(onehot)
        elif isinstance(dist, (FloatDistribution, IntDistribution)):
            out.append(_unit(float(value), float(dist.low), float(dist.high), bool(dist.log)))
        else:
            raise GPError(f"cannot encode parameter {name!r} with distribution {dist!r}")
    return np.asarray(out, dtype=float)


# -------------------------------------------------------------------- kernel
@dataclass(frozen=True)
class GPParams:
    """Kernel hyperparameters.

    Attributes:
        lengthscales: One per input dimension (ARD).
        signal: Signal variance of the Matern kernel.
        noise: Observation-noise variance (targets are standardised).
    """

    lengthscales: tuple[float, ...]
    signal: float
    noise: float

    def to_vector(self) -> np.ndarray:
        """Log-parameters ``[log l_1..l_d, log signal, log noise]``."""
        return np.log(np.asarray([*self.lengthscales, self.signal, self.noise], dtype=float))

    @classmethod
    def from_vector(cls, theta: np.ndarray) -> GPParams:
        values = np.exp(np.asarray(theta, dtype=float))
        return cls(tuple(float(v) for v in values[:-2]), float(values[-2]), float(values[-1]))

    @classmethod
    def default(cls, dim: int) -> GPParams:
        return cls((0.5,) * dim, 1.0, 0.01)

    def rounded(self, digits: int = 4) -> GPParams:
        """Parameters rounded to ``digits`` significant digits (small, JSON-exact)."""

        def r(x: float) -> float:
            return float(f"{x:.{digits}g}")

        return GPParams(tuple(r(v) for v in self.lengthscales), r(self.signal), r(self.noise))

    def to_json(self) -> dict[str, Any]:
        return {"ls": list(self.lengthscales), "signal": self.signal, "noise": self.noise}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> GPParams:
        return cls(
            tuple(float(v) for v in data["ls"]), float(data["signal"]), float(data["noise"])
        )


def _bounds(dim: int) -> list[tuple[float, float]]:
    ls = (math.log(LENGTHSCALE_BOUNDS[0]), math.log(LENGTHSCALE_BOUNDS[1]))
    return [ls] * dim + [
        (math.log(SIGNAL_BOUNDS[0]), math.log(SIGNAL_BOUNDS[1])),
        (math.log(NOISE_BOUNDS[0]), math.log(NOISE_BOUNDS[1])),
    ]


def _scaled_sqdist(a: np.ndarray, b: np.ndarray, lengthscales: np.ndarray) -> np.ndarray:
    a = a / lengthscales
    b = b / lengthscales
    d = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2.0 * a @ b.T
    return np.maximum(d, 0.0)


def matern52(a: np.ndarray, b: np.ndarray, params: GPParams) -> np.ndarray:
    """Matern-5/2 ARD kernel matrix ``k(a_i, b_j)`` (no noise)."""
    r = np.sqrt(_scaled_sqdist(a, b, np.asarray(params.lengthscales)))
    return params.signal * (1.0 + _SQRT5 * r + (5.0 / 3.0) * r * r) * np.exp(-_SQRT5 * r)


def _cholesky(k: np.ndarray) -> np.ndarray:
    """Lower Cholesky factor, adding growing jitter; GPError if never PD."""
    scale = float(np.mean(np.diag(k))) if k.size else 1.0
    eye = np.eye(k.shape[0])
    for jitter in _JITTERS:
        try:
            return np.asarray(cholesky(k + jitter * scale * eye, lower=True, check_finite=True))
        except (np.linalg.LinAlgError, ValueError):
            continue
    raise GPError("kernel matrix is not positive definite even with jitter")


def _nll_and_grad(theta: np.ndarray, x: np.ndarray, y: np.ndarray) -> tuple[float, np.ndarray]:
    """Negative log marginal likelihood and its gradient in log-parameters."""
    n, dim = x.shape
    ls = np.exp(theta[:dim])
    signal = math.exp(theta[dim])
    noise = math.exp(theta[dim + 1])
    diff2 = (x[:, None, :] - x[None, :, :]) ** 2 / (ls * ls)  # (n, n, d)
    r = np.sqrt(diff2.sum(-1))
    e = np.exp(-_SQRT5 * r)
    kf = signal * (1.0 + _SQRT5 * r + (5.0 / 3.0) * r * r) * e
    try:
        chol = _cholesky(kf + noise * np.eye(n))
    except GPError:
        return 1e10, np.zeros_like(theta)
    alpha = cho_solve((chol, True), y)
    nll = 0.5 * float(y @ alpha) + float(np.log(np.diag(chol)).sum()) + 0.5 * n * math.log(
        2 * math.pi
    )
    kinv = cho_solve((chol, True), np.eye(n))
    w = np.outer(alpha, alpha) - kinv  # dNLL/dtheta = -0.5 tr(W dK/dtheta)
    grad = np.empty_like(theta)
    # dk/dlog l_d = 5/3 * signal * (1 + sqrt5 r) exp(-sqrt5 r) * diff_d^2 / l_d^2
    common = (5.0 / 3.0) * signal * (1.0 + _SQRT5 * r) * e * w
    grad[:dim] = -0.5 * np.einsum("ij,ijd->d", common, diff2)
    grad[dim] = -0.5 * float((w * kf).sum())
    grad[dim + 1] = -0.5 * noise * float(np.trace(w))
    if not (math.isfinite(nll) and np.all(np.isfinite(grad))):
        return 1e10, np.zeros_like(theta)
    return nll, grad


# ----------------------------------------------------------------------- GP
def _training_data(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``x`` and ``y`` as float arrays of shapes ``(n, d)`` and ``(n,)``, n > 0, all finite."""
    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=float)
    if x.ndim != 2 or y.ndim != 1 or x.shape[0] != y.shape[0] or x.shape[0] == 0:
        raise GPError(f"bad shapes x={x.shape} y={y.shape}")
    if not (np.all(np.isfinite(x)) and np.all(np.isfinite(y))):
        raise GPError("training data contain NaN or inf")
    return x, y


class GaussianProcess:
    """A fitted GP posterior over standardised targets.

    Use :func:`fit_gp` to fit hyperparameters, or build one directly with
    known :class:`GPParams` (no optimisation, only a Cholesky).

    Raises:
        GPError: if the data contain NaN/inf or the kernel is not PD.
    """

    def __init__(self, x: np.ndarray, y: np.ndarray, params: GPParams) -> None:
        x, y = _training_data(x, y)
        if len(params.lengthscales) != x.shape[1]:
            raise GPError(
                f"{len(params.lengthscales)} lengthscales for {x.shape[1]} input dimensions"
            )
        self.x = x
        self.params = params
        self.y_mean, self.y_std = standardise(y)
        self.z = (y - self.y_mean) / self.y_std
        k = matern52(x, x, params) + params.noise * np.eye(len(x))
        self.chol = _cholesky(k)
        self.alpha = cho_solve((self.chol, True), self.z)

    def predict(self, xs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Posterior mean and standard deviation of the latent f at ``xs``, in y units."""
        xs = np.asarray(xs, dtype=float)
        ks = matern52(self.x, xs, self.params)
        mu = ks.T @ self.alpha
        v = solve_triangular(self.chol, ks, lower=True, check_finite=False)
        var = np.maximum(self.params.signal - (v * v).sum(0), 1e-12)
        return mu * self.y_std + self.y_mean, np.sqrt(var) * self.y_std


def standardise(y: np.ndarray) -> tuple[float, float]:
    """Mean and (non-zero) standard deviation used to standardise targets."""
    mean = float(np.mean(y))
    std = float(np.std(y))
    # All-equal targets: any scale works; 1 keeps the posterior finite.
    return mean, std if std > 1e-12 else 1.0


def fit_gp(
    x: np.ndarray,
    y: np.ndarray,
    rng: np.random.Generator,
    *,
    init: GPParams | None = None,
    restarts: int = 1,
    maxiter: int = 40,
) -> GaussianProcess:
    """Fit hyperparameters by maximising the log marginal likelihood.

    Starts from ``init`` (warm start; default lengthscales 0.5, signal 1,
    noise 0.01) plus ``restarts`` points drawn uniformly in the log-bounds
    with ``rng``; keeps the best optimum. L-BFGS-B on bounded log-parameters.

    Args:
        x: Inputs, shape ``(n, d)``, in ``[0, 1]``.
        y: Targets, shape ``(n,)``; standardised internally.
        rng: Generator for the restart points (the caller's decision rng).
        init: Warm-start parameters.
        restarts: Extra random starting points.
        maxiter: L-BFGS-B iterations per start.

    Raises:
        GPError: on NaN data, or if no start yields a finite likelihood or a
            PD kernel.

    Example:
        >>> import numpy as np
        >>> x = np.linspace(0, 1, 12)[:, None]
        >>> gp = fit_gp(x, np.sin(6 * x[:, 0]), np.random.default_rng(0))
        >>> mu, sd = gp.predict(np.array([[0.5]]))
        >>> bool(abs(mu[0] - np.sin(3.0)) < 0.1)
        True
    """
    x, y = _training_data(x, y)
    dim = x.shape[1]
    mean, std = standardise(y)
    z = (y - mean) / std
    bounds = _bounds(dim)
    lo = np.array([b[0] for b in bounds])
    hi = np.array([b[1] for b in bounds])
    starts = [np.clip((init or GPParams.default(dim)).to_vector(), lo, hi)]
    starts += [rng.uniform(lo, hi) for _ in range(max(0, restarts))]
    best: tuple[float, np.ndarray] | None = None
    for theta0 in starts:
        try:
            res = minimize(
                _nll_and_grad,
                theta0,
                args=(x, z),
                jac=True,
                method="L-BFGS-B",
                bounds=bounds,
                options={"maxiter": maxiter},
            )
        except (ValueError, FloatingPointError, np.linalg.LinAlgError):
            continue
        value = float(res.fun)
        if math.isfinite(value) and value < 1e10 and (best is None or value < best[0]):
            best = (value, np.asarray(res.x))
    if best is None:
        raise GPError("marginal-likelihood optimisation failed from every start")
    return GaussianProcess(x, y, GPParams.from_vector(best[1]))


def expected_improvement(
    mean: np.ndarray, std: np.ndarray, best: np.ndarray | float
) -> np.ndarray:
    """EI for minimisation: ``E[max(best - f, 0)]`` with ``f ~ N(mean, std^2)``.

    ``best`` may be a scalar or one incumbent per candidate (DyHPO's
    multi-fidelity EI uses the best value observed at each candidate's
    target resource).
    """
    mean = np.asarray(mean, dtype=float)
    std = np.maximum(np.asarray(std, dtype=float), 1e-12)
    improvement = np.asarray(best, dtype=float) - mean
    z = improvement / std
    pdf = np.exp(-0.5 * z * z) / math.sqrt(2 * math.pi)
    return np.maximum(improvement * ndtr(z) + std * pdf, 0.0)

