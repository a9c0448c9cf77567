"""Checkpoint retention: the ledger's rules, the throttled hook, and PBT end to end."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from flows.engine.retention import CheckpointLedger, Retention
from flows.engine.status import checkpoint_usage, experiment_status
from flows.spec import load_spec
from schedulers import (
    CheckpointRef,
    Event,
    SegmentFailed,
    SegmentFinished,
    SegmentStarted,
    TrialPerturbed,
    TrialStopped,
)
from storage import CheckpointStore, EventStore
from storage.checkpoints import is_process_local, resolve_root
from tests.log_checks import assert_log_integrity


def ref(trial: str, start: float, stop: float, seq: int, exp: str = "e") -> CheckpointRef:
    key = f"{exp}/{trial}/{start:g}-{stop:g}.s{seq}.ckpt"
    return CheckpointRef(key, 1, "0" * 64, trial, stop)


def finished(r: CheckpointRef, start: float) -> SegmentFinished:
    return SegmentFinished(r.trial_id, start, r.resource, (), {}, checkpoint=r)


def started(trial: str, start: float, stop: float, source: CheckpointRef | None) -> SegmentStarted:
    return SegmentStarted(trial, start, stop, {}, restore_from=source)


# ------------------------------------------------------------------ ledger
def test_keeps_the_newest_per_trial_in_log_order() -> None:
    ledger = CheckpointLedger()
    a1, a2, a3 = ref("a", 0, 1, 1), ref("a", 1, 2, 3), ref("a", 2, 3, 5)
    # PBT back-jump: after 2->3, trial a copies a donor at resource 1 and
    # trains 1->2 again; that newest checkpoint has a *lower* stop than a3.
    a4 = ref("a", 1, 2, 7)
    for r, start in ((a1, 0), (a2, 1), (a3, 2), (a4, 1)):
        ledger.tell(finished(r, start))
    assert ledger.doomed(keep_last=1) == {a1.key, a2.key, a3.key}
    assert ledger.doomed(keep_last=2) == {a1.key, a2.key}
    assert ledger.doomed(keep_last=2, keep={a1.key}) == {a2.key}
    assert ledger.doomed(keep_last=10) == set()


def test_open_segments_protect_their_source_until_they_end() -> None:
    ledger = CheckpointLedger()
    donor_old, donor_new = ref("d", 0, 1, 1), ref("d", 1, 2, 3)
    ledger.tell(finished(donor_old, 0))
    ledger.tell(finished(donor_new, 1))
    ledger.tell(started("x", 0, 1, donor_old))  # an exploit of the older one
    assert ledger.doomed(keep_last=1) == set()
    ledger.tell(SegmentFailed("x", 0, 1, error="boom"))
    assert ledger.doomed(keep_last=1) == {donor_old.key}
    ledger.tell(started("x", 0, 1, donor_old))
    ledger.tell(SegmentFinished("x", 0, 1, (), {}, checkpoint=ref("x", 0, 1, 9)))
    assert ledger.doomed(keep_last=1) == {donor_old.key}


@pytest.mark.parametrize("bad", [0, -1, True, 1.5])
def test_keep_last_must_be_a_positive_integer(bad: Any) -> None:
    with pytest.raises(ValueError, match="keep_last is"):
        CheckpointLedger().doomed(bad)


# -------------------------------------------------------------------- hook
@dataclass
class FakeScheduler:
    live: set[str] = field(default_factory=set)

    def live_checkpoints(self) -> set[str]:
        return set(self.live)


@dataclass
class FakeRecord:
    event: Event


@dataclass
class FakeStore:
    newer: list[Event] = field(default_factory=list)

    def read(self, name: str, after_seq: int = 0, *, kinds: Any = None) -> list[FakeRecord]:
        return [FakeRecord(e) for e in self.newer]


@dataclass
class FakeRunner:
    """What :class:`Retention` reads from an ExperimentRunner."""

    name: str = "e"
    seq: int = 0
    ledger: CheckpointLedger = field(default_factory=CheckpointLedger)
    n_checkpoints: int = 0
    scheduler: FakeScheduler = field(default_factory=FakeScheduler)
    store: FakeStore = field(default_factory=FakeStore)

    def fold(self, *events: Event) -> None:
        """What the runner's own fold does for retention."""
        for event in events:
            self.ledger.tell(event)
            if isinstance(event, SegmentFinished) and event.checkpoint is not None:
                self.n_checkpoints += 1


