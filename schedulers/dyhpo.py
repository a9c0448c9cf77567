"""DyHPO: dynamic gray-box scheduling with a learning-curve surrogate.

Wistuba, Kadra and Grabocka, "Supervising the Multi-Fidelity Race of
Hyperparameter Configurations" (NeurIPS 2022), with the rung system of Syne
Tune's ``DyHPORungSystem``.

Every time a worker frees, each paused trial is scored for running to its next
rung level, together with ``num_candidates`` fresh random configurations scored
for running to the first rung level; the winner runs. The score is the paper's
multi-fidelity expected improvement: EI of the surrogate's prediction at the
candidate's *target* resource against the best value observed at that
resource (the overall best when nothing was observed there yet, as Syne Tune
does), divided by the resource the step costs (``cost_aware``; with the
paper's equal steps this is the paper's rule, with unequal steps it stops a
54-epoch promotion from competing at par with a 1-epoch new trial).
Whether a new trial runs is decided that way; *which* of the fresh
configurations it gets is, by default (``new_config_target="max_t"``), the
one with the best EI at ``max_t`` against the best full-fidelity score. The
paper's choice (best MF-EI at the first rung, ``"first_rung"``) picks what
leads after one epoch, which on crossing learning curves is a fast learner
that ends poorly: measured on ``benchmarks/search_quality.py``'s crossing
curves, it left DyHPO level with full-fidelity random search (figures in
docs/benchmarks.md).

Rungs are geometric by default, ``grace_period * reduction_factor^k``
(1, 3, 9, 27, 81 at ``max_t = 81``), and with probability ``probability_sh``
(default 0.25, Syne Tune's ``DEFAULT_SH_PROBABILITY``) a decision first tries
the successive-halving promotion rule, which promotes the top ``r_j /
r_{j+1}`` fraction of rung ``r_j`` (Syne Tune's promotion quantiles), so
trials get promoted even while the model prefers new configurations.

The rung default departs from Syne Tune's DyHPO, whose levels are linear,
``grace_period + k * rung_increment`` with ``rung_increment = 2`` (1, 3, 5,
...; its rung system warns otherwise). Measured on
``benchmarks/search_quality.py`` (30 full trainings of resource, 4 workers):
with linear rungs every trial trained to the end takes ~40 decisions instead
of 5, which cost 9-36 s of CPU per run against 1.4-7.8 s for geometric rungs
on the same seeds, with no consistent regret difference; over 20 seeds the
defaults have a lower median regret than ASHA + random and full-fidelity
random search on the crossing curves and both multi-fidelity Hartmann
presets (figures in docs/benchmarks.md). ``probability_sh = 0.5`` measured
no different from 0.25, so Syne Tune's value stays. Syne Tune's setting is
one argument away: ``rung_increment=2`` (and ``new_config_target="first_rung"``
for the paper's choice of new configurations).

Surrogate (``surrogate``):

* ``"gp"`` (default): a Matern-5/2 ARD GP (:mod:`schedulers.gp`) on the
  inputs below, curve included. Default because it measured better than the
  deep kernel on ``benchmarks/dyhpo_quality.py``'s Hartmann problem at the
  data sizes a 30-training budget gives (few seeds; see the benchmark);
* ``"dkgp"``: the paper's deep-kernel GP (:mod:`schedulers.dkgp`): a small
  feature network over (config, budget, learning curve) and a GP on its
  features, trained jointly on the marginal likelihood. The Matern GP is
  its fallback of ``"dkgp"`` while fewer than ``dkgp_min_points``
  (default :data:`DKGP_MIN_POINTS`) observations exist, where a network
  memorises rather than learns, and when the deep-kernel fit fails.

Inputs for an observation of trial ``x`` at resource ``b`` whose previous
result was at ``b'`` (0 for a new trial)::

    [ encode(x) in [0,1]^d,                       # log scaling, one-hot
      b / max_t, b' / max_t,                      # target and current budget
      q(y_{e-L+1}), ..., q(y_e),                  # last L epochs of the curve up to b'
      1 if the trial has a curve else 0 ]

where ``q`` is the empirical CDF of every score observed so far (robust to
diverging losses) and the curve is every report the trainable made (one per
epoch), left-padded with its first value; ``L = curve_length`` (0 drops the
curve, an ablation).

Size and cost rule (bounded latency, see ``benchmarks/dyhpo_latency.py``):

1. per trial only its latest ``points_per_trial`` observations enter the
   posterior (their curve inputs carry the earlier ones);
2. if more than ``max_gp_points`` remain, keep the best quarter by score and
   fill up with a uniform subsample drawn with the decision's generator;
3. parameters are fitted on at most :data:`FIT_POINTS` of those points and
   only every ``refit_every`` model decisions, warm-started from the previous
   fit. The fitted (rounded) parameters are recorded in the decision's event
   (:class:`SurrogateFit` in :class:`DyHPODecision`) and folded back by
   ``tell``, so the next decisions, and any replay, use exactly the same
   values; ``tell`` never fits anything.

Warm start: an imported observation (:class:`~schedulers.events.ObservationImported`)
joins the training data with its results at the rung levels, counts towards
``num_init_random`` and sets the EI incumbents. It is never scored as a paused
trial nor promoted, and the SH fallback ranks trials only. A retried failed
trial is simply paused again and competes like any other.

Numerical trouble (non-PD kernel after jitter, optimiser failure, NaN data)
never raises: the decision falls back to the successive-halving rule and
records the reason.
"""

from __future__ import annotations

import bisect
import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

