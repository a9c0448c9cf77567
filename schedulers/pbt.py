"""Population Based Training (Jaderberg et al. 2017), asynchronous and synchronous.

A population of ``population_size`` members trains in segments of
``perturbation_interval`` resource. At each segment boundary (a *decision
boundary*), a member in the bottom quantile copies the weights (checkpoint) and
config of a top member (*exploit*) and perturbs or resamples that config
(*explore*, :mod:`schedulers.pbt_explore`); any other member continues from its
own checkpoint.

The scheduler only decides; the flow runs segments. Exploits are ordinary
:class:`~schedulers.actions.RunSegment` actions with a
:class:`~schedulers.actions.Perturbation`, recorded as ``TrialPerturbed`` +
``SegmentStarted``, so the lineage and schedule are read back from the log
(:func:`schedulers.pbt_replay.pbt_lineage`, :func:`schedulers.pbt_replay.pbt_policy`).
"""

from __future__ import annotations

import bisect
import hashlib
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal

from schedulers._pbt_matched import MatchedIndex
from schedulers.actions import Action, Perturbation, RunSegment, Stop, Wait
from schedulers.base import Scheduler, SchedulerArgumentError, TrialState
from schedulers.events import (
    CheckpointRef,
    Event,
    SegmentFailed,
    SegmentFinished,
    SegmentStarted,
    TrialCreated,
    TrialPerturbed,
    TrialStopped,
)
from schedulers.pbt_explore import Boundary, ExploreError, explore, parse_mutations
from schedulers.pbt_replay import PBTReplay, pbt_lineage, pbt_policy
from schedulers.validation import (
    check_argument,
    check_positive,
)

__all__ = ["PBTReplay", "PopulationBasedTraining", "pbt_lineage", "pbt_policy"]

Exploit = Literal["truncation", "binary_tournament"]
Compare = Literal["matched", "latest"]

#: Non-final failures of one segment after which a member leaves the population.
MAX_SEGMENT_RETRIES = 3

_EPS = 1e-9

# (score, tie-break, trial_id): lower score is better; ties fall to a seed-derived key.
_Key = tuple[float, int, str]
# (checkpoint, config, score) of a member's own segment ending at a boundary.
_Snapshot = tuple[CheckpointRef | None, dict[str, Any], float | None]


