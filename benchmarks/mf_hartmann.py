"""A multi-fidelity Hartmann 6-D problem whose low fidelities are only weakly informative.

The Hartmann 6-D function (Dixon & Szegö 1978; constants as tabulated by
Surjanovic & Bingham's Virtual Library of Simulation Experiments) is
``H(x) = -sum_i alpha_i exp(-sum_j A_ij (x_j - P_ij)^2)`` on ``[0, 1]^6``, with
a global minimum of about -3.32237.

The multi-fidelity variant follows the one used by mf-prior-bench (the
``MFHartmann6`` generator, in the spirit of Kandasamy et al.'s multi-fidelity
Hartmann): at fidelity ``z`` in ``1..R`` let ``s = log(z) / log(R)`` (0 at the
lowest fidelity, 1 at the highest). The peak heights are biased,
``alpha'_i = alpha_i - bias * (1 - s)``, which flattens (and for a large bias
reorders) the peaks, and a non-negative noise ``|N(0, 1)| * noise * (1 - s)``
is added. At ``z = R`` the value is the exact Hartmann function. The noise is
a deterministic function of (problem, configuration, z), so a configuration
trained again, or resumed from a checkpoint, reports the same curve.

Here ``z`` is the epoch: a trial trained to ``stop`` reports one value per
epoch ``start + 1 .. stop``. Two presets (mf-prior-bench's "moderate" and
"terrible" settings) give two regimes; Spearman rank correlation of the
value at z with the final value over 2,000 random configurations
(``python benchmarks/mf_hartmann.py``):

* ``hartmann-informative``: bias 1.0, noise 0.2. Low fidelities rank
  configurations somewhat: 0.65 at z = 1, 0.74 at 3, 0.87 at 9, 0.94 at 27.
* ``hartmann-misleading``: bias 3.0, noise 0.8. At z = 1 the two highest
  peaks are inverted and the ranking misleads: -0.14 at z = 1, 0.05 at 3,
  0.34 at 9, 0.69 at 27.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from schedulers.space import SearchSpace

__all__ = ["ALPHA", "MAX_T", "PRESETS", "SPACE", "MFHartmann6", "hartmann6", "rank_correlation"]

#: Highest fidelity (epochs of a full training), R.
MAX_T = 81

SPACE = SearchSpace.parse(
    {f"x{j}": {"type": "float", "low": 0.0, "high": 1.0} for j in range(6)}
)

ALPHA = np.array([1.0, 1.2, 3.0, 3.2])
_A = np.array(
    [
        [10.0, 3.0, 17.0, 3.5, 1.7, 8.0],
        [0.05, 10.0, 17.0, 0.1, 8.0, 14.0],
        [3.0, 3.5, 1.7, 10.0, 17.0, 8.0],
        [17.0, 8.0, 0.05, 10.0, 0.1, 14.0],
    ]
)
_P = 1e-4 * np.array(
    [
        [1312.0, 1696.0, 5569.0, 124.0, 8283.0, 5886.0],
        [2329.0, 4135.0, 8307.0, 3736.0, 1004.0, 9991.0],
        [2348.0, 1451.0, 3522.0, 2883.0, 3047.0, 6650.0],
        [4047.0, 8828.0, 8732.0, 5743.0, 1091.0, 381.0],
    ]
)
#: The global minimiser (Surjanovic & Bingham).
X_OPT = (0.20169, 0.150011, 0.476874, 0.275332, 0.311652, 0.6573)


def hartmann6(x: Sequence[float], alpha: np.ndarray = ALPHA) -> float:
    """``-sum_i alpha_i exp(-sum_j A_ij (x_j - P_ij)^2)``."""
    v = np.asarray(x, dtype=float)
    inner = np.sum(_A * (v[np.newaxis, :] - _P) ** 2, axis=1)
    return float(-np.sum(alpha * np.exp(-inner)))


#: Value at the minimiser, used for regret (so regret is >= 0 up to 1e-5).
H_OPT = hartmann6(X_OPT)


@dataclass(frozen=True)
class MFHartmann6:
    """One preset of the multi-fidelity Hartmann 6-D problem.

    Attributes:
        name: Name shown in reports.
        bias: Peak-height bias at the lowest fidelity (mf-prior-bench's ``fidelity_bias``).
        noise: Noise scale at the lowest fidelity (``fidelity_noise``).
        max_t: R, the highest fidelity (epochs).
        seed: Seed of the (deterministic) noise.
    """

    name: str
    bias: float
    noise: float
    max_t: int = MAX_T
    seed: int = 1337

    def value(self, config: Mapping[str, Any], z: float) -> float:
        """Observed value at fidelity ``z`` (``1 <= z <= max_t``)."""
        x = [float(config[f"x{j}"]) for j in range(6)]
        s = math.log(z) / math.log(self.max_t) if self.max_t > 1 else 1.0
        s = min(max(s, 0.0), 1.0)
        h = hartmann6(x, ALPHA - self.bias * (1.0 - s))
        if s >= 1.0 or self.noise == 0.0:
            return h
        key = f"{self.seed}|{z:.6g}|" + ",".join(f"{v:.12g}" for v in x)
        rng = np.random.default_rng(zlib.crc32(key.encode()))
        return h + abs(float(rng.standard_normal())) * self.noise * (1.0 - s)

    def objective(
        self, config: Mapping[str, Any], start: float, stop: float, state: Any
    ) -> tuple[list[dict[str, float]], Any]:
        """:data:`schedulers.simulate.Objective`: one ``loss`` report per epoch."""
        first = math.floor(start) + 1
        reports = [
            {"resource": float(z), "loss": self.value(config, z)}
            for z in range(first, math.ceil(stop) + 1)
        ]
        if not reports or reports[-1]["resource"] != stop:
            reports.append({"resource": float(stop), "loss": self.value(config, max(stop, 1.0))})
        return reports, None

    def regret(self, config: Mapping[str, Any]) -> float:
        """True (full-fidelity, noise-free) value minus the global minimum."""
        return hartmann6([float(config[f"x{j}"]) for j in range(6)]) - H_OPT


PRESETS = {
    "hartmann-informative": MFHartmann6("hartmann-informative", bias=1.0, noise=0.2),
    "hartmann-misleading": MFHartmann6("hartmann-misleading", bias=3.0, noise=0.8),
}


def rank_correlation(problem: MFHartmann6, z: float, n: int = 2000, seed: int = 0) -> float:
    """Spearman correlation between values at ``z`` and at ``max_t`` over random configs."""
    from scipy.stats import spearmanr

    rng = np.random.default_rng(seed)
    xs = rng.random((n, 6))
    configs = [{f"x{j}": float(v[j]) for j in range(6)} for v in xs]
    low = [problem.value(c, z) for c in configs]
    high = [problem.value(c, problem.max_t) for c in configs]
    return float(spearmanr(low, high).statistic)


def main() -> None:
    print(f"H(x*) = {H_OPT:.5f}")
    for problem in PRESETS.values():
        cells = ", ".join(
            f"z={z}: {rank_correlation(problem, z):.2f}" for z in (1, 3, 9, 27)
        )
        print(f"{problem.name}: Spearman rank correlation with z={problem.max_t}: {cells}")


if __name__ == "__main__":
    main()