from schedulers.actions import Action, RunSegment, Stop, Wait
from schedulers.base import Scheduler, SchedulerArgumentError, TrialState
from schedulers.dkgp import DeepKernelGP, DKGPParams, fit_dkgp
from schedulers.events import Event, ObservationImported, SegmentStarted, TrialCreated
from schedulers.gp import (
    GaussianProcess,
    GPError,
    GPParams,
    encode_config,
    expected_improvement,
    fit_gp,
)
from schedulers.validation import (
    check_argument,
    check_grace_period,
    check_positive,
    check_reduction_factor,
)

__all__ = [
    "DKGP_MIN_POINTS",
    "FIT_POINTS",
    "DyHPODecision",
    "DyHPOScheduler",
    "ScheduleRecord",
    "Scores",
    "SurrogateFit",
    "promotion_quota",
    "rung_levels_for",
    "sh_promotable",
]

#: Most points used to fit surrogate parameters (the posterior uses up to
#: ``max_gp_points``). One fit costs O(n^3) per L-BFGS-B step.
FIT_POINTS = 64
#: Below this many training points the deep kernel is not trained (a network
#: fitted on a handful of points memorises them); the Matern GP decides.
DKGP_MIN_POINTS = 32
_GP_RESTARTS = 1
_GP_MAXITER = 30
_DKGP_HIDDEN = 16
_DKGP_OUT = 4
_DKGP_DECAY = 3.0
_DKGP_MAXITER = 60

# Salts of self.rng(): one stream per purpose, so adding draws to one purpose
# never shifts another.
_SALT_CANDIDATES = 1
_SALT_SUBSAMPLE = 2
_SALT_FIT = 3
_SALT_ACTION = 100

_EPS = 1e-9

ScheduleRecord = tuple[str, float, float, Literal["new", "promoted"]]
DecisionKind = Literal["random", "dyhpo", "sh", "fallback", "unknown"]
SurrogateKind = Literal["gp", "dkgp"]


# ------------------------------------------------------------ typed records
@dataclass(frozen=True)
class SurrogateFit:
    """Fitted surrogate parameters recorded with a decision (replay reuses them)."""

    kind: SurrogateKind
    params: GPParams | DKGPParams

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, **self.params.to_json()}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> SurrogateFit:
        if data.get("kind", "gp") == "dkgp":
            return cls("dkgp", DKGPParams.from_json(data))
        return cls("gp", GPParams.from_json(data))


@dataclass(frozen=True)
class DyHPODecision:
    """Why DyHPO chose an action; stored as the ``info`` of its events.

    Only ``decision`` and ``fit`` are folded back (replay depends on them); the
    rest explains the choice in ``rungflow status`` and the UI.

    Attributes:
        decision: ``random`` (warm-up), ``dyhpo`` (surrogate), ``sh``
            (successive-halving rule) or ``fallback`` (model-free after a
            numerical failure).
        reason: Why the fallback was used.
        winner: Promoted trial id, or ``"new"``.
        surrogate: ``gp`` or ``dkgp`` for surrogate decisions.
        best_new_ei: Best acquisition value among new configurations.
        best_paused_ei: Best acquisition value among paused trials.
        incumbent: The winner's MF-EI incumbent: the best score observed at
            its target resource (overall best when none).
        n_scored: Candidates scored.
        n_train: Observations in the posterior.
        fit: Parameters fitted at this decision, if it refitted.
    """

    decision: DecisionKind
    reason: str | None = None
    winner: str | None = None
    surrogate: SurrogateKind | None = None
    best_new_ei: float | None = None
    best_paused_ei: float | None = None
    incumbent: float | None = None
    n_scored: int | None = None
    n_train: int | None = None
    fit: SurrogateFit | None = None

    def to_info(self) -> dict[str, Any]:
        out: dict[str, Any] = {"decision": self.decision}
        names = ("winner", "surrogate", "best_new_ei", "best_paused_ei", "incumbent", "n_scored")
        for name in names:
            value = getattr(self, name)
            if value is not None:
                out[name] = value
        if self.reason is not None:
            out["fallback"] = self.reason
        if self.n_train is not None:
            out["n_gp"] = self.n_train
        if self.fit is not None:
            out["fit"] = self.fit.to_json()
        return out

    @classmethod
    def from_info(cls, info: Mapping[str, Any] | None) -> DyHPODecision:
        """Read an event's info, including logs written before the typed record
        (``gp_fit`` holding Matern parameters); malformed fits are dropped
        (they only cost a refit)."""
        info = info or {}
        decision = info.get("decision", "unknown")
        if decision not in ("random", "dyhpo", "sh", "fallback"):
            decision = "unknown"
        fit: SurrogateFit | None = None
        raw = info.get("fit", info.get("gp_fit"))
        if isinstance(raw, Mapping):
            try:
                fit = SurrogateFit.from_json(raw)
            except (KeyError, TypeError, ValueError):
                fit = None
        reason = info.get("fallback")
        winner = info.get("winner")
        return cls(
            decision=decision,
            reason=None if reason is None else str(reason),
            winner=None if winner is None else str(winner),
            fit=fit,
        )


# -------------------------------------------------------------------- rungs
def rung_levels_for(
    max_t: float,
    grace_period: float = 1,
    reduction_factor: float = 3,
    rung_spacing: str = "geometric",
    rung_increment: float | None = None,
) -> list[float]:
    """Rung levels ``r_min = grace_period, ..., max_t``.

    Geometric: ``grace_period * eta^k`` below ``max_t``. Linear (the paper,
    Syne Tune's DyHPO): ``grace_period + k * rung_increment`` below ``max_t``
    (``rung_increment`` defaults to ``grace_period``). ``max_t`` is always
    the last level. Levels are ints when ``grace_period`` and ``max_t`` are
    ints (rounded, as Syne Tune does).

    Example:
        >>> rung_levels_for(27, 1, 3)
        [1, 3, 9, 27]
        >>> rung_levels_for(10, 2, rung_spacing="linear")
        [2, 4, 6, 8, 10]
        >>> rung_levels_for(10, 1, rung_spacing="linear", rung_increment=2)
        [1, 3, 5, 7, 9, 10]
    """
    as_int = float(grace_period).is_integer() and float(max_t).is_integer()
    step = grace_period if rung_increment is None else rung_increment
    levels: list[float] = []
    k = 0
    while True:
        if rung_spacing == "linear":
            level = grace_period + k * step
        else:
            level = grace_period * reduction_factor**k
        if as_int:
            level = round(level)
        if level >= max_t - _EPS:
            break
        if not levels or level > levels[-1]:
            levels.append(level)
        k += 1
    levels.append(int(max_t) if as_int else max_t)
    return levels