class PopulationBasedTraining(Scheduler):
    """Population Based Training with safe exploit, bounded explore and generations.

    **Asynchronous** (``synch=False``, Ray's default): a member is judged as soon
    as it reaches a boundary, without waiting for the others. With
    ``compare="matched"`` (default) it is ranked against every other member
    still in the population *at the same resource*: member ``m`` counts as
    better if its latest result at or before the judged member's resource
    beats the judged member's own lineage score at that resource (after an
    exploit a member's lineage is its donor's up to the copied checkpoint; weights
    trained by the same member never beat themselves). With
    ``compare="latest"`` (Ray's rule) it is ranked against the others' latest
    scores, whatever resource they were reached at. On the paper's toy
    (population 2, interval 4, 200 steps, step size 0.01; ``benchmarks/pbt_toy.py``)
    Ray's rule reaches Q >= 1.19 in 73 of 100 seeds with 24 exploits per run,
    the matched rule in 91 with 38, synchronous PBT in 98 with 49: under
    Ray's rule the member that reaches a boundary first is compared with a
    member one interval behind, looks better than it is and is almost never in
    the bottom set, so with two members half the exploits are lost. The
    matched rule recovers most of them; what remains is the price of not
    waiting: the first member to reach a boundary is judged on the others'
    previous result, and if it loses it copies a donor one interval behind
    and re-trains that interval (synchronous PBT waits instead).
    A member that just exploited carries its donor's latest score until its
    own next result, because it now holds the donor's weights. As in Ray, a
    member may copy a donor that has trained *less* than itself and re-train
    that range; because checkpoints are keyed by trial and segment range, such
    a segment waits while another segment in flight still restores the
    checkpoint it would replace.

    **Synchronous** (``synch=True``; paper appendix A.1): a member that reaches
    boundary ``b`` waits until every live member has reached ``b``; then the
    round ranks members by their score *at* ``b`` and every bottom member
    exploits a top member's checkpoint *at* ``b``. Barrier rule for failures:
    a member whose segment fails for good (or that is stopped) leaves the
    population at once, the barrier only counts live members, and the round
    proceeds without it. Its slot is not refilled; with fewer than two ranked
    members nobody exploits and the rest simply continue. So a failure never
    blocks the barrier (the hang Ray fixed in ray-project/ray#23472).

    **Generations** (Schedy's ``max_generations``): a member's generation is the
    number of decision boundaries it has itself reached, i.e. the number of its
    own segments that finished. When a member reaches boundary
    ``max_generations`` it is stopped instead of being judged; exploits never
    reset the count, so the experiment ends when every member has done
    ``max_generations`` boundaries. In synchronous mode that is exactly
    ``max_generations`` rounds of the whole population.

    **Boundaries**: the first is ``max(perturbation_interval, burn_in_period)``,
    then every ``perturbation_interval`` (as in Ray's fix for burn-in with
    ``synch``), capped at ``max_t``. A member stops at ``max_t``.

    **Exploit**. ``"truncation"``: rank the population, bottom and top sets have
    ``ceil(N * quantile_fraction)`` members, never more than ``floor(N / 2)``
    (Ray's rule; ``quantile_fraction=0`` disables exploitation); a bottom member
    copies a top member drawn uniformly. ``"binary_tournament"``: the member
    draws one other member uniformly and copies it if its score is strictly
    better. Equal scores are ordered by a key derived from ``(seed, trial_id)``,
    so ties are broken the same way on every replay. A donor must be live (not
    failed, stopped or finished), have a checkpoint and a score; the exploiting
    member restores the donor's checkpoint and resumes at the donor's resource.

    **Explore** (see :mod:`schedulers.pbt_explore`): per hyperparameter, with
    probability ``resample_probability`` resample, else multiply numbers by a
    factor from ``perturbation_factors`` or move categorical/list values to an
    adjacent index; the result is always inside the space (clip or reflect,
    snapped to ``step``; ints always move). Then ``custom_explore_fn(config)``.

    Args:
        perturbation_interval: Resource between decision boundaries (Ray's
            ``perturbation_interval``; the paper's "ready" criterion).
        population_size: Members trained at once (Schedy's ``population_size``;
            the paper's N). At least 2.
        max_generations: Boundaries per member before it stops (Schedy); None
            runs until ``max_t`` or the resource budget.
        max_t: Resource at which a member stops; None = no cap.
        time_attr: Name of the progress attribute, kept for Ray users. The
            resource of segments *is* the time axis here; the name is shown in
            ``status --json`` only.
        burn_in_period: No decision before this much resource (Ray).
        hyperparam_mutations: Per key an optuna distribution, its JSON short form
            (``{"type": "float", "low": ..., "high": ...}``), a list of values or,
            from the Python API only, a callable ``fn(rng) -> value``. ``None``
            explores every parameter with its space distribution; ``{}`` only
            exploits. Keys must be parameters of the space and their values must
            lie inside it. The space itself is Schedy's ``initial_distributions``.
        quantile_fraction: Size of the bottom/top sets, in [0, 0.5] (Ray).
        resample_probability: Chance to resample instead of perturbing, in [0, 1].
        perturbation_factors: Factors for numeric values, e.g. ``(1.2, 0.8)``.
        custom_explore_fn: ``fn(config) -> config``, run after the built-in
            explore (Ray). It must be pure and deterministic (no global RNG, no
            clock) or replaying the log gives another schedule. Numeric values it
            puts out of bounds are clipped and recorded in the event's
            ``info["pbt"]["explore"]["clipped"]``; other invalid values raise
            :class:`~schedulers.pbt_explore.ExploreError` naming the key.
        log_config: Record the per-key explore operations in the event info.
            Old and new configs are always in ``TrialPerturbed``.
        require_attrs: A segment that finishes without ``metric`` stops the
            member (Ray raises); if False the member keeps its previous score
            and continues.
        synch: Synchronous PBT, see above.
        exploit: ``"truncation"`` or ``"binary_tournament"`` (Schedy's strategy).
        compare: Asynchronous ranking: ``"matched"`` (members compared at the
            same resource) or ``"latest"`` (Ray's rule); see above. Ignored
            when ``synch``.
        boundary: ``"clip"`` or ``"reflect"`` for values pushed out of bounds.
        initial_configs: Configs of the first members (Schedy's manually added
            jobs); the rest are sampled from the space.
        **kwargs: ``space, metric, mode, seed, budget`` as for every scheduler.

    Example:
        >>> from schedulers import SearchSpace, TrialPerturbed
        >>> from schedulers.simulate import simulate
        >>> space = SearchSpace.parse({"lr": {"type": "float", "low": 0.01, "high": 1.0}})
        >>> def objective(config, start, stop, state):  # "training" adds lr per unit
        ...     w = (state or 0.0) + (stop - start) * config["lr"]
        ...     return [{"resource": stop, "w": w}], w
        >>> pbt = PopulationBasedTraining(space=space, metric="w", mode="max", seed=0,
        ...     perturbation_interval=2, population_size=4, max_generations=5)
        >>> result = simulate(pbt, objective, max_concurrency=2)
        >>> result.done.reason
        'population finished'
        >>> any(isinstance(e, TrialPerturbed) for e in result.events)
        True
    """

    name = "pbt"

    def __init__(
        self,
        *,
        perturbation_interval: float,
        population_size: int = 8,
        max_generations: int | None = None,
        max_t: float | None = None,
        time_attr: str = "training_iteration",
        burn_in_period: float = 0.0,
        hyperparam_mutations: Mapping[str, Any] | None = None,
        quantile_fraction: float = 0.25,
        resample_probability: float = 0.25,
        perturbation_factors: Sequence[float] = (1.2, 0.8),
        custom_explore_fn: Callable[[dict[str, Any]], Mapping[str, Any]] | None = None,
        log_config: bool = True,
        require_attrs: bool = True,
        synch: bool = False,
        exploit: Exploit = "truncation",
        compare: Compare = "matched",
        boundary: Boundary = "clip",
        initial_configs: Sequence[Mapping[str, Any]] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.perturbation_interval = float(
            check_argument("perturbation_interval", perturbation_interval)
        )
        self.burn_in_period = float(check_argument("burn_in_period", burn_in_period))
        self.quantile_fraction = float(
            check_argument("quantile_fraction", quantile_fraction)
        )
        self.resample_probability = float(
            check_argument("resample_probability", resample_probability)
        )
        if (
            isinstance(perturbation_factors, (str, bytes))
            or not isinstance(perturbation_factors, Sequence)
            or not perturbation_factors
        ):
            raise SchedulerArgumentError(
                "perturbation_factors",
                f"perturbation_factors is {perturbation_factors!r}, "
                "but must be a non-empty list of numbers > 0",
            )
        self.perturbation_factors = tuple(
            float(check_positive(f"perturbation_factors[{i}]", f))
            for i, f in enumerate(perturbation_factors)
        )
        self.population_size = check_argument("population_size", population_size)
        self.max_generations = check_argument("max_generations", max_generations, nullable=True)
        self.max_t = None if max_t is None else float(check_argument("max_t", max_t))
        self.time_attr = check_argument("time_attr", time_attr)
        check_argument("exploit", exploit)
        self.exploit: Exploit = exploit
        check_argument("compare", compare)
        self.compare: Compare = compare
        check_argument("boundary", boundary)
        self.boundary: Boundary = boundary
        if custom_explore_fn is not None and not callable(custom_explore_fn):
            raise SchedulerArgumentError(
                "custom_explore_fn",
                f"custom_explore_fn is {custom_explore_fn!r}, but must be callable",
            )
        self.custom_explore_fn = custom_explore_fn
        self.log_config = check_argument("log_config", log_config)
        self.require_attrs = check_argument("require_attrs", require_attrs)
        self.synch = check_argument("synch", synch)
        try:
            self.mutations = parse_mutations(hyperparam_mutations, self.space)
        except ExploreError as exc:
            raise SchedulerArgumentError(exc.key, str(exc)) from exc
        self.initial_configs = [dict(c) for c in (initial_configs or [])]
        if len(self.initial_configs) > population_size:
            raise SchedulerArgumentError(
                "initial_configs",
                f"initial_configs has {len(self.initial_configs)} configs, but population_size "
                f"is {population_size}",
            )
        for i, config in enumerate(self.initial_configs):
            if not self.space.contains(config):
                raise SchedulerArgumentError(
                    "initial_configs", f"initial_configs[{i}] {config!r} does not fit the space"
                )
        if (
            self.max_generations is None
            and self.max_t is None
            and self.budget.max_resource is None
        ):
            raise SchedulerArgumentError(
                "max_generations",
                "max_generations, max_t and budget.max_resource are all unset, but at least "
                "one is needed for the experiment to end",
            )
        if self.budget.max_trials is not None and self.budget.max_trials < population_size:
            raise SchedulerArgumentError(
                "population_size",
                f"population_size is {population_size}, but budget.max_trials is "
                f"{self.budget.max_trials}; the population must fit the trial budget",
            )
        self.first_boundary = max(self.perturbation_interval, self.burn_in_period)

        # Whether members' curves are kept: compare="matched" (async) is their
        # only reader (see _curve).
        self._matching = not self.synch and self.compare == "matched"
        # --- state folded from events (see on_event) ---
        self._tiebreak: dict[str, int] = {}
        self._generation: dict[str, int] = {}
        self._latest: dict[str, float] = {}
        # (score, member that trained those weights) of the weights a member
        # holds, per resource, along its lineage (an exploit replaces it with the
        # donor's up to the donor's resource): what compare="matched" ranks on,
        # kept only then (a tuple per result in every snapshot otherwise).
        self._curve: dict[str, dict[float, tuple[float, str]]] = {}
        # Async ranking of members that can be judged or copied, kept sorted in
        # tell so that a decision is a bisect, not a sort of the population.
        self._ranking: list[_Key] = []
        self._ranked: dict[str, _Key] = {}
        # compare="matched" (async): the ranked members' curves, bucketed so that
        # "who beats this member at its resource" is a bisection, not a scan.
        self._matched = MatchedIndex()
        # Members that are no valid donor (the negation of _donor_ok, which only
        # changes on the member's own events), so a pool is a set lookup per key.
        self._no_donor: set[str] = set()
        # Live members by resource: the sync barrier is the smallest entry.
        self._positions: list[tuple[float, str]] = []
        self._position: dict[str, tuple[float, str]] = {}
        # Per member and boundary: (checkpoint, config, score) of its own segment.
        # Sync rounds: boundary -> sorted keys of live members scored at it.
        # Both are read by synchronous PBT only, and kept only there: at 10k
        # members and 100k results they were two thirds of an asynchronous
        # run's snapshot (a config copy and a checkpoint per result) and of
        # the time to load it, and an insort per result.
        self._snap: dict[str, dict[float, _Snapshot]] = {}
        self._rounds: dict[float, list[_Key]] = {}
        self._started: dict[str, SegmentStarted] = {}
        self._retry: dict[str, SegmentStarted] = {}
        self._failures: dict[str, int] = {}
        self._missing_metric: set[str] = set()
        # Members waiting for a decision, sorted by (resource, trial_id): lowest
        # resource first, so sync rounds are settled in order and ask() reads
        # only the head of the queue instead of sorting the population.
        self._queue: list[tuple[float, str]] = []
        self._queued: dict[str, tuple[float, str]] = {}
        # (writer trial, resource) -> segments in flight (or awaiting a retry)
        # that restore that checkpoint; see _overwrites.
        self._reads: dict[tuple[str, float], int] = {}
        self._reading: dict[str, tuple[str, float]] = {}
        self.n_perturbations = 0

    # ------------------------------------------------------------------ fold
    def on_event(self, event: Event) -> None:
        tid = event.trial
        if tid is None:
            return
        curve_changed = False
        if isinstance(event, TrialCreated):
            digest = hashlib.blake2b(f"{self.seed}/{tid}".encode(), digest_size=8).digest()
            self._tiebreak[tid] = int.from_bytes(digest, "big")
            self._generation[tid] = 0
            if self.synch:
                self._snap[tid] = {}
        elif isinstance(event, SegmentStarted):
            self._started[tid] = event
            self._retry.pop(tid, None)
            self._end_read(tid)
            if event.restore_from is not None:
                read = (event.restore_from.trial_id, float(event.restore_from.resource))
                self._reading[tid] = read
                self._reads[read] = self._reads.get(read, 0) + 1
        elif isinstance(event, SegmentFinished):
            self._end_read(tid)
            self._generation[tid] = self._generation.get(tid, 0) + 1
            self._failures.pop(tid, None)
            t = self.trials[tid]
            score = self.score(event.metrics)
            if self.synch:
                started = self._started.get(tid)
                config = dict(started.config) if started is not None else dict(t.config)
                self._snap[tid][float(event.stop)] = (event.checkpoint, config, score)
            if score is None:
                self._missing_metric.add(tid)
            else:
                self._missing_metric.discard(tid)
                self._latest[tid] = score
                if self._matching:
                    self._curve.setdefault(tid, {})[float(event.stop)] = (score, tid)
                if tid in self._matched:
                    self._matched.add(tid, self._tiebreak[tid], float(event.stop), score, tid)
                if self.synch:
                    key = (score, self._tiebreak[tid], tid)
                    bisect.insort(self._rounds.setdefault(float(event.stop), []), key)
        elif isinstance(event, SegmentFailed):
            if not event.final and tid in self._started:
                self._failures[tid] = self._failures.get(tid, 0) + 1
                self._retry[tid] = self._started[tid]
                if self._failures[tid] >= MAX_SEGMENT_RETRIES:
                    self._leave(tid)
            elif event.final:
                self._leave(tid)
        elif isinstance(event, TrialStopped):
            self._leave(tid)
        elif isinstance(event, TrialPerturbed):
            self.n_perturbations += 1
            donor_score = self._latest.get(event.donor_id)
            if donor_score is not None:
                self._latest[tid] = donor_score
            if self._matching:
                upto = float(event.donor_resource) + _EPS
                self._curve[tid] = {
                    r: v for r, v in self._curve.get(event.donor_id, {}).items() if r <= upto
                }
                curve_changed = True
        self._refresh(tid, curve_changed)

    def _end_read(self, tid: str) -> None:
        read = self._reading.pop(tid, None)
        if read is not None:
            self._reads[read] -= 1
            if not self._reads[read]:
                del self._reads[read]

    def _leave(self, tid: str) -> None:
        """Drop a failed or stopped member from every sync round it was scored in."""
        self._end_read(tid)
        self._retry.pop(tid, None)
        for b, (_, _, score) in self._snap.get(tid, {}).items():
            if score is None:
                continue
            key = (score, self._tiebreak[tid], tid)
            ranking = self._rounds.get(b, [])
            i = bisect.bisect_left(ranking, key)
            if i < len(ranking) and ranking[i] == key:
                del ranking[i]

    def _live(self, t: TrialState) -> bool:
        return t.status in ("running", "paused") and self._failures.get(t.trial_id, 0) < (
            MAX_SEGMENT_RETRIES
        )

    def _is_done(self, t: TrialState) -> bool:
        g = self._generation.get(t.trial_id, 0)
        if self.max_generations is not None and g >= self.max_generations:
            return True
        return self.max_t is not None and t.resource >= self.max_t - _EPS

    def _refresh(self, tid: str, curve_changed: bool = False) -> None:
        """Re-derive the indexes of one member after an event touched it.

        Every index here depends only on the member's own state, which only
        its own events change, so refreshing the event's member is enough.
        """
        t = self.trials.get(tid)
        live = t is not None and self._live(t)
        # Async ranking: live, not finished, scored (and not missing a required metric).
        old = self._ranked.pop(tid, None)
        if old is not None:
            i = bisect.bisect_left(self._ranking, old)
            del self._ranking[i]
        if (
            t is not None
            and live
            and not self._is_done(t)
            and tid in self._latest
            and not (self.require_attrs and tid in self._missing_metric)
        ):
            key = (self._latest[tid], self._tiebreak[tid], tid)
            bisect.insort(self._ranking, key)
            self._ranked[tid] = key
        if self._matching:
            # A new result was added in on_event (MatchedIndex.add); an exploit
            # replaces the lineage and a member entering the ranking brings one.
            if tid in self._ranked:
                if curve_changed or tid not in self._matched:
                    self._matched.put(tid, self._tiebreak[tid], self._curve.get(tid, {}))
            elif tid in self._matched:
                self._matched.drop(tid, self._tiebreak[tid])
        if t is not None:
            if self._donor_ok(tid):
                self._no_donor.discard(tid)
            else:
                self._no_donor.add(tid)
        # Positions of live members, for the sync barrier.
        pos = self._position.pop(tid, None)
        if pos is not None:
            del self._positions[bisect.bisect_left(self._positions, pos)]
        if t is not None and live:
            pos = (t.resource, tid)
            bisect.insort(self._positions, pos)
            self._position[tid] = pos
        # Members that need a decision: stopped-out, retried or paused at a boundary.
        queued = self._queued.pop(tid, None)
        if queued is not None:
            del self._queue[bisect.bisect_left(self._queue, queued)]
        if t is not None and t.status in ("running", "paused") and t.running is None:
            queued = (t.resource, tid)
            bisect.insort(self._queue, queued)
            self._queued[tid] = queued

    # ---------------------------------------------------------------- decide
    def next_boundary(self, resource: float) -> float:
        """The decision boundary after ``resource`` (capped at ``max_t``)."""
        if resource < self.first_boundary - _EPS:
            stop = self.first_boundary
        else:
            k = math.floor((resource - self.first_boundary) / self.perturbation_interval + _EPS)
            stop = self.first_boundary + (k + 1) * self.perturbation_interval
        if self.max_t is not None:
            stop = min(stop, self.max_t)
        return float(stop)

    def quantile_size(self, n: int) -> int:
        """Bottom/top set size: ceil(n * q), at most floor(n / 2) (Ray's rule)."""
        if n < 2:
            return 0
        k = math.ceil(n * self.quantile_fraction - _EPS)
        return min(k, n // 2)

    def _metric(self, score: float | None) -> float | None:
        if score is None:
            return None
        return score if self.mode == "min" else -score

    def _choose_donor(
        self, tid: str, ranking: list[_Key], own: _Key | None, salt: int
    ) -> tuple[str, dict[str, Any]] | None:
        """Pick the donor ``tid`` exploits from ``ranking``, or None to continue."""
        n = len(ranking)
        if own is None or n < 2:
            return None
        rng = self.rng(salt)
        i = bisect.bisect_left(ranking, own)
        if self.exploit == "truncation":
            k = self.quantile_size(n)
            if k == 0 or i < n - k:
                return None
            # Draw from the top k; only if the draw is not a valid donor, draw
            # again among the valid ones (keeps a decision O(log N) in general).
            key = ranking[int(rng.integers(k))]
            if key[2] == tid or key[2] in self._no_donor:
                pool = [c for c in ranking[:k] if c[2] != tid and c[2] not in self._no_donor]
                if not pool:
                    return None
                key = pool[int(rng.integers(len(pool)))]
            return key[2], {"rank": i, "ranked": n, "quantile": k, "donor_score": key[0]}
        j = int(rng.integers(n - 1))
        j = j + 1 if j >= i else j  # uniform over the others
        key = ranking[j]
        if not key[0] < own[0] or not self._donor_ok(key[2]):
            return None
        return key[2], {"rank": i, "ranked": n, "opponent_rank": j, "donor_score": key[0]}

    def _latest_at(self, tid: str, resource: float) -> float | None:
        """Resource of ``tid``'s latest lineage result at or before ``resource``."""
        found = None
        for r in self._curve.get(tid, {}):
            if r <= resource + _EPS and (found is None or r > found):
                found = r
        return found

    def _beats(self, other: str, tid: str, resource: float) -> bool:
        """Whether ``other`` ranks above ``tid`` when both are scored at the same resource.

        The resource is ``other``'s latest result at or before ``resource`` (the
        member being judged); ``tid``'s score there comes from its lineage.
        Weights trained by the same member (``tid`` copied them from
        ``other``) are not better than themselves; other ties fall to the
        seed-derived key, as in the ranking. If ``tid`` has no result there,
        the latest scores are compared (Ray's rule).
        """
        at = self._latest_at(other, resource)
        if at is None:
            return False
        theirs, theirs_by = self._curve[other][at]
        mine_entry = self._curve.get(tid, {}).get(at)
        if mine_entry is None:
            latest = self._latest.get(tid)
            if latest is None:
                return False
            mine_entry = (latest, tid)
        mine, mine_by = mine_entry
        if mine_by == theirs_by and mine == theirs:
            return False
        return (theirs, self._tiebreak[other]) < (mine, self._tiebreak[tid])

    def _choose_donor_matched(
        self, tid: str, own: _Key | None, salt: int
    ) -> tuple[str, dict[str, Any]] | None:
        """Asynchronous exploit ranking members *at the same resource* (``compare="matched"``).

        Ray's rule (``compare="latest"``) ranks a member that just reached a
        boundary against the others' latest scores; a member one interval
        behind then looks worse than it is, so whoever reaches a boundary
        first is almost never in the bottom set (with 2 members, half of the
        exploits are lost). Here member ``m`` counts as better only if its
        score beats the judged member's lineage score at ``m``'s latest
        result (at or before the judged member's resource; see
        :meth:`_beats`). The bottom/top sets keep the truncation sizes; the
        donor is drawn among the top ``k`` by latest score that beat the
        member. Who beats it is counted with :class:`MatchedIndex` (a
        bisection per resource level), not by scanning the population.
        """
        n = len(self._ranking)
        if own is None or n < 2:
            return None
        resource = self.trials[tid].resource
        better, parts = self._matched.better(
            tid, self._tiebreak[tid], resource, _EPS, self._curve.get(tid, {}), self._latest[tid]
        )
        rng = self.rng(salt)
        if self.exploit == "truncation":
            k = self.quantile_size(n)
            if k == 0 or better < n - k:
                return None
            # The first k members (by latest score) that beat tid: only the
            # n - better members that do not (tid among them) are skipped, so
            # they all lie in the first k + n - better of the ranking.
            skip = self._matched.losers(parts)
            skip.add(tid)
            top = [c for c in self._ranking[: k + len(skip)] if c[2] not in skip][:k]
            pool = [c for c in top if c[2] not in self._no_donor]
            if not pool:
                return None
            key = pool[int(rng.integers(len(pool)))]
            return key[2], {"rank": better, "ranked": n, "quantile": k,
                            "donor_score": key[0], "compare": "matched"}
        i = bisect.bisect_left(self._ranking, own)
        j = int(rng.integers(n - 1))
        j = j + 1 if j >= i else j  # uniform over the others
        key = self._ranking[j]
        if not self._beats(key[2], tid, resource) or key[2] in self._no_donor:
            return None
        return key[2], {"rank": better, "ranked": n, "opponent_rank": j,
                        "donor_score": key[0], "compare": "matched"}

    def _donor_ok(self, donor: str) -> bool:
        """Whether ``donor`` is live, not finished and has a usable checkpoint."""
        t = self.trials[donor]
        if not self._live(t) or self._is_done(t):
            return False
        if self.synch:
            return True  # the caller checks the checkpoint of the round snapshot
        # The latest checkpoint must hold the weights the latest score belongs
        # to. Like Ray, a member may copy a donor that has trained less than
        # itself (see _overwrites).
        return t.checkpoint is not None and abs(t.checkpoint.resource - t.resource) < _EPS

    def _decide(
        self, t: TrialState, salt: int
    ) -> tuple[dict[str, Any], float, CheckpointRef | None, Perturbation | None, dict[str, Any]]:
        """Continue or exploit: (config, start, restore_from, perturbation, info)."""
        tid = t.trial_id
        generation = self._generation.get(tid, 0)
        info: dict[str, Any] = {"decision": "continue", "generation": generation}
        cont = (dict(t.config), t.resource, t.checkpoint, None, info)
        if self.synch:
            b = t.resource
            ranking = self._rounds.get(b, [])
            snap = self._snap[tid].get(b)
            own = None
            if snap is not None and snap[2] is not None:
                own = (snap[2], self._tiebreak[tid], tid)
        else:
            ranking = self._ranking
            own = self._ranked.get(tid)
        if self.synch or self.compare == "latest":
            choice = self._choose_donor(tid, ranking, own, salt)
        else:
            choice = self._choose_donor_matched(tid, own, salt)
        if choice is None:
            return cont
        donor, record = choice
        d = self.trials[donor]
        if self.synch:
            ckpt, donor_config, _ = self._snap[donor].get(t.resource, (None, {}, None))
            donor_resource = t.resource
        else:
            ckpt, donor_config, donor_resource = d.checkpoint, dict(d.config), d.resource
        if ckpt is None:
            return cont
        rng = self.rng(salt + 1_000_003)  # explore draws, independent of the donor draw
        new_config, explored = explore(
            donor_config,
            self.mutations,
            self.space,
            rng,
            resample_probability=self.resample_probability,
            perturbation_factors=self.perturbation_factors,
            boundary=self.boundary,
            custom_explore_fn=self.custom_explore_fn,
        )
        info = {
            "decision": "exploit",
            "generation": generation,
            "exploit": self.exploit,
            **{k: v for k, v in record.items() if k != "donor_score"},
            "score": self._metric(own[0] if own else None),
            "donor_score": self._metric(record["donor_score"]),
        }
        if self.log_config:
            info["explore"] = explored
        elif "clipped" in explored:
            info["explore"] = {"clipped": explored["clipped"]}
        perturbation = Perturbation(donor, donor_resource, dict(t.config))
        return new_config, donor_resource, ckpt, perturbation, info

    def ask(self, n: int = 1) -> list[Action]:
        if self.finished:
            return [Wait()] if self.running else [self.done_action("experiment finished")]
        actions: list[Action] = []
        pending_resource = 0.0
        # 1. Fill the population (first asks only).
        while len(actions) < n and len(self.trials) + len(actions) < self.population_size:
            index = len(self.trials) + len(actions)
            stop = self.next_boundary(0.0)
            if not self.can_create_trial(len(actions)):
                break
            if not self.can_spend(stop, pending_resource):
                break
            if index < len(self.initial_configs):
                config = dict(self.initial_configs[index])
            else:
                config = self.space.sample(self.rng(len(actions)))
            actions.append(
                RunSegment(
                    self.new_trial_id(len(actions)), config, 0.0, stop, new_trial=True,
                    info={"pbt": {"decision": "create", "member": index}},
                )
            )
            pending_resource += stop
        # 2. Members waiting for a decision, lowest resource first (sync rounds in order).
        barrier = self._positions[0][0] if self._positions else math.inf
        batch_reads: set[tuple[str, float]] = set()
        for _, tid in self._queue:
            if len(actions) >= n:
                break
            t = self.trials[tid]
            salt = len(actions)
            if self._failures.get(tid, 0) >= MAX_SEGMENT_RETRIES:
                actions.append(Stop(tid, f"segment failed {MAX_SEGMENT_RETRIES} times"))
                continue
            if tid in self._retry:
                r = self._retry[tid]
                actions.append(
                    RunSegment(tid, dict(r.config), r.start, r.stop, r.restore_from,
                               info={"pbt": {"decision": "retry"}})
                )
                pending_resource += r.stop - r.start
                continue
            if self.require_attrs and tid in self._missing_metric:
                actions.append(Stop(tid, f"metric {self.metric!r} missing (require_attrs)"))
                continue
            if self._is_done(t):
                reason = (
                    "max_t reached"
                    if self.max_t is not None and t.resource >= self.max_t - _EPS
                    else "max_generations reached"
                )
                actions.append(Stop(tid, reason))
                continue
            if self.synch and barrier < t.resource - _EPS:
                break  # some live member has not reached this boundary (nor any later one)
            config, start, restore, perturbation, info = self._decide(t, salt)
            stop = self.next_boundary(start)
            if stop <= start + _EPS or not self.can_spend(stop - start, pending_resource):
                actions.append(Stop(tid, "budget exhausted" if stop > start else "max_t reached"))
                continue
            if self._overwrites(tid, stop, batch_reads):
                continue  # wait until the segment reading the old checkpoint is done
            actions.append(
                RunSegment(tid, config, start, stop, restore_from=restore,
                           perturbation=perturbation, info={"pbt": info})
            )
            if restore is not None:
                batch_reads.add((restore.trial_id, float(restore.resource)))
            pending_resource += stop - start
        if actions:
            return actions
        if self.running:
            return [Wait()]
        return [self.done_action("population finished")]

    def _overwrites(self, tid: str, stop: float, batch_reads: set[tuple[str, float]]) -> bool:
        """Whether a segment of ``tid`` ending at ``stop`` would replace a checkpoint
        that a segment in flight (or earlier in this batch) still restores.

        Checkpoints are keyed by trial and segment range, and a member that
        copied a donor behind it re-trains ranges it trained before; writing
        the same key again replaces the old bytes. Such a segment waits until
        the readers of the old checkpoint have finished.
        """
        read = (tid, float(stop))
        return self._reads.get(read, 0) > 0 or read in batch_reads

    # ------------------------------------------------------------- retention
    def live_checkpoints(self) -> set[str]:
        """Latest checkpoint of every live member, every checkpoint a segment in
        flight or a pending retry restores from, and (sync) every top member's
        checkpoint at a round boundary some member is still to be judged at."""
        keys = super().live_checkpoints()
        for tid, started in self._started.items():
            t = self.trials[tid]
            if started.restore_from is not None and (t.running is not None or tid in self._retry):
                keys.add(started.restore_from.key)
        if self.synch:
            open_rounds = {resource for resource, _ in self._queue}
            for b in open_rounds:
                for _, _, donor in self._rounds.get(b, []):
                    ckpt = self._snap[donor][b][0]
                    if ckpt is not None:
                        keys.add(ckpt.key)
        return keys

    def status_extras(self) -> dict[str, Any]:
        live = [t for t in self.trials.values() if self._live(t)]
        gens = [self._generation.get(t.trial_id, 0) for t in live]
        return {
            "synch": self.synch,
            "exploit": self.exploit,
            "time_attr": self.time_attr,
            "population": len(live),
            "generation": {"min": min(gens, default=0), "max": max(gens, default=0)},
            "max_generations": self.max_generations,
            "perturbations": self.n_perturbations,
        }
