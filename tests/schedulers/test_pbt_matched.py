"""PBT's indexed exploit decisions are identical to the population scan they replace.

``Reference`` keeps the O(N) donor choice of commit 52e99e7 verbatim (the
scan over the whole ranking for ``compare="matched"``, ``_donor_ok`` per key
for the truncation pool). Random event streams (finishes with tied scores,
missing metrics, missing checkpoints, retried and final failures, pauses,
stops, retries of failed members) drive it and the indexed scheduler side
by side: every ``ask`` must return the same actions, and at every step every
member's decision (donor draw, quantile cut, explore draws, info) and every
ranked member's matched count must agree.
"""

from __future__ import annotations

import bisect
import random
from typing import Any

import pytest

from schedulers import (
    CheckpointRef,
    Done,
    RunSegment,
    SegmentFailed,
    SegmentFinished,
    TrialPaused,
    TrialRetried,
    TrialStopped,
    action_events,
)
from schedulers._pbt_matched import _layout
from schedulers.events import Event
from schedulers.pbt import _EPS, PopulationBasedTraining
from storage.snapshots import dumps, loads
from tests.schedulers.conftest import SPACE


class Reference(PopulationBasedTraining):
    """The donor choice of 52e99e7: a scan of the population per decision."""

    def _choose_donor(
        self, tid: str, ranking: list[Any], own: Any, salt: int
    ) -> tuple[str, dict[str, Any]] | None:
        n = len(ranking)
        if own is None or n < 2:
            return None
        rng = self.rng(salt)
        i = bisect.bisect_left(ranking, own)
        if self.exploit == "truncation":
            k = self.quantile_size(n)
            if k == 0 or i < n - k:
                return None
            key = ranking[int(rng.integers(k))]
            if key[2] == tid or not self._donor_ok(key[2]):
                pool = [c for c in ranking[:k] if c[2] != tid and self._donor_ok(c[2])]
                if not pool:
                    return None
                key = pool[int(rng.integers(len(pool)))]
            return key[2], {"rank": i, "ranked": n, "quantile": k, "donor_score": key[0]}
        j = int(rng.integers(n - 1))
        j = j + 1 if j >= i else j
        key = ranking[j]
        if not key[0] < own[0] or not self._donor_ok(key[2]):
            return None
        return key[2], {"rank": i, "ranked": n, "opponent_rank": j, "donor_score": key[0]}

    def ref_latest_at(self, tid: str, resource: float) -> float | None:
        found = None
        for r in self._curve.get(tid, {}):
            if r <= resource + _EPS and (found is None or r > found):
                found = r
        return found

    def ref_beats(self, other: str, tid: str, resource: float) -> bool:
        at = self.ref_latest_at(other, resource)
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

    def ref_better(self, tid: str) -> list[Any]:
        resource = self.trials[tid].resource
        return [k for k in self._ranking if k[2] != tid and self.ref_beats(k[2], tid, resource)]

    def _choose_donor_matched(
        self, tid: str, own: Any, salt: int
    ) -> tuple[str, dict[str, Any]] | None:
        n = len(self._ranking)
        if own is None or n < 2:
            return None
        better = self.ref_better(tid)
        rng = self.rng(salt)
        if self.exploit == "truncation":
            k = self.quantile_size(n)
            if k == 0 or len(better) < n - k:
                return None
            pool = [c for c in better[:k] if self._donor_ok(c[2])]
            if not pool:
                return None
            key = pool[int(rng.integers(len(pool)))]
            return key[2], {
                "rank": len(better),
                "ranked": n,
                "quantile": k,
                "donor_score": key[0],
                "compare": "matched",
            }
        i = bisect.bisect_left(self._ranking, own)
        j = int(rng.integers(n - 1))
        j = j + 1 if j >= i else j
        key = self._ranking[j]
        if key not in better or not self._donor_ok(key[2]):
            return None
        return key[2], {
            "rank": len(better),
            "ranked": n,
            "opponent_rank": j,
            "donor_score": key[0],
            "compare": "matched",
        }


def options(rng: random.Random) -> dict[str, Any]:
    """A random PBT configuration (small populations, so the reference scan is cheap)."""
    interval = rng.choice([1, 2, 0.5])
    return {
        "space": SPACE,
        "metric": "loss",
        "mode": rng.choice(["min", "max"]),
        "seed": rng.randrange(1000),
        "perturbation_interval": interval,
        "burn_in_period": rng.choice([0, 0, interval * 1.5]),
        "population_size": rng.randint(2, 16),
        "max_generations": rng.randint(3, 12),
        "max_t": rng.choice([None, None, interval * 4.5]),
        "quantile_fraction": rng.choice([0.25, 0.25, 0.5, 0.1, 0.0]),
        "require_attrs": rng.random() < 0.7,
        "exploit": rng.choice(["truncation", "truncation", "binary_tournament"]),
    }