def _is_idle(t: TrialState) -> bool:
    """Paused, or a segment failed non-finally and nothing runs: can be scheduled."""
    return t.running is None and t.status in ("paused", "running")


def promotion_quota(n: int, level: float, next_level: float) -> int:
    """How many of the ``n`` trials at rung ``level`` SH may promote.

    The top fraction ``level / next_level`` (Syne Tune's promotion quantile
    ``r_j / r_{j+1}``): ``1/eta`` for geometric rungs, ``j / (j + 1)`` for
    linear ones, so the resource spent per rung stays level whatever the spacing.

    Example:
        >>> promotion_quota(9, 1, 3), promotion_quota(9, 3, 4), promotion_quota(3, 1, 2)
        (3, 6, 1)
    """
    return int(n * level / next_level + _EPS)


def sh_promotable(
    levels: Sequence[float],
    trials: Mapping[str, TrialState],
    allowed: Mapping[str, bool],
) -> str | None:
    """The trial promotion-based successive halving promotes now, if any.

    ASHA's rule (Li et al. 2020) with Syne Tune's promotion quantiles: scan
    rungs from the highest below ``max_t`` down; in rung ``r_k`` take the top
    :func:`promotion_quota` trials that reached it (failed trials excluded);
    the first one that is still paused at ``r_k`` and ``allowed`` is promoted.

    Args:
        levels: Rung levels, ``max_t`` last.
        trials: All trials.
        allowed: ``trial_id -> bool`` for trials that may be promoted now
            (idle and affordable).
    """
    for k in range(len(levels) - 2, -1, -1):
        level = levels[k]
        members = sorted(
            (t.results[level], t.trial_id)
            for t in trials.values()
            if t.status != "failed" and level in t.results
        )
        top = members[: promotion_quota(len(members), level, levels[k + 1])]
        for _, tid in top:
            if allowed.get(tid, False) and trials[tid].resource == level:
                return tid
    return None


@dataclass
class Scores:
    """Surrogate scores for one decision (:meth:`DyHPOScheduler.scores`).

    Attributes:
        paused: ``trial_id -> (acquisition, incumbent)`` for every paused trial,
            scored for its next rung level.
        new_configs: Fresh configurations, scored for the first rung level.
        new_acq: Their acquisition values.
        new_incumbent: Best score observed at the first rung level.
        n_train: Observations in the posterior.
        surrogate: ``gp`` or ``dkgp``.
        fit: Parameters fitted for this decision (None when a recorded fit was reused).
        new_pick: The fresh configuration that runs if a new trial wins
            (``new_config_target``); None: the one with the best ``new_acq``.
    """

    paused: dict[str, tuple[float, float]]
    new_configs: CandidatePool
    new_acq: np.ndarray
    new_incumbent: float
    n_train: int
    surrogate: SurrogateKind
    fit: SurrogateFit | None
    new_pick: int | None = None