def write(store: CheckpointStore, r: CheckpointRef) -> None:
    experiment, trial, name = r.key[: -len(".ckpt")].split("/")
    store.put(experiment, trial, name, b"w", r.resource)


def test_hook_is_throttled_and_deletes_only_recorded_unprotected_keys() -> None:
    root = "memory://retention-hook"
    store = CheckpointStore(root)
    retention = Retention(root, keep_last=1, every=3)
    runner = FakeRunner()
    refs = [ref("a", i, i + 1, i + 1) for i in range(4)]
    for r in refs:
        write(store, r)
    in_flight = ref("a", 4, 5, 9)
    write(store, in_flight)  # written by a worker, not yet in the log

    runner.fold(finished(refs[0], 0), finished(refs[1], 1))
    retention(runner)
    assert retention.sweeps == 0 and store.exists(refs[0].key)  # 2 < every

    runner.fold(finished(refs[2], 2))
    runner.scheduler.live = {refs[0].key}  # e.g. a PBT donor
    retention(runner)
    assert retention.sweeps == 1
    assert retention.deleted == [refs[1].key]
    assert store.exists(refs[0].key) and store.exists(refs[2].key)

    # A segment started by another flow run (not yet read by this runner)
    # restores refs[2]. A stopped trial alone does not trigger a sweep (no new
    # checkpoint, nothing new to delete): `every` new checkpoints do.
    runner.fold(finished(refs[3], 3), TrialStopped("b", reason="culled"))
    runner.store.newer = [started("b", 0, 3, refs[2])]
    retention(runner)
    assert retention.sweeps == 1
    retention.sweep(runner)
    assert retention.sweeps == 2
    assert retention.deleted == [refs[1].key]
    runner.store.newer = []
    runner.scheduler.live = set()
    retention.sweep(runner)
    assert sorted(retention.deleted) == sorted([refs[0].key, refs[1].key, refs[2].key])
    assert store.exists(refs[3].key) and store.exists(in_flight.key)
    assert store.usage("e") == (2, 2)


def test_a_resumed_run_does_not_delete_what_is_gone_again() -> None:
    root = "memory://retention-resume"
    store = CheckpointStore(root)
    refs = [ref("a", i, i + 1, i + 1) for i in range(3)]
    for r in refs[1:]:
        write(store, r)  # refs[0] was deleted by an earlier run
    runner = FakeRunner()
    runner.fold(*[finished(r, r.resource - 1) for r in refs])
    retention = Retention(root, keep_last=1, every=1)
    assert retention.sweep(runner) == [refs[1].key]


@pytest.mark.parametrize("seed", range(6))
def test_a_sweep_of_the_changed_trials_deletes_what_a_full_scan_deletes(seed: int) -> None:
    """Sweeps look only at trials that recorded a checkpoint, or whose excess a
    policy kept, since the last one; a full scan at every sweep is the oracle.
    Random results, restores (donors), failures, live sets, re-recorded keys
    and ledger rebuilds (a runner's reload)."""
    rng = np.random.default_rng(seed)
    roots = [f"memory://retention-diff-{seed}-{i}" for i in range(2)]
    stores = [CheckpointStore(r) for r in roots]
    retentions = [Retention(r, keep_last=int(rng.integers(1, 3)), every=1) for r in roots]
    retentions[1].keep_last = retentions[0].keep_last
    runners = [FakeRunner(), FakeRunner()]
    trials = [f"t{i}" for i in range(5)]
    recorded: list[CheckpointRef] = []
    for step in range(300):
        trial = str(rng.choice(trials))
        roll = rng.random()
        if roll < 0.45:
            if recorded and rng.random() < 0.1:  # an old log's duplicate key
                r = recorded[int(rng.integers(len(recorded)))]
                r = CheckpointRef(r.key, 1, "0" * 64, r.trial_id, r.resource)
            else:
                r = ref(trial, step, step + 1, step)
                for store in stores:
                    write(store, r)
                recorded.append(r)
            event: Event = finished(r, r.resource - 1)
        elif roll < 0.75:
            source = recorded[int(rng.integers(len(recorded)))] if recorded else None
            event = started(trial, 0, 1, source)
        elif roll < 0.85:
            event = SegmentFailed(trial, 0, 1, "boom")
        else:
            live = {r.key for r in recorded if rng.random() < 0.2}
            for runner in runners:
                runner.scheduler.live = set(live)
            event = SegmentFailed(trial, 0, 1, "noop")
        for runner in runners:
            runner.fold(event)
        if rng.random() < 0.05:  # the runner reloaded: its ledger from a snapshot
            old = runners[0].ledger
            runners[0].ledger = CheckpointLedger(
                order={t: list(keys) for t, keys in old.order.items()},
                open_restores=dict(old.open_restores),
            )
        retentions[1]._ledger = None  # the oracle scans every trial
        for retention, runner in zip(retentions, runners, strict=True):
            retention(runner)
        assert sorted(retentions[0].deleted) == sorted(retentions[1].deleted), f"step {step}"
    assert retentions[0].deleted, "nothing was deleted: the test would prove nothing"


