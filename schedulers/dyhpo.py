"""DyHPO: dynamic gray-box scheduling with a learning-curve surrogate.

Wistuba, Kadra and Grabocka, "Supervising the Multi-Fidelity Race of
Hyperparameter Configurations" (NeurIPS 2022), with the rung system of Syne
Tune's ``DyHPORungSystem``.

Every time a worker frees, each paused trial is scored for running to its next
rung level, together with ``num_candidates`` fresh random configurations scored
for running to the first rung level; the winner runs. The score is the paper's
multi-fidelity expected improvement: EI of the surrogate's prediction at the
candidate's *target* resource against the best value observed at that resource.

The surrogate is a GP (:mod:`schedulers.gp`) instead of the paper's deep kernel
with a CNN over the learning curve. Its inputs for an observation of trial
``x`` at resource ``r_j`` are::

    [ encode(x) in [0,1]^d,            # log scaling, one-hot, ints scaled
      log1p(r_j) / log1p(max_t),       # target resource
      q(y_{j-1}),                      # last score before r_j, as its quantile
      q(y_{j-1}) - q(y_{j-2}),         # slope of the last two points
      1 if the trial has a curve else 0 ]

where ``q`` is the empirical CDF of every score observed so far (robust to
diverging losses). New configurations have no curve (zeros, flag 0). This is
the scalar summary of the curve the issue allows in place of the CNN.

GP-size rule (keeps a decision well under 100 ms at 2,000 observations):

1. per trial only its latest ``points_per_trial`` observations enter the GP
   (the curve feature already summarises the earlier ones);
2. if more than ``max_gp_points`` remain, keep the best quarter by score (they
   shape EI near the incumbents) and fill up with a uniform subsample drawn
   with the decision's generator;
3. hyperparameters are fitted on at most :data:`FIT_POINTS` of those points
   (again best quarter + subsample) and only every ``refit_every`` model
   decisions, warm-started from the previous fit. The fitted (rounded)
   hyperparameters are recorded in the decision's event info and folded back
   by ``tell``, so the next decisions, and any replay, use exactly the same
   values; ``tell`` never fits anything.

Warm start: an imported observation (:class:`~schedulers.events.ObservationImported`)
joins the GP's training data with its results at the rung levels (points at
other resources are left out, so its curve features mean what they mean for
a trial), counts towards ``num_init_random`` and sets the EI incumbents. It
is never scored as a paused trial nor promoted, and the SH fallback ranks
trials only. A retried failed trial is simply paused again and competes
like any other.

Numerical trouble (non-PD kernel after jitter, optimiser failure, NaN data)
never raises: the decision falls back to the successive-halving rule and
records ``info["fallback"]``.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from schedulers.actions import Action, RunSegment, Stop, Wait
from schedulers.base import Scheduler, SchedulerArgumentError, TrialState
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
    check_choice,
    check_grace_period,
    check_int,
    check_name,
    check_number,
    check_positive,
    check_reduction_factor,
)

__all__ = ["FIT_POINTS", "DyHPOScheduler", "ScheduleRecord", "rung_levels_for", "sh_promotable"]

#: Most points used to fit GP hyperparameters (the posterior uses up to
#: ``max_gp_points``). The likelihood costs O(n^3) per L-BFGS-B step; 48 points
#: keep a fit with one restart around 20-30 ms on one core.
FIT_POINTS = 48
#: Random restarts of the likelihood optimiser: cold fit / warm refit.
_COLD_RESTARTS = 1
_WARM_RESTARTS = 1
_FIT_MAXITER = 30

# Salts of self.rng(): one stream per purpose, so adding draws to one purpose
# never shifts another.
_SALT_CANDIDATES = 1
_SALT_SUBSAMPLE = 2
_SALT_FIT = 3
_SALT_ACTION = 100  # + action index within one ask

_EPS = 1e-9

ScheduleRecord = tuple[str, float, float, Literal["new", "promoted"]]


def rung_levels_for(
    max_t: float,
    grace_period: float = 1,
    reduction_factor: float = 3,
    rung_spacing: str = "geometric",
) -> list[float]:
    """Rung levels ``r_min = grace_period, ..., max_t``.

    Geometric (Syne Tune's default): ``grace_period * eta^k`` below ``max_t``.
    Linear (the paper): ``k * grace_period`` below ``max_t``. ``max_t`` is
    always the last level. Levels are ints when ``grace_period`` and ``max_t``
    are ints (rounded, as Syne Tune does).

    Example:
        >>> rung_levels_for(27, 1, 3)
        [1, 3, 9, 27]
        >>> rung_levels_for(10, 2, rung_spacing="linear")
        [2, 4, 6, 8, 10]
    """
    as_int = float(grace_period).is_integer() and float(max_t).is_integer()
    levels: list[float] = []
    k = 0
    while True:
        if rung_spacing == "linear":
            level = grace_period * (k + 1)
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


def sh_promotable(
    levels: Sequence[float],
    reduction_factor: float,
    trials: Mapping[str, TrialState],
    allowed: Mapping[str, bool],
) -> str | None:
    """The trial promotion-based successive halving promotes now, if any.

    ASHA's rule (Li et al. 2020; Syne Tune's ``PromotionRungSystem``): scan rungs
    from the highest below ``max_t`` down; in rung ``r_k`` take the top
    ``floor(n_k / eta)`` trials that reached it (failed trials excluded); the
    first one that is still paused at ``r_k`` and ``allowed`` is promoted.

    Args:
        levels: Rung levels, ``max_t`` last.
        reduction_factor: eta.
        trials: All trials.
        allowed: ``trial_id -> bool`` for trials that may be promoted now
            (idle, affordable, not already chosen in this ask).
    """
    for level in reversed(levels[:-1]):
        members = sorted(
            (t.results[level], t.trial_id)
            for t in trials.values()
            if t.status != "failed" and level in t.results
        )
        top = members[: int(len(members) / reduction_factor + _EPS)]
        for _, tid in top:
            if allowed.get(tid, False) and trials[tid].resource == level:
                return tid
    return None


@dataclass
class _Scores:
    """Surrogate scores for one decision (computed at most once per ask)."""

    paused: dict[str, float]
    new_configs: list[dict[str, Any]]
    new_ei: np.ndarray
    n_gp: int
    params: GPParams
    refit: bool


@dataclass
class _Plan:
    """What earlier actions of the same ``ask`` already committed."""

    promoted: set[str] = field(default_factory=set)
    stopped: set[str] = field(default_factory=set)
    used_new: set[int] = field(default_factory=set)
    n_new: int = 0
    resource: float = 0.0
    fit_recorded: bool = False


class DyHPOScheduler(Scheduler):
    """DyHPO (Wistuba et al. 2022) with Syne Tune's rung system.

    Paper symbols: ``b_min`` = ``grace_period`` (first rung level), ``b_max`` =
    ``max_t``, the budget step = the distance to the next rung level (linear
    rungs reproduce the paper's fixed step; geometric ones Syne Tune's default),
    eta = ``reduction_factor`` (only for geometric rungs and the SH rule).

    Args:
        max_t: Resource at which a trial is complete (``b_max``).
        grace_period: First rung level (``b_min``).
        reduction_factor: eta of the geometric rung levels and of the SH rule.
        rung_levels: Explicit increasing rung levels; overrides the two above
            (``max_t`` is appended when missing).
        rung_spacing: ``"geometric"`` (Syne Tune) or ``"linear"`` (the paper:
            steps of ``grace_period``).
        probability_sh: Probability of first applying the successive-halving
            promotion rule at a decision, falling through to DyHPO when SH
            promotes nothing. Syne Tune's default is 0 (pure DyHPO); it
            ensures trials get promoted even if the model only likes new
            configurations. With 1 (not allowed in Syne Tune) decisions are
            exactly promotion-based SH and the surrogate only picks the
            configurations of new trials.
        resource_attr: Name of the resource in reports; accepted for
            compatibility with Syne Tune (the flow reports ``resource``).
        num_init_random: Warm-up: decisions start random new trials until this
            many observations (trial, rung) exist.
        num_candidates: Fresh random configurations scored per decision.
        max_gp_points: Most observations in the GP posterior (see the
            module docstring for the size rule).
        points_per_trial: Latest observations per trial kept for the GP.
        refit_every: Refit GP hyperparameters every this many model decisions.
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
        reduction_factor: float = 3,
        rung_levels: Sequence[float] | None = None,
        rung_spacing: Literal["geometric", "linear"] = "geometric",
        probability_sh: float = 0.0,
        resource_attr: str = "epoch",
        num_init_random: int = 6,
        num_candidates: int = 128,
        max_gp_points: int = 256,
        points_per_trial: int = 4,
        refit_every: int = 5,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.max_t = check_positive("max_t", max_t)
        self.grace_period = check_grace_period(check_positive("grace_period", grace_period), max_t)
        self.reduction_factor = check_reduction_factor(reduction_factor)
        check_choice("rung_spacing", rung_spacing, ("geometric", "linear"))
        self.rung_spacing = rung_spacing
        if rung_levels is None:
            levels = rung_levels_for(max_t, grace_period, reduction_factor, rung_spacing)
        else:
            levels = self._check_levels(rung_levels, max_t)
        self.rung_levels: list[float] = levels
        self.probability_sh = check_number("probability_sh", probability_sh, low=0, high=1)
        self.resource_attr = check_name("resource_attr", resource_attr)
        self.num_init_random = check_int("num_init_random", num_init_random, 1)
        self.num_candidates = check_int("num_candidates", num_candidates, 1)
        self.max_gp_points = check_int("max_gp_points", max_gp_points, 4)
        self.points_per_trial = check_int("points_per_trial", points_per_trial, 1)
        self.refit_every = check_int("refit_every", refit_every, 1)
        self._next_level = dict(zip(self.rung_levels[:-1], self.rung_levels[1:], strict=True))
        # ---- folded state (changed only in on_event) ----
        self._encoded: dict[str, np.ndarray | None] = {}
        self._imported_curves: dict[str, list[tuple[float, float]]] = {}
        self._records: list[ScheduleRecord] = []
        self._seen_segments: set[tuple[str, float, float]] = set()
        self._decision_counts: dict[str, int] = {}
        self._n_model_decisions = 0
        self._gp_params: GPParams | None = None
        self._fit_at_decision = 0

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
            info = event.info or {}
            decision = str(info.get("decision", "unknown"))
            label = f"{'started' if kind == 'new' else 'promoted'}_by_{decision}"
            self._decision_counts[label] = self._decision_counts.get(label, 0) + 1
            fit = info.get("gp_fit")
            if isinstance(fit, Mapping):
                try:
                    self._gp_params = GPParams.from_json(fit)
                    self._fit_at_decision = self._n_model_decisions
                except (KeyError, TypeError, ValueError):
                    pass  # a malformed record only costs a refit
            if decision == "dyhpo":
                self._n_model_decisions += 1

    def _encode(self, trial_id: str, config: Mapping[str, Any]) -> None:
        try:
            self._encoded[trial_id] = encode_config(self.space, config)
        except (GPError, KeyError, ValueError, TypeError):
            self._encoded[trial_id] = None  # not in the space: left out of the GP

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
        actions: list[Action] = []
        plan = _Plan()
        memo: dict[str, _Scores | str] = {}
        if not self.finished:
            for i in range(n):
                action = self._decide(i, plan, memo)
                if action is None:
                    break
                actions.append(action)
        if actions:
            return actions
        if self.running:
            return [Wait()]
        return [self.done_action()]

    def _decide(self, i: int, plan: _Plan, memo: dict[str, _Scores | str]) -> Action | None:
        # 1. Finish trials that reached max_t, and drop those whose metric is
        #    missing (NaN/absent): nothing sensible can be said about them.
        for t in self.trials.values():
            if not _is_idle(t) or t.trial_id in plan.stopped:
                continue
            if t.resource >= self.max_t - _EPS:
                plan.stopped.add(t.trial_id)
                return Stop(t.trial_id, "reached max_t", {"resource": t.resource})
            if t.resource > 0 and t.last_score is None:
                plan.stopped.add(t.trial_id)
                return Stop(t.trial_id, "metric missing", {"resource": t.resource})

        # 2. What may run now.
        allowed: dict[str, bool] = {}
        for t in self.trials.values():
            if _is_idle(t) and t.trial_id not in plan.stopped | plan.promoted:
                cost = self.next_level(t.resource) - t.resource
                allowed[t.trial_id] = self.can_spend(cost, pending=plan.resource)
        first = self.rung_levels[0]
        new_ok = self.can_create_trial(plan.n_new) and self.can_spend(first, plan.resource)
        if not new_ok and not any(allowed.values()):
            return None

        rng = self.rng(_SALT_ACTION + i)
        # 3. Successive halving with probability probability_sh.
        if self.probability_sh >= 1.0 or rng.random() < self.probability_sh:
            tid = sh_promotable(self.rung_levels, self.reduction_factor, self.trials, allowed)
            if tid is not None:
                return self._promote(tid, plan, {"decision": "sh"})
            if self.probability_sh >= 1.0:
                if not new_ok:
                    return None
                return self._model_new(i, plan, memo, rng)

        # 4. Warm-up.
        if self._n_observations() < self.num_init_random:
            if new_ok:
                return self._new(self.space.sample(rng), plan, {"decision": "random"})
            return self._fallback(plan, allowed, new_ok, rng, "warm-up, no new trials allowed")

        # 5. DyHPO.
        scores = self._scores(memo)
        if isinstance(scores, str):
            return self._fallback(plan, allowed, new_ok, rng, scores)
        return self._pick(scores, plan, allowed, new_ok)

    # --------------------------------------------------------- action makers
    def _promote(self, tid: str, plan: _Plan, info: dict[str, Any]) -> RunSegment:
        t = self.trials[tid]
        stop = self.next_level(t.resource)
        plan.promoted.add(tid)
        plan.resource += stop - t.resource
        return RunSegment(
            tid, dict(t.config), t.resource, stop, restore_from=t.checkpoint, info=info
        )

    def _new(self, config: Mapping[str, Any], plan: _Plan, info: dict[str, Any]) -> RunSegment:
        tid = self.new_trial_id(offset=plan.n_new)
        plan.n_new += 1
        first = self.rung_levels[0]
        plan.resource += first
        return RunSegment(tid, dict(config), 0, first, new_trial=True, info=info)

    def _fallback(
        self,
        plan: _Plan,
        allowed: Mapping[str, bool],
        new_ok: bool,
        rng: np.random.Generator,
        reason: str,
    ) -> RunSegment | None:
        """Model-free decision: SH promotion, else a random new trial, else the
        paused trial ranked best within its rung (so a capped run still ends)."""
        tid = sh_promotable(self.rung_levels, self.reduction_factor, self.trials, allowed)
        if tid is not None:
            return self._promote(tid, plan, {"decision": "fallback", "fallback": reason})
        if new_ok:
            info = {"decision": "fallback", "fallback": reason}
            return self._new(self.space.sample(rng), plan, info)
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
        return self._promote(min(ranked)[2], plan, {"decision": "fallback", "fallback": reason})

    def _model_new(
        self, i: int, plan: _Plan, memo: dict[str, _Scores | str], rng: np.random.Generator
    ) -> RunSegment | None:
        """probability_sh == 1: SH found nothing; the surrogate picks the new config."""
        if self._n_observations() < self.num_init_random:
            return self._new(self.space.sample(rng), plan, {"decision": "random"})
        scores = self._scores(memo)
        if isinstance(scores, str):
            info = {"decision": "fallback", "fallback": scores}
            return self._new(self.space.sample(rng), plan, info)
        return self._pick(scores, plan, {}, True)

    def _pick(
        self, scores: _Scores, plan: _Plan, allowed: Mapping[str, bool], new_ok: bool
    ) -> RunSegment | None:
        best_paused: tuple[float, str] | None = None
        for tid, ei in scores.paused.items():
            if allowed.get(tid, False) and (best_paused is None or ei > best_paused[0]):
                best_paused = (ei, tid)
        best_new: tuple[float, int] | None = None
        if new_ok:
            for k, ei in enumerate(scores.new_ei):
                if k not in plan.used_new and (best_new is None or ei > best_new[0]):
                    best_new = (float(ei), k)
        if best_paused is None and best_new is None:
            return None
        info: dict[str, Any] = {
            "decision": "dyhpo",
            "best_new_ei": None if best_new is None else _sig(best_new[0]),
            "best_paused_ei": None if best_paused is None else _sig(best_paused[0]),
            "n_scored": len(scores.paused) + len(scores.new_ei),
            "n_gp": scores.n_gp,
        }
        if scores.refit and not plan.fit_recorded:
            info["gp_fit"] = scores.params.to_json()
            plan.fit_recorded = True
        # Ties go to the paused trial: continuing costs no new warm-up.
        if best_paused is not None and (best_new is None or best_paused[0] >= best_new[0]):
            info["winner"] = best_paused[1]
            return self._promote(best_paused[1], plan, info)
        assert best_new is not None
        plan.used_new.add(best_new[1])
        info["winner"] = "new"
        return self._new(scores.new_configs[best_new[1]], plan, info)

    # ------------------------------------------------------------- surrogate
    def _n_observations(self) -> int:
        own = sum(len(t.results) for t in self.trials.values())
        return own + sum(len(c) for c in self._imported_curves.values())

    def _scores(self, memo: dict[str, _Scores | str]) -> _Scores | str:
        """Surrogate scores, or the reason they could not be computed."""
        if "scores" not in memo:
            try:
                memo["scores"] = self._compute_scores()
            except (GPError, np.linalg.LinAlgError, ValueError, FloatingPointError) as exc:
                memo["scores"] = f"{type(exc).__name__}: {exc}"[:200]
        return memo["scores"]

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

    def training_data(
        self, rng: np.random.Generator | None = None
    ) -> tuple[np.ndarray, np.ndarray, dict[float, float]]:
        """GP inputs and targets after the size rule, and the best score per resource.

        Exposed so the surrogate can be fitted and inspected independently of
        a decision (``fit_gp(*s.training_data()[:2], rng)``).
        """
        curves = self.training_curves()
        quantile = self._quantile_fn(curves)
        rows: list[np.ndarray] = []
        ys: list[float] = []
        best_at: dict[float, float] = {}
        for tid, curve in curves.items():
            enc = self._encoded[tid]
            assert enc is not None
            for r, s in curve:
                best_at[r] = min(best_at.get(r, math.inf), s)
            for j in range(max(0, len(curve) - self.points_per_trial), len(curve)):
                rows.append(self._features(enc, curve[j][0], curve[:j], quantile))
                ys.append(curve[j][1])
        if not rows:
            raise GPError("no observations")
        x = np.vstack(rows)
        y = _winsorise(np.asarray(ys))
        if len(y) > self.max_gp_points:
            idx = _subset(y, self.max_gp_points, rng or self.rng(_SALT_SUBSAMPLE))
            x, y = x[idx], y[idx]
        return x, y, best_at

    def _quantile_fn(self, curves: Mapping[str, list[tuple[float, float]]]) -> Any:
        scores = np.sort(np.asarray([s for c in curves.values() for _, s in c], dtype=float))

        def quantile(value: float) -> float:
            if len(scores) == 0:
                return 0.5
            lo = np.searchsorted(scores, value, side="left")
            hi = np.searchsorted(scores, value, side="right")
            return float((lo + hi) / 2 / len(scores))

        return quantile

    def _features(
        self, enc: np.ndarray, target: float, before: Sequence[tuple[float, float]], quantile: Any
    ) -> np.ndarray:
        res = math.log1p(target) / math.log1p(self.max_t)
        if before:
            last = quantile(before[-1][1])
            slope = last - quantile(before[-2][1]) if len(before) > 1 else 0.0
            curve = [last, slope, 1.0]
        else:
            curve = [0.0, 0.0, 0.0]
        return np.concatenate([enc, [res, *curve]])

    def _compute_scores(self) -> _Scores:
        x, y, best_at = self.training_data(self.rng(_SALT_SUBSAMPLE))
        refit = (
            self._gp_params is None
            or len(self._gp_params.lengthscales) != x.shape[1]
            or self._n_model_decisions - self._fit_at_decision >= self.refit_every
        )
        if refit:
            fit_rng = self.rng(_SALT_FIT)
            idx = _subset(y, FIT_POINTS, fit_rng) if len(y) > FIT_POINTS else np.arange(len(y))
            warm = self._gp_params
            if warm is not None and len(warm.lengthscales) != x.shape[1]:
                warm = None
            fitted = fit_gp(
                x[idx],
                y[idx],
                fit_rng,
                init=warm,
                restarts=_COLD_RESTARTS if warm is None else _WARM_RESTARTS,
                maxiter=_FIT_MAXITER,
            )
            params = fitted.params.rounded(4)
        else:
            assert self._gp_params is not None
            params = self._gp_params
        gp = GaussianProcess(x, y, params)

        curves = self.training_curves()
        quantile = self._quantile_fn(curves)
        paused_ids: list[str] = []
        rows: list[np.ndarray] = []
        incumbents: list[float] = []
        overall = min(best_at.values())
        for t in self.trials.values():
            enc = self._encoded.get(t.trial_id)
            if enc is None or not _is_idle(t) or t.resource >= self.max_t - _EPS:
                continue
            target = self.next_level(t.resource)
            paused_ids.append(t.trial_id)
            rows.append(self._features(enc, target, curves[t.trial_id], quantile))
            incumbents.append(best_at.get(target, overall))
        cand_rng = self.rng(_SALT_CANDIDATES)
        new_configs = [self.space.sample(cand_rng) for _ in range(self.num_candidates)]
        first = self.rung_levels[0]
        for config in new_configs:
            rows.append(self._features(encode_config(self.space, config), first, [], quantile))
            incumbents.append(best_at.get(first, overall))
        mean, std = gp.predict(np.vstack(rows))
        ei = expected_improvement(mean, std, np.asarray(incumbents))
        if not np.all(np.isfinite(ei)):
            raise GPError("acquisition is not finite")
        n_paused = len(paused_ids)
        return _Scores(
            paused={tid: float(v) for tid, v in zip(paused_ids, ei[:n_paused], strict=True)},
            new_configs=new_configs,
            new_ei=ei[n_paused:],
            n_gp=len(y),
            params=params,
            refit=refit,
        )


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
