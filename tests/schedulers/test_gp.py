"""The GP surrogate on its own: encoding, likelihood, fit, prediction, EI."""

from __future__ import annotations

import math

import numpy as np
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from scipy.stats import norm

from schedulers.gp import (
    GaussianProcess,
    GPError,
    GPParams,
    _nll_and_grad,
    encode_config,
    encoded_dim,
    expected_improvement,
    fit_gp,
)

SPACE = {
    "lr": FloatDistribution(1e-4, 1.0, log=True),
    "drop": FloatDistribution(0.0, 0.5),
    "width": IntDistribution(8, 64, step=8),
    "batch": IntDistribution(16, 256, log=True),
    "act": CategoricalDistribution(["relu", "tanh", "sigmoid"]),
    "fixed": FloatDistribution(2.0, 2.0),
}


def test_encoding_scales_each_kind() -> None:
    config = {"lr": 1e-2, "drop": 0.25, "width": 64, "batch": 64, "act": "sigmoid", "fixed": 2.0}
    x = encode_config(SPACE, config)
    assert encoded_dim(SPACE) == len(x) == 8
    assert x.tolist() == pytest.approx([0.5, 0.5, 1.0, 0.5, 0.0, 0.0, 1.0, 0.5])


def test_encoding_stays_in_unit_cube() -> None:
    rng = np.random.default_rng(0)
    from schedulers.space import sample_one

    for _ in range(200):
        config = {k: sample_one(d, rng) for k, d in SPACE.items()}
        x = encode_config(SPACE, config)
        assert np.all((x >= 0) & (x <= 1))
        assert x[4:7].sum() == 1.0


def test_likelihood_gradient_matches_finite_differences() -> None:
    rng = np.random.default_rng(1)
    x = rng.uniform(size=(15, 3))
    y = np.sin(4 * x[:, 0]) + x[:, 1]
    y = (y - y.mean()) / y.std()
    theta = np.log([0.3, 0.7, 2.0, 1.3, 0.05])
    _, grad = _nll_and_grad(theta, x, y)
    eps = 1e-6
    for i in range(len(theta)):
        step = np.zeros_like(theta)
        step[i] = eps
        fd = (_nll_and_grad(theta + step, x, y)[0] - _nll_and_grad(theta - step, x, y)[0]) / (
            2 * eps
        )
        assert grad[i] == pytest.approx(fd, rel=1e-4, abs=1e-6)


def test_fit_interpolates_a_smooth_function_and_is_uncertain_far_away() -> None:
    x = np.linspace(0, 0.6, 15)[:, None]
    y = np.sin(6 * x[:, 0])
    gp = fit_gp(x, y, np.random.default_rng(0), restarts=2)
    mu, sd = gp.predict(np.array([[0.3], [1.0]]))
    assert mu[0] == pytest.approx(math.sin(1.8), abs=0.05)
    assert sd[0] < 0.05 < sd[1]


def test_fit_is_deterministic_given_the_generator() -> None:
    rng = np.random.default_rng(3)
    x = rng.uniform(size=(20, 2))
    y = x[:, 0] ** 2 - x[:, 1]
    a = fit_gp(x, y, np.random.default_rng(5), restarts=2).params
    b = fit_gp(x, y, np.random.default_rng(5), restarts=2).params
    assert a == b


def test_warm_start_is_used() -> None:
    rng = np.random.default_rng(3)
    x = rng.uniform(size=(20, 2))
    y = x[:, 0] ** 2 - x[:, 1]
    first = fit_gp(x, y, np.random.default_rng(5), restarts=1)
    again = fit_gp(x, y, np.random.default_rng(6), init=first.params, restarts=0, maxiter=5)
    assert np.allclose(again.params.to_vector(), first.params.to_vector(), atol=0.2)


@pytest.mark.parametrize(
    "x, y",
    [
        (np.zeros((1, 2)), np.array([3.0])),  # one observation
        (np.tile([[0.2, 0.4]], (6, 1)), np.arange(6.0)),  # duplicate inputs
        (np.random.default_rng(0).uniform(size=(8, 2)), np.full(8, 1.5)),  # all equal
    ],
    ids=["single", "duplicates", "constant"],
)
def test_degenerate_data_fit_and_predict_finite(x: np.ndarray, y: np.ndarray) -> None:
    gp = fit_gp(x, y, np.random.default_rng(0))
    mu, sd = gp.predict(np.random.default_rng(1).uniform(size=(5, x.shape[1])))
    assert np.all(np.isfinite(mu)) and np.all(np.isfinite(sd)) and np.all(sd > 0)