def test_checkpoint_roots_are_resolved_for_workers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert resolve_root("ckpt") == str(tmp_path / "ckpt")
    assert resolve_root("file://ckpt") == str(tmp_path / "ckpt")
    assert resolve_root(f"file://{tmp_path}/x") == str(tmp_path / "x")
    assert resolve_root("s3://bucket/prefix") == "s3://bucket/prefix"
    assert is_process_local("memory://x") and not is_process_local(str(tmp_path))


def test_usage_of_an_unreachable_store_is_reported_not_raised() -> None:
    usage = checkpoint_usage("nosuchprotocol://x", "e")
    assert usage["bytes"] is None and usage["files"] is None and "error" in usage
    assert checkpoint_usage("memory://usage-empty", "e") == {"bytes": 0, "files": 0}


# ---------------------------------------------------------------- PBT e2e
@pytest.mark.usefixtures("prefect_harness")
@pytest.mark.parametrize("synch", [False, True], ids=["async", "sync"])
def test_pbt_never_loses_a_checkpoint_it_restores(
    rungflow_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, synch: bool
) -> None:
    """PBT with the most aggressive retention: a sweep after every result, one kept.

    Every segment restores its checkpoint (own or a donor's) and a missing
    one raises CheckpointError, which would be logged as SegmentFailed. So no
    SegmentFailed means every ``restore_from`` existed when its segment ran.
    """
    from flows.tune import tune

    shared = tmp_path / "shared-mount"
    monkeypatch.setenv("RUNGFLOW_CHECKPOINTS", f"file://{shared}")
    monkeypatch.setenv("RUNGFLOW_KEEP_LAST", "1")
    monkeypatch.setenv("RUNGFLOW_RETAIN_EVERY", "1")
    spec = load_spec(
        {"name": f"retain-pbt-{'sync' if synch else 'async'}", "trainable": "pbt-toy",
         "metric": "Q", "mode": "max",
         "space": {"h0": {"type": "float", "low": 0.0, "high": 1.0},
                   "h1": {"type": "float", "low": 0.0, "high": 1.0}},
         "scheduler": "pbt",
         "scheduler_args": {"perturbation_interval": 2, "population_size": 4,
                            "max_generations": 8, "synch": synch},
         "max_concurrency": 3, "seed": 5}
    )
    summary = tune(spec)
    assert summary["state"] == "finished"
    assert summary["segments_failed"] == 0
    store = EventStore(f"sqlite:///{rungflow_home / 'rungflow.db'}")
    try:
        events = [r.event for r in store.read(spec.name)]
        status = experiment_status(store, spec.name)
    finally:
        store.close()
    assert_log_integrity(events)
    assert not [e for e in events if isinstance(e, SegmentFailed)]
    exploits = [e for e in events if isinstance(e, TrialPerturbed)]
    assert exploits, "no exploit happened: the test would prove nothing"
    restores = [e for e in events if isinstance(e, SegmentStarted) and e.restore_from]
    assert any(s.restore_from.trial_id != s.trial_id for s in restores)  # type: ignore[union-attr]

    recorded = {e.checkpoint.key for e in events if isinstance(e, SegmentFinished) and e.checkpoint}
    on_disk = {str(p.relative_to(shared)) for p in shared.rglob("*.ckpt")}
    assert summary["extras"]["retention"]["deleted"] > 0
    assert on_disk < recorded  # retention deleted, and only recorded keys
    # Finished: one checkpoint per trial remains, the trial's last.
    last: dict[str, str] = {}
    for e in events:
        if isinstance(e, SegmentFinished) and e.checkpoint:
            last[e.trial_id] = e.checkpoint.key
    assert on_disk == set(last.values())
    assert status["checkpoints"] == {
        "bytes": sum((shared / k).stat().st_size for k in on_disk),
        "files": len(on_disk),
    }