def resolve(rng: random.Random, a: RunSegment, known_ids: list[str]) -> list[Event]:
    """What becomes of a segment in flight, drawn at random (ties and faults included)."""
    u = rng.random()
    if u < 0.04:
        return [SegmentFailed(a.trial_id, a.start, a.stop, "flaky", final=False)]
    if u < 0.05:
        return [SegmentFailed(a.trial_id, a.start, a.stop, "dead", final=True)]
    if u < 0.06:
        return [TrialStopped(a.trial_id, "user stop")]
    # Scores on a coarse grid, so ties (and same-weights comparisons) are common.
    loss = None if rng.random() < 0.03 else round(rng.random(), 1)
    metrics = {} if loss is None else {"loss": loss}
    ref = (
        None
        if rng.random() < 0.08
        else CheckpointRef(f"e/{a.trial_id}/{a.start:g}-{a.stop:g}", 1, "x", a.trial_id, a.stop)
    )
    out: list[Event] = [
        SegmentFinished(
            a.trial_id, a.start, a.stop, ({"resource": a.stop, **metrics},), metrics, ref
        )
    ]
    if rng.random() < 0.04:  # an interrupt parks some member
        out.append(TrialPaused(rng.choice(known_ids), a.stop))
    return out


def check_same_state(new: PopulationBasedTraining, ref: Reference) -> None:
    """Every member's decision and every ranked member's matched count agree."""
    for salt, t in enumerate(list(new.trials.values())):
        assert new._decide(t, salt) == ref._decide(ref.trials[t.trial_id], salt), t.trial_id
    if not new.synch and new.compare == "matched":
        index = new._matched
        assert set(index._layout) == set(new._ranked)
        for tid in new._ranked:
            # Results added one by one lay out as the whole curve would.
            assert index._layout[tid] == _layout(new._curve.get(tid, {}))
            assert index._levels[tid] == sorted(index._layout[tid])
            better, _ = new._matched.better(
                tid,
                new._tiebreak[tid],
                new.trials[tid].resource,
                _EPS,
                new._curve.get(tid, {}),
                new._latest[tid],
            )
            assert better == len(ref.ref_better(tid)), tid


def run_pair(seed: int, synch: bool, compare: str) -> tuple[int, int]:
    """Drive both schedulers with one random stream; (decisions, exploits) compared."""
    rng = random.Random(seed)
    kwargs = {**options(rng), "synch": synch, "compare": compare}
    new, ref = PopulationBasedTraining(**kwargs), Reference(**kwargs)
    inflight: list[RunSegment] = []
    failed: list[str] = []
    decisions = exploits = 0
    for _ in range(4000):
        n = rng.choice([1, 1, 2, 3])
        actions = new.ask(n)
        assert actions == ref.ask(n)
        for action in actions:
            if isinstance(action, RunSegment):
                decisions += 1
                exploits += action.perturbation is not None
                inflight.append(action)
            for event in action_events(action):
                new.tell(event)
                ref.tell(event)
        if any(isinstance(a, Done) for a in actions):
            break
        if rng.random() < 0.3:
            check_same_state(new, ref)
        events: list[Event] = []
        if failed and rng.random() < 0.05:
            tid = failed.pop(rng.randrange(len(failed)))
            events.append(TrialRetried(tid, 0, 0))
        elif inflight:
            a = inflight.pop(rng.randrange(len(inflight)))
            if new.trials[a.trial_id].running == (a.start, a.stop):
                events = resolve(rng, a, list(new.trials))
        for event in events:
            if isinstance(event, SegmentFailed) and event.final:
                failed.append(event.trial_id)
            new.tell(event)
            ref.tell(event)
    check_same_state(new, ref)
    return decisions, exploits


@pytest.mark.parametrize("compare", ["matched", "latest"])
@pytest.mark.parametrize("synch", [False, True])
def test_indexed_decisions_equal_the_population_scan(synch: bool, compare: str) -> None:
    total_exploits = 0
    for seed in range(16):
        decisions, exploits = run_pair(seed, synch, compare)
        assert decisions > 0
        total_exploits += exploits
    assert total_exploits > 20  # the streams do exercise exploits


def test_the_index_survives_a_snapshot_round_trip() -> None:
    """A scheduler restored from a snapshot (restricted unpickler) decides as the scan does."""
    rng = random.Random(7)
    kwargs = {**options(rng), "synch": False, "compare": "matched", "population_size": 8}
    s = PopulationBasedTraining(**kwargs)
    ref = Reference(**kwargs)
    for _ in range(60):
        for action in s.ask(2):
            for event in action_events(action):
                s.tell(event)
                ref.tell(event)
            if isinstance(action, RunSegment):
                for event in resolve(random.Random(rng.random()), action, list(s.trials)):
                    s.tell(event)
                    ref.tell(event)
    restored = loads(dumps(s))  # what a runner's snapshot does
    check_same_state(restored, ref)