def test_duplicates_with_zero_noise_are_rescued_by_jitter() -> None:
    x = np.tile([[0.5]], (5, 1))
    gp = GaussianProcess(x, np.arange(5.0), GPParams((1.0,), 1.0, 0.0))
    assert np.all(np.isfinite(gp.predict(np.array([[0.5]]))[0]))


def test_nan_data_raise_gp_error() -> None:
    with pytest.raises(GPError):
        fit_gp(np.zeros((3, 1)), np.array([1.0, math.nan, 2.0]), np.random.default_rng(0))
    with pytest.raises(GPError):
        GaussianProcess(np.zeros((0, 1)), np.zeros(0), GPParams((1.0,), 1.0, 0.1))
    with pytest.raises(GPError):
        GaussianProcess(np.zeros((2, 1)), np.zeros(2), GPParams((1.0, 1.0), 1.0, 0.1))


def test_params_json_round_trip_is_exact() -> None:
    p = GPParams((0.123456789, 3.0), 1.987654321, 1e-3).rounded(4)
    assert GPParams.from_json(p.to_json()) == p
    assert p.lengthscales == (0.1235, 3.0)


def test_expected_improvement_closed_form() -> None:
    mean = np.array([0.0, 1.0, 2.0])
    std = np.array([1.0, 0.5, 1e-15])
    ei = expected_improvement(mean, std, 1.0)
    z = (1.0 - mean[:2]) / std[:2]
    want = (1.0 - mean[:2]) * norm.cdf(z) + std[:2] * norm.pdf(z)
    assert ei[:2] == pytest.approx(want)
    assert ei[2] == 0.0
    # Per-candidate incumbents (multi-fidelity EI).
    assert expected_improvement(mean, std, np.array([5.0, 5.0, 5.0]))[2] == pytest.approx(3.0)


# ------------------------------------------------------------- deep kernel
def test_deep_kernel_gradient_matches_finite_differences() -> None:
    from schedulers.dkgp import DKGPParams, nll_and_grad

    rng = np.random.default_rng(2)
    x = rng.uniform(size=(12, 3))
    y = np.sin(4 * x[:, 0]) + x[:, 1]
    z = (y - y.mean()) / y.std()
    theta = DKGPParams.initial(3, 5, 2, rng).to_vector()
    _, grad = nll_and_grad(theta, x, z, (3, 5, 2), 0.5)
    eps = 1e-6
    for i in range(len(theta)):
        step = np.zeros_like(theta)
        step[i] = eps
        up, _ = nll_and_grad(theta + step, x, z, (3, 5, 2), 0.5)
        down, _ = nll_and_grad(theta - step, x, z, (3, 5, 2), 0.5)
        assert grad[i] == pytest.approx((up - down) / (2 * eps), rel=1e-4, abs=1e-5)


def test_deep_kernel_learns_a_function_and_replays_from_json() -> None:
    import json

    from schedulers.dkgp import DeepKernelGP, DKGPParams, fit_dkgp

    rng = np.random.default_rng(3)
    x = rng.uniform(size=(60, 4))
    f = np.sin(4 * x[:, 0]) + x[:, 1] ** 2
    params = fit_dkgp(x, f + 0.01 * rng.normal(size=60), rng, weight_decay=3.0).rounded(5)
    xt = rng.uniform(size=(200, 4))
    ft = np.sin(4 * xt[:, 0]) + xt[:, 1] ** 2
    mu, sd = DeepKernelGP(x, f, params).predict(xt)
    assert np.sqrt(np.mean((mu - ft) ** 2)) < 0.5 * ft.std()
    assert np.all(sd > 0)
    again = DKGPParams.from_json(json.loads(json.dumps(params.to_json())))
    assert again == params
    assert np.array_equal(DeepKernelGP(x, f, again).predict(xt)[0], mu)


def test_deep_kernel_rejects_bad_data() -> None:
    from schedulers.dkgp import DeepKernelGP, DKGPParams, fit_dkgp

    rng = np.random.default_rng(0)
    with pytest.raises(GPError):
        fit_dkgp(np.array([[0.1], [np.nan]]), np.array([1.0, 2.0]), rng)
    params = DKGPParams.initial(2, 3, 2, rng)
    with pytest.raises(GPError, match="expects 2 inputs"):
        DeepKernelGP(np.zeros((3, 4)), np.zeros(3), params)
    with pytest.raises(ValueError):
        DKGPParams.from_json({**params.to_json(), "w": [1.0]})