class DyHPOScheduler(Scheduler):
    """DyHPO (Wistuba et al. 2022) with Syne Tune's rung system, geometric by default.

    Paper symbols: ``b_min`` = ``grace_period`` (first rung level), ``b_max`` =
    ``max_t``, the budget step = ``rung_increment`` (the distance to the next
    rung level). ``reduction_factor`` (eta) only for geometric rungs.

    Args:
        max_t: Resource at which a trial is complete (``b_max``).
        grace_period: First rung level (``b_min``).
        rung_increment: Step between linear rung levels (Syne Tune's
            ``rung_increment``; ``rung_increment=2`` gives Syne Tune's DyHPO
            rungs 1, 3, 5, ...). Passing it selects linear levels; with
            ``rung_spacing="linear"`` and no increment the step is
            ``grace_period``.
        reduction_factor: eta of geometric rung levels (default 3).
        rung_levels: Explicit increasing rung levels; overrides the above
            (``max_t`` is appended when missing).
        rung_spacing: ``"linear"`` or ``"geometric"``; default: geometric
            unless ``rung_increment`` is given (module docstring: why not
            Syne Tune's linear default).
        probability_sh: Probability of first applying the successive-halving
            promotion rule at a decision, falling through to DyHPO when SH
            promotes nothing (Syne Tune's default 0.25). With 1 decisions are
            exactly promotion-based SH and the surrogate only picks the
            configurations of new trials.
        surrogate: ``"gp"`` (Matern ARD GP, default) or ``"dkgp"`` (the
            paper's deep-kernel GP on the same inputs).
        curve_length: Last epochs of the learning curve fed to the surrogate
            (0: no curve input).
        cost_aware: Divide expected improvement by the resource of the step.
        new_config_target: Which fresh configuration a new trial gets:
            ``"max_t"`` (default) the one with the best EI at ``max_t``;
            ``"first_rung"`` the one with the best MF-EI at the first rung
            (the paper). Either way, whether a new trial runs at all is the
            paper's rule (MF-EI at the first rung against the paused trials).
        resource_attr: Name of the resource in reports; accepted for
            compatibility with Syne Tune (the flow reports ``resource``).
        num_init_random: Warm-up: decisions start random new trials until this
            many observations (trial, rung) exist.
        num_candidates: Fresh random configurations scored per decision.
        max_gp_points: Most observations in the posterior.
        points_per_trial: Latest observations per trial kept for the posterior.
        refit_every: Refit surrogate parameters every this many model decisions.
        dkgp_min_points: Observations before the deep kernel is trained; the
            Matern GP decides until then.
        **kwargs: ``space``, ``metric``, ``mode``, ``seed``, ``budget``
            (see :class:`schedulers.Scheduler`).

    Example:
        >>> from schedulers import Budget, SearchSpace
        >>> from schedulers.simulate import simulate
        >>> space = SearchSpace.parse(
        ...     {"lr": {"type": "float", "low": 1e-3, "high": 1, "log": True}})
        >>> s = DyHPOScheduler(space=space, metric="loss", max_t=9, num_init_random=3,
        ...                    num_candidates=16, budget=Budget(max_resource=40))
        >>> s.rung_levels
        [1, 3, 9]
        >>> def objective(config, start, stop, state):
        ...     return [{"resource": stop, "loss": abs(config["lr"] - 0.1) + 1 / stop}], None
        >>> result = simulate(s, objective, max_concurrency=2)
        >>> result.resource_used <= 40
        True
        >>> sorted({kind for *_, kind in s.schedule_records})
        ['new', 'promoted']
    """

    name = "dyhpo"

    def __init__(
        self,
        *,
        max_t: float,
        grace_period: float = 1,
        rung_increment: float | None = None,
        reduction_factor: float | None = None,
        rung_levels: Sequence[float] | None = None,
        rung_spacing: Literal["geometric", "linear"] | None = None,
        probability_sh: float = 0.25,
        surrogate: SurrogateKind = "gp",
        curve_length: int = 4,
        cost_aware: bool = True,
        new_config_target: Literal["max_t", "first_rung"] = "max_t",
        resource_attr: str = "epoch",
        num_init_random: int = 6,
        num_candidates: int = 128,
        max_gp_points: int = 128,
        points_per_trial: int = 4,
        refit_every: int = 10,
        dkgp_min_points: int = DKGP_MIN_POINTS,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.max_t = check_argument("max_t", max_t)
        self.grace_period = check_grace_period(check_argument("grace_period", grace_period), max_t)
        if reduction_factor is not None:
            check_reduction_factor(reduction_factor)
        if rung_increment is not None:
            check_argument("rung_increment", rung_increment)
        if rung_spacing is not None:
            check_argument("rung_spacing", rung_spacing)
        if rung_spacing is None:
            # rungflow's default is geometric (measured; see the module
            # docstring); rung_increment alone selects Syne Tune's linear rungs.
            rung_spacing = "linear" if rung_increment is not None else "geometric"
        self.rung_spacing = rung_spacing
        self.reduction_factor = 3.0 if reduction_factor is None else float(reduction_factor)
        self.rung_increment = rung_increment
        if rung_levels is None:
            levels = rung_levels_for(
                max_t, grace_period, self.reduction_factor, rung_spacing, rung_increment
            )
        else:
            levels = self._check_levels(rung_levels, max_t)
        self.rung_levels: list[float] = levels
        self.probability_sh = check_argument("probability_sh", probability_sh)
        self.surrogate: SurrogateKind = check_argument("surrogate", surrogate)
        self.curve_length = check_argument("curve_length", curve_length)
        self.cost_aware = check_argument("cost_aware", cost_aware)
        self.new_config_target = check_argument("new_config_target", new_config_target)
        self.resource_attr = check_argument("resource_attr", resource_attr)
        self.num_init_random = check_argument("num_init_random", num_init_random)
        self.num_candidates = check_argument("num_candidates", num_candidates)
        self.max_gp_points = check_argument("max_gp_points", max_gp_points)
        self.points_per_trial = check_argument("points_per_trial", points_per_trial)
        self.refit_every = check_argument("refit_every", refit_every)
        self.dkgp_min_points = check_argument("dkgp_min_points", dkgp_min_points)
        self._next_level = dict(zip(self.rung_levels[:-1], self.rung_levels[1:], strict=True))
        self._prev_level = dict(zip(self.rung_levels[1:], self.rung_levels[:-1], strict=True))
        # ---- folded state (changed only in on_event) ----
        self._encoded: dict[str, np.ndarray | None] = {}
        self._imported_curves: dict[str, list[tuple[float, float]]] = {}
        self._records: list[ScheduleRecord] = []
        self._seen_segments: set[tuple[str, float, float]] = set()
        self._decision_counts: dict[str, int] = {}
        self._n_model_decisions = 0
        self._fits: dict[str, SurrogateFit] = {}
        self._fit_at_decision = 0
        # Memo of derived data (never decides anything; see _epoch_curve).
        self._curve_cache: dict[str, tuple[Any, tuple[list[float], list[float]]]] = {}

    @property
    def _gp_params(self) -> GPParams | DKGPParams | None:
        """Parameters of the latest recorded fit (for tests and inspection)."""
        fit = self._latest_fit
        return None if fit is None else fit.params

    @property
    def _latest_fit(self) -> SurrogateFit | None:
        return self._fits.get("latest")

    @staticmethod
    def _check_levels(rung_levels: Sequence[float], max_t: float) -> list[float]:
        levels = list(rung_levels)
        if not levels:
            raise SchedulerArgumentError("rung_levels", "rung_levels is [], but must be non-empty")
        for i, level in enumerate(levels):
            check_positive(f"rung_levels[{i}]", level)
        if any(b <= a for a, b in itertools.pairwise(levels)):
            raise SchedulerArgumentError(
                "rung_levels", f"rung_levels is {levels}, but must be strictly increasing"
            )
        if levels[-1] > max_t:
            raise SchedulerArgumentError(
                "rung_levels", f"rung_levels is {levels}, but must not exceed max_t ({max_t})"
            )
        if levels[-1] < max_t:
            levels.append(max_t)
        return levels

    # ------------------------------------------------------------------ fold
    def on_event(self, event: Event) -> None:
        if isinstance(event, ObservationImported):
            obs = self.imported[event.observation_id]
            curve = sorted(obs.at(self.rung_levels))
            if curve:
                self._encode(obs.observation_id, obs.config)
                if self._encoded.get(obs.observation_id) is not None:
                    self._imported_curves[obs.observation_id] = curve
        elif isinstance(event, TrialCreated):
            self._encode(event.trial_id, event.config)
        elif isinstance(event, SegmentStarted):
            key = (event.trial_id, float(event.start), float(event.stop))
            if key in self._seen_segments:  # a resumed flow re-ran this segment
                return
            self._seen_segments.add(key)
            self._encode(event.trial_id, event.config)
            kind: Literal["new", "promoted"] = "new" if event.start == 0 else "promoted"
            self._records.append((event.trial_id, event.start, event.stop, kind))
            record = DyHPODecision.from_info(event.info)
            label = f"{'started' if kind == 'new' else 'promoted'}_by_{record.decision}"
            self._decision_counts[label] = self._decision_counts.get(label, 0) + 1
            if record.fit is not None:
                self._fits[record.fit.kind] = record.fit
                self._fits["latest"] = record.fit
                self._fit_at_decision = self._n_model_decisions
            if record.decision == "dyhpo":
                self._n_model_decisions += 1

    def _encode(self, trial_id: str, config: Mapping[str, Any]) -> None:
        try:
            self._encoded[trial_id] = encode_config(self.space, config)
        except (GPError, KeyError, ValueError, TypeError):
            self._encoded[trial_id] = None  # not in the space: left out of the surrogate

    # ------------------------------------------------------------ properties
    @property
    def schedule_records(self) -> list[ScheduleRecord]:
        """``(trial_id, from_resource, to_resource, "new" | "promoted")`` per segment."""
        return list(self._records)

    def status_extras(self) -> dict[str, Any]:
        return {
            "rung_levels": list(self.rung_levels),
            "schedule_records": [list(r) for r in self._records],
            "schedule_summary": dict(sorted(self._decision_counts.items())),
        }

    def next_level(self, resource: float) -> float:
        """The first rung level above ``resource`` (``max_t`` at most)."""
        if resource in self._next_level:
            return self._next_level[resource]
        for level in self.rung_levels:
            if level > resource + _EPS:
                return level
        return self.max_t

    # ---------------------------------------------------------------- decide
    def ask(self, n: int = 1) -> list[Action]:
        """One action: DyHPO decides one step at a time (``n`` is not used).

        Every decision is scored against the state after the previous one was
        told, which is how the flow drives schedulers (``ask(1)``).
        """
        if not self.finished:
            action = self._decide()
            if action is not None:
                return [action]
        if self.running:
            return [Wait()]
        return [self.done_action()]

    def _decide(self) -> Action | None:
        # 1. Finish trials that reached max_t, and drop those whose metric is
        #    missing (NaN/absent): nothing sensible can be said about them.
        for t in self.trials.values():
            if not _is_idle(t):
                continue
            if t.resource >= self.max_t - _EPS:
                return Stop(t.trial_id, "reached max_t", {"resource": t.resource})
            if t.resource > 0 and t.last_score is None:
                return Stop(t.trial_id, "metric missing", {"resource": t.resource})

        # 2. What may run now.
        allowed: dict[str, bool] = {}
        for t in self.trials.values():
            if _is_idle(t):
                allowed[t.trial_id] = self.can_spend(self.next_level(t.resource) - t.resource)
        new_ok = self.can_create_trial() and self.can_spend(self.rung_levels[0])
        if not new_ok and not any(allowed.values()):
            return None

        rng = self.rng(_SALT_ACTION)
        # 3. Successive halving with probability probability_sh.
        if self.probability_sh >= 1.0 or rng.random() < self.probability_sh:
            tid = sh_promotable(self.rung_levels, self.trials, allowed)
            if tid is not None:
                return self._promote(tid, DyHPODecision("sh"))
            if self.probability_sh >= 1.0:
                return self._model_new(rng) if new_ok else None

        # 4. Warm-up.
        if self._n_observations() < self.num_init_random:
            if new_ok:
                return self._new(self.space.sample(rng), DyHPODecision("random"))
            return self._fallback(allowed, new_ok, rng, "warm-up, no new trials allowed")

        # 5. DyHPO.
        scores = self.scores()
        if isinstance(scores, str):
            return self._fallback(allowed, new_ok, rng, scores)
        return self._pick(scores, allowed, new_ok)

    # --------------------------------------------------------- action makers
    def _promote(self, tid: str, record: DyHPODecision) -> RunSegment:
        t = self.trials[tid]
        stop = self.next_level(t.resource)
        return RunSegment(
            tid, dict(t.config), t.resource, stop, restore_from=t.checkpoint, info=record.to_info()
        )

    def _new(self, config: Mapping[str, Any], record: DyHPODecision) -> RunSegment:
        tid = self.new_trial_id()
        first = self.rung_levels[0]
        return RunSegment(tid, dict(config), 0, first, new_trial=True, info=record.to_info())

    def _fallback(
        self,
        allowed: Mapping[str, bool],
        new_ok: bool,
        rng: np.random.Generator,
        reason: str,
    ) -> RunSegment | None:
        """Model-free decision: SH promotion, else a random new trial, else the
        paused trial ranked best within its rung (so a capped run still ends)."""
        record = DyHPODecision("fallback", reason=reason)
        tid = sh_promotable(self.rung_levels, self.trials, allowed)
        if tid is not None:
            return self._promote(tid, record)
        if new_ok:
            return self._new(self.space.sample(rng), record)
        ranked: list[tuple[float, float, str]] = []
        for tid, ok in allowed.items():
            if not ok:
                continue
            t = self.trials[tid]
            score = t.last_score
            if score is None:
                ranked.append((0.0, -t.resource, tid))
                continue
            peers = [
                u.results[t.resource]
                for u in self.trials.values()
                if u.status != "failed" and t.resource in u.results
            ]
            ranked.append((sum(p < score for p in peers) / len(peers), -t.resource, tid))
        if not ranked:
            return None
        return self._promote(min(ranked)[2], record)

    def _model_new(self, rng: np.random.Generator) -> RunSegment | None:
        """probability_sh == 1: SH found nothing; the surrogate picks the new config."""
        if self._n_observations() < self.num_init_random:
            return self._new(self.space.sample(rng), DyHPODecision("random"))
        scores = self.scores()
        if isinstance(scores, str):
            return self._new(self.space.sample(rng), DyHPODecision("fallback", reason=scores))
        return self._pick(scores, {}, True)

    def _pick(
        self, scores: Scores, allowed: Mapping[str, bool], new_ok: bool
    ) -> RunSegment | None:
        best_paused: tuple[float, str] | None = None
        for tid, (acq, _) in scores.paused.items():
            if allowed.get(tid, False) and (best_paused is None or acq > best_paused[0]):
                best_paused = (acq, tid)
        best_new: tuple[float, int] | None = None
        if new_ok and len(scores.new_acq):
            k = int(np.argmax(scores.new_acq)) if scores.new_pick is None else scores.new_pick
            best_new = (float(np.max(scores.new_acq)), k)
        if best_paused is None and best_new is None:
            return None

        def record(winner: str, incumbent: float) -> DyHPODecision:
            return DyHPODecision(
                "dyhpo",
                winner=winner,
                surrogate=scores.surrogate,
                best_new_ei=None if best_new is None else _sig(best_new[0]),
                best_paused_ei=None if best_paused is None else _sig(best_paused[0]),
                incumbent=_sig(incumbent),
                n_scored=len(scores.paused) + len(scores.new_acq),
                n_train=scores.n_train,
                fit=scores.fit,
            )

        # Ties go to the paused trial: continuing costs no new warm-up.
        if best_paused is not None and (best_new is None or best_paused[0] >= best_new[0]):
            tid = best_paused[1]
            return self._promote(tid, record(tid, scores.paused[tid][1]))
        assert best_new is not None
        return self._new(
            scores.new_configs.config(best_new[1]), record("new", scores.new_incumbent)
        )

    # ------------------------------------------------------------- surrogate
    def _n_observations(self) -> int:
        own = sum(len(t.results) for t in self.trials.values())
        return own + sum(len(c) for c in self._imported_curves.values())

    def scores(self) -> Scores | str:
        """Surrogate scores for a decision now, or why they could not be computed.

        Pure, like :meth:`ask` (fits when a refit is due but records nothing).
        """
        try:
            return self._compute_scores()
        except (GPError, np.linalg.LinAlgError, ValueError, FloatingPointError) as exc:
            return f"{type(exc).__name__}: {exc}"[:200]

    def curves(self) -> dict[str, list[tuple[float, float]]]:
        """Per trial with a known encoding, its ``(rung resource, score)`` in order."""
        out = {}
        for t in self.trials.values():
            if self._encoded.get(t.trial_id) is None:
                continue
            out[t.trial_id] = sorted((r, s) for r, s in t.results.items() if r > 0)
        return out

    def training_curves(self) -> dict[str, list[tuple[float, float]]]:
        """:meth:`curves` plus imported observations' curves at the rung levels."""
        return {**self._imported_curves, **self.curves()}

    def _epoch_curve(self, tid: str) -> tuple[list[float], list[float]]:
        """Every report of ``tid`` as sorted ``(resources, scores)``; rung results
        when the trainable reported no per-epoch points (imported observations).

        Memoised on the trial's report counts: a pure function of folded state.
        """
        t = self.trials.get(tid)
        key = (len(t.history), len(t.results), t.resource) if t is not None else None
        cached = self._curve_cache.get(tid)
        if cached is not None and cached[0] == key:
            return cached[1]
        out = self._build_epoch_curve(tid)
        self._curve_cache[tid] = (key, out)
        return out

    def _build_epoch_curve(self, tid: str) -> tuple[list[float], list[float]]:
        t = self.trials.get(tid)
        points: dict[float, float] = {}
        if t is not None:
            points = {r: s for r, s in t.history if r > 0}
            for r, s in t.results.items():
                points.setdefault(r, s)
        else:
            points = dict(self._imported_curves.get(tid, []))
        keys = sorted(points)
        return keys, [points[k] for k in keys]

    def training_data(
        self, rng: np.random.Generator | None = None
    ) -> tuple[np.ndarray, np.ndarray, dict[float, float]]:
        """Surrogate inputs and targets after the size rule, and the best score per resource.

        Exposed so the surrogate can be fitted and inspected independently of
        a decision (``fit_gp(*s.training_data()[:2], rng)``).
        """
        x, y, best_at, _ = self._training_data(rng)
        return x, y, best_at

    def _training_data(
        self, rng: np.random.Generator | None = None
    ) -> tuple[np.ndarray, np.ndarray, dict[float, float], Any]:
        curves = self.training_curves()
        quantile = self._quantile_fn(curves)
        rows = _Rows(self)
        ys: list[float] = []
        best_at: dict[float, float] = {}
        for tid, curve in curves.items():
            enc = self._encoded[tid]
            assert enc is not None
            for r, s in curve:
                best_at[r] = min(best_at.get(r, math.inf), s)
            epochs = self._epoch_curve(tid)
            for j in range(max(0, len(curve) - self.points_per_trial), len(curve)):
                before = curve[j - 1][0] if j > 0 else 0.0
                rows.add(enc, curve[j][0], before, epochs)
                ys.append(curve[j][1])
        if not ys:
            raise GPError("no observations")
        x = rows.matrix(quantile)
        y = _winsorise(np.asarray(ys))
        if len(y) > self.max_gp_points:
            idx = _subset(y, self.max_gp_points, rng or self.rng(_SALT_SUBSAMPLE))
            x, y = x[idx], y[idx]
        return x, y, best_at, quantile

    @staticmethod
    def _quantile_fn(curves: Mapping[str, list[tuple[float, float]]]) -> Any:
        scores = np.sort(np.asarray([s for c in curves.values() for _, s in c], dtype=float))

        def quantile(values: np.ndarray) -> np.ndarray:
            v = np.asarray(values, dtype=float)
            if len(scores) == 0:
                return np.full(v.shape, 0.5)
            lo = np.searchsorted(scores, v, side="left")
            hi = np.searchsorted(scores, v, side="right")
            return (lo + hi) / 2 / len(scores)

        return quantile

    def _fit(self, x: np.ndarray, y: np.ndarray) -> tuple[SurrogateKind, SurrogateFit | None, Any]:
        """The surrogate for this decision: ``(kind, fit recorded now or None, model)``."""
        kind: SurrogateKind = self.surrogate
        if kind == "dkgp" and len(y) < self.dkgp_min_points:
            kind = "gp"
        due = self._n_model_decisions - self._fit_at_decision >= self.refit_every
        previous = self._fits.get(kind)
        if previous is not None and not _fits_shape(previous, x.shape[1]):
            previous = None
        if previous is not None and not due and self._latest_fit is previous:
            return kind, None, _posterior(x, y, previous)
        fit_rng = self.rng(_SALT_FIT)
        idx = _subset(y, FIT_POINTS, fit_rng) if len(y) > FIT_POINTS else np.arange(len(y))
        if kind == "dkgp":
            try:
                warm = previous.params if previous is not None else None
                assert warm is None or isinstance(warm, DKGPParams)
                params: GPParams | DKGPParams = fit_dkgp(
                    x[idx],
                    y[idx],
                    fit_rng,
                    hidden=_DKGP_HIDDEN,
                    n_out=_DKGP_OUT,
                    init=warm,
                    weight_decay=_DKGP_DECAY,
                    maxiter=_DKGP_MAXITER,
                ).rounded(5)
                fit = SurrogateFit("dkgp", params)
                return kind, fit, _posterior(x, y, fit)
            except GPError:
                kind = "gp"  # the Matern GP is the fallback of the deep kernel
                previous = self._fits.get("gp")
                if previous is not None and not _fits_shape(previous, x.shape[1]):
                    previous = None
        warm_gp = previous.params if previous is not None else None
        assert warm_gp is None or isinstance(warm_gp, GPParams)
        fitted = fit_gp(
            x[idx], y[idx], fit_rng, init=warm_gp, restarts=_GP_RESTARTS, maxiter=_GP_MAXITER
        )
        fit = SurrogateFit("gp", fitted.params.rounded(4))
        return "gp", fit, _posterior(x, y, fit)

    def _compute_scores(self) -> Scores:
        x, y, best_at, quantile = self._training_data(self.rng(_SALT_SUBSAMPLE))
        kind, fit, model = self._fit(x, y)

        overall = min(best_at.values())
        paused_ids: list[str] = []
        rows = _Rows(self)
        incumbents: list[float] = []
        costs: list[float] = []
        for t in self.trials.values():
            enc = self._encoded.get(t.trial_id)
            if enc is None or not _is_idle(t) or t.resource >= self.max_t - _EPS:
                continue
            target = self.next_level(t.resource)
            paused_ids.append(t.trial_id)
            rows.add(enc, target, t.resource, self._epoch_curve(t.trial_id))
            incumbents.append(best_at.get(target, overall))
            costs.append(target - t.resource)
        n_new = max(self.num_candidates, len(paused_ids))  # as Syne Tune
        pool = CandidatePool(self.space, n_new, self.rng(_SALT_CANDIDATES))
        first = self.rung_levels[0]
        new_x = np.hstack([pool.encoded, np.tile([first / self.max_t, 0.0], (n_new, 1))])
        if self.curve_length:
            new_x = np.hstack([new_x, np.zeros((n_new, self.curve_length + 1))])
        new_incumbent = best_at.get(first, overall)
        incumbents.extend([new_incumbent] * n_new)
        costs.extend([first] * n_new)
        xs = new_x if not paused_ids else np.vstack([rows.matrix(quantile), new_x])
        mean, std = model.predict(xs)
        acq = expected_improvement(mean, std, np.asarray(incumbents))
        if self.cost_aware:
            acq = acq / np.asarray(costs)
        if not np.all(np.isfinite(acq)):
            raise GPError("acquisition is not finite")
        n_paused = len(paused_ids)
        new_pick: int | None = None
        if self.new_config_target == "max_t" and self.max_t > first:
            # Whether a new trial runs is the paper's MF-EI at the first rung
            # (above); which configuration it gets is the best EI at max_t
            # against the best full-fidelity score, so a first rung that
            # misleads (fast learners lead) does not pick the configuration.
            final_x = new_x.copy()
            final_x[:, pool.encoded.shape[1]] = 1.0
            f_mean, f_std = model.predict(final_x)
            f_ei = expected_improvement(
                f_mean, f_std, np.full(n_new, best_at.get(self.max_t, overall))
            )
            if np.all(np.isfinite(f_ei)):
                new_pick = int(np.argmax(f_ei))
        return Scores(
            paused={
                tid: (float(acq[i]), incumbents[i]) for i, tid in enumerate(paused_ids)
            },
            new_configs=pool,
            new_acq=acq[n_paused:],
            new_incumbent=new_incumbent,
            n_train=len(y),
            surrogate=kind,
            fit=fit,
            new_pick=new_pick,
        )


class CandidatePool:
    """``n`` random configurations drawn column by column, already encoded.

    Same law as :meth:`SearchSpace.sample` (optuna's RandomSampler) and the same
    encoding as :func:`schedulers.gp.encode_config`, without building ``n``
    dicts: only the winner becomes a configuration (:meth:`config`).
    """

    def __init__(self, space: Any, n: int, rng: np.random.Generator) -> None:
        self.values: dict[str, np.ndarray] = {}
        self.kinds: dict[str, Any] = {}
        columns: list[np.ndarray] = []
        for name, dist in space.items():
            if isinstance(dist, CategoricalDistribution):
                idx = rng.integers(len(dist.choices), size=n)
                self.values[name] = idx
                self.kinds[name] = dist.choices
                columns.append(np.eye(len(dist.choices))[idx])
                continue
            low, high = float(dist.low), float(dist.high)
            if isinstance(dist, FloatDistribution):
                if dist.log:
                    v = np.exp(rng.uniform(math.log(low), math.log(high), size=n))
                elif dist.step is not None:
                    steps = round((high - low) / dist.step)
                    v = low + dist.step * rng.integers(steps + 1, size=n)
                else:
                    v = rng.uniform(low, high, size=n)
                v = np.clip(v, low, high)
                self.kinds[name] = float
            elif isinstance(dist, IntDistribution):
                if dist.log:
                    raw = np.exp(rng.uniform(math.log(low - 0.5), math.log(high + 0.5), size=n))
                    v = np.clip(np.round(raw), low, high)
                else:
                    steps = (int(high) - int(low)) // dist.step
                    v = low + dist.step * rng.integers(steps + 1, size=n)
                self.kinds[name] = int
            else:
                raise GPError(f"cannot sample parameter {name!r} with distribution {dist!r}")
            self.values[name] = v
            if high <= low:
                columns.append(np.full((n, 1), 0.5))
            elif dist.log:
                unit = (np.log(v) - math.log(low)) / (math.log(high) - math.log(low))
                columns.append(np.clip(unit, 0.0, 1.0)[:, None])
            else:
                columns.append(np.clip((v - low) / (high - low), 0.0, 1.0)[:, None])
        self.encoded = np.hstack(columns) if columns else np.zeros((n, 0))
        self.n = n

    def __len__(self) -> int:
        return self.n

    def config(self, k: int) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name, kind in self.kinds.items():
            value = self.values[name][k]
            if kind is float:
                out[name] = float(value)
            elif kind is int:
                out[name] = int(value)
            else:
                out[name] = kind[int(value)]
        return out


class _Rows:
    """Surrogate inputs, collected row by row and assembled in one pass.

    A row predicts the score at ``target`` from the curve up to ``current``::

        [enc, target / max_t, current / max_t, q(last L epochs up to current), flag]

    The quantile transform ``q`` runs once over all rows (it is the hot spot
    of a decision when done per row).
    """

    def __init__(self, s: DyHPOScheduler) -> None:
        self.max_t = s.max_t
        self.n_curve = s.curve_length
        self.enc: list[np.ndarray] = []
        self.budget: list[tuple[float, float]] = []
        self.tails: list[list[float]] = []
        self.flags: list[float] = []

    def add(
        self,
        enc: np.ndarray,
        target: float,
        current: float,
        epochs: tuple[list[float], list[float]],
    ) -> None:
        self.enc.append(enc)
        self.budget.append((target / self.max_t, current / self.max_t))
        if self.n_curve == 0:
            return
        resources, scores = epochs
        end = bisect.bisect_right(resources, current + _EPS) if current > 0 else 0
        if end == 0:
            self.tails.append([math.nan] * self.n_curve)
            self.flags.append(0.0)
            return
        tail = scores[max(0, end - self.n_curve) : end]
        self.tails.append([tail[0]] * (self.n_curve - len(tail)) + tail)
        self.flags.append(1.0)

    def matrix(self, quantile: Any) -> np.ndarray:
        parts = [np.vstack(self.enc), np.asarray(self.budget)]
        if self.n_curve:
            tails = np.asarray(self.tails, dtype=float)
            missing = np.isnan(tails)
            q = quantile(np.where(missing, 0.0, tails))
            parts += [np.where(missing, 0.0, q), np.asarray(self.flags)[:, None]]
        return np.hstack(parts)


def _fits_shape(fit: SurrogateFit, n_in: int) -> bool:
    if isinstance(fit.params, DKGPParams):
        return fit.params.n_in == n_in
    return len(fit.params.lengthscales) == n_in


def _posterior(x: np.ndarray, y: np.ndarray, fit: SurrogateFit) -> Any:
    if isinstance(fit.params, DKGPParams):
        return DeepKernelGP(x, y, fit.params)
    return GaussianProcess(x, y, fit.params)


def _winsorise(y: np.ndarray) -> np.ndarray:
    """Clip the bad tail at q75 + 3 IQR so one diverged run cannot flatten the GP."""
    if len(y) < 4:
        return y
    q25, q75 = np.percentile(y, [25, 75])
    if q75 <= q25:
        return y
    return np.minimum(y, q75 + 3.0 * (q75 - q25))


def _subset(y: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    """Indices of the best ``size // 4`` targets plus a uniform sample of the rest."""
    order = np.argsort(y, kind="stable")
    n_best = size // 4
    rest = order[n_best:]
    picked = rng.choice(len(rest), size=size - n_best, replace=False)
    return np.sort(np.concatenate([order[:n_best], rest[np.sort(picked)]]))


def _sig(value: float, digits: int = 4) -> float:
    return float(f"{value:.{digits}g}")
