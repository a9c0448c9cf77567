"""Several runners on one experiment: atomic claims, leases, reclaim, clean exit.

In-process tests drive :class:`flows.engine.runner.ExperimentRunner` with a real
thread pool on real SQLite/PostgreSQL; the slow ones start real ``rungflow run``
processes against one database and SIGKILL one of them.
"""

from __future__ import annotations

import concurrent.futures as cf
import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Hashable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

import examples.faults  # noqa: F401  (registers the trainable)
from flows.engine.leases import Lease, LeaseSettings, Owner, pid_alive, reclaim_reason
from flows.engine.runner import ExperimentRunner
from flows.engine.segment import SegmentJob, run_segment
from flows.spec import ExperimentSpec
from flows.trainable import SegmentOutcome
from schedulers import SegmentFinished, SegmentReclaimed, SegmentStarted, action_events
from storage import EventStore, LeaseRow
from tests.lease_clock import age_lease
from tests.log_checks import assert_log_integrity, claim_stats
from tests.pg import drop_databases, pg_url
from tests.waiting import wait_for

FAST = LeaseSettings(lease_timeout=30, poll_interval=0.05)


class ThreadExecutor:
    """A real thread pool behind the runner's executor protocol."""

    def __init__(self, workers: int = 4) -> None:
        self.pool = cf.ThreadPoolExecutor(workers)

    def submit(self, job: SegmentJob) -> Hashable:
        return self.pool.submit(run_segment, job)

    def wait_first(self, handles: Sequence[Hashable], timeout: float | None = None) -> Hashable:
        done, _ = cf.wait(handles, timeout=timeout, return_when=cf.FIRST_COMPLETED)  # type: ignore[arg-type]
        return next(iter(done)) if done else None

    def result(self, handle: Hashable) -> SegmentOutcome:
        return handle.result()  # type: ignore[attr-defined]


class StuckExecutor(ThreadExecutor):
    """Accepts jobs and never finishes them (a worker that hangs or is far away)."""

    def submit(self, job: SegmentJob) -> Hashable:
        return cf.Future()


def make_spec(name: str = "coop", scheduler: str = "asha", concurrency: int = 2,
              seconds: float = 0.0) -> ExperimentSpec:
    args: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
        "asha": ({"max_t": 9, "grace_period": 1, "reduction_factor": 3}, {"max_resource": 60}),
        "hyperband": ({"max_t": 9, "reduction_factor": 3}, {"max_trials": 17}),
        "random": ({"max_t": 2}, {"max_trials": 3}),
        "pbt": ({"perturbation_interval": 2, "population_size": 4, "max_generations": 4}, {}),
    }
    sargs, budget = args[scheduler]
    return ExperimentSpec.model_validate({
        "name": name, "trainable": "faults", "metric": "loss",
        "space": {"x": {"type": "float", "low": 0.0, "high": 1.0}},
        "scheduler": scheduler, "scheduler_args": sargs, "budget": budget,
        "max_concurrency": concurrency, "seed": 4,
        "trainable_args": {"seconds_per_unit": seconds},
    })


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'coop.db'}"
    else:
        yield pg_url()
        drop_databases()


def events_of(store: EventStore, name: str = "coop") -> list[Any]:
    return [r.event for r in store.read(name)]


def dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


# ------------------------------------------------------------------ the rule
def _lease(owner: Owner, age: float) -> LeaseRow:
    from datetime import UTC, datetime

    now = datetime.now(UTC)
    return LeaseRow("e", owner.id, owner.host, owner.pid, now, now, age)


def test_reclaim_rule() -> None:
    me = Owner.current()
    here_dead = Owner(me.host, dead_pid(), "dead")
    here_alive = Owner(me.host, os.getppid(), "alive")
    elsewhere = Owner("other-host", dead_pid(), "far")
    assert reclaim_reason(me.id, _lease(me, 99), me, 30) is None
    assert reclaim_reason(None, None, me, 30) == "segment has no owner"
    assert reclaim_reason(here_dead.id, None, me, 30) == "owner released its lease"
    assert reclaim_reason(here_dead.id, _lease(here_dead, 0), me, 30) == "owner process is gone"
    assert reclaim_reason(here_alive.id, _lease(here_alive, 0), me, 30) is None
    # Another machine's pid says nothing here: only the lease's age counts.
    assert reclaim_reason(elsewhere.id, _lease(elsewhere, 29), me, 30) is None
    assert "lease expired" in str(reclaim_reason(elsewhere.id, _lease(elsewhere, 31), me, 30))
    assert not pid_alive(here_dead.pid) and pid_alive(os.getpid())


# --------------------------------------------------------- in-process runners
@pytest.mark.parametrize("scheduler", ["asha", "pbt"])
def test_three_runners_finish_one_experiment(url: str, tmp_path: Path, scheduler: str) -> None:
    store = EventStore(url)
    spec = make_spec(scheduler=scheduler)
    summaries = []
    errors: list[BaseException] = []

    def work() -> None:
        try:
            runner = ExperimentRunner(store, spec, str(tmp_path / "ckpt"), lease_settings=FAST)
            summaries.append(runner.run(ThreadExecutor()))
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    try:
        assert not errors, errors
        assert [s.state for s in summaries] == ["finished"] * 3
        events = events_of(store)
        assert_log_integrity(events, owners=True)
        stats = claim_stats(events)
        assert stats["reclaims"] == 0
        started = sum(isinstance(e, SegmentStarted) for e in events)
        assert sum(s.segments_run + s.segments_failed for s in summaries) == started
        assert store.leases("coop") == {}  # every runner released its lease
    finally:
        store.close()


def _claim_one(store: EventStore, owner: Owner, tmp_path: Path) -> ExperimentRunner:
    """A runner for ``owner`` that records one claim and then goes silent."""
    runner = ExperimentRunner(store, make_spec(scheduler="random", concurrency=1),
                              str(tmp_path / "ckpt"), owner=owner, lease_settings=FAST)
    runner.replay()
    store.register_lease("coop", owner.id, owner.host, owner.pid)  # no heartbeat thread
    assert runner.commit(runner.claim_events(action_events(runner.scheduler.ask(1)[0])))
    return runner


def test_dead_process_on_this_host_is_reclaimed_at_once(url: str, tmp_path: Path) -> None:
    store = EventStore(url)
    try:
        me = Owner.current()
        dead = Owner(me.host, dead_pid(), "dead")
        _claim_one(store, dead, tmp_path)
        runner = ExperimentRunner(store, make_spec(scheduler="random", concurrency=1),
                                  str(tmp_path / "ckpt"), owner=me, lease_settings=FAST)
        summary = runner.run(ThreadExecutor())
        events = events_of(store)
        assert_log_integrity(events, owners=True)
        (reclaim,) = [e for e in events if isinstance(e, SegmentReclaimed)]
        assert (reclaim.previous_owner, reclaim.owner) == (dead.id, me.id)
        assert reclaim.reason == "owner process is gone"
        assert summary.resumed_segments == 1 and summary.state == "finished"
    finally:
        store.close()


def test_expired_lease_of_another_host_is_reclaimed(url: str, tmp_path: Path) -> None:
    store = EventStore(url)
    try:
        far = Owner("another-machine", os.getpid(), "far")  # a live pid, but not ours to judge
        _claim_one(store, far, tmp_path)
        age_lease(store, "coop", far.id, 31)  # its last heartbeat was 31 s ago (timeout 30)
        runner = ExperimentRunner(store, make_spec(scheduler="random", concurrency=1),
                                  str(tmp_path / "ckpt"), lease_settings=FAST)
        summary = runner.run(ThreadExecutor())
        events = events_of(store)
        assert_log_integrity(events, owners=True)
        (reclaim,) = [e for e in events if isinstance(e, SegmentReclaimed)]
        assert reclaim.previous_owner == far.id and "lease expired" in reclaim.reason
        assert summary.state == "finished"
    finally:
        store.close()


def test_live_owner_is_waited_for_not_reclaimed(url: str, tmp_path: Path) -> None:
    """With nothing of its own to run, a runner polls instead of raising or stealing.

    No sleep: the test waits for the runner to have looked at the leases a
    number of times while the only open segment is the live owner's.
    """
    store = EventStore(url)
    try:
        far = Owner("another-machine", os.getpid(), "busy")
        holder = _claim_one(store, far, tmp_path)
        lease = Lease(store, "coop", far, FAST)
        lease.acquire()
        result: list[Any] = []
        runner = ExperimentRunner(store, make_spec(scheduler="random", concurrency=1),
                                  str(tmp_path / "ckpt"), lease_settings=FAST)
        thread = threading.Thread(target=lambda: result.append(runner.run(ThreadExecutor())))
        thread.start()

        def only_the_held_segment_is_open() -> bool:
            holder.catch_up()
            others = [c for c in holder.claims.open.values() if c.owner != far.id]
            return not others and len(holder.scheduler.trials) == 3

        wait_for(only_the_held_segment_is_open, 60, "the other trials to finish")
        scans = runner.lease_scans
        wait_for(lambda: runner.lease_scans >= scans + 10, 60, "the runner to poll the leases")
        assert thread.is_alive()
        (claim,) = holder.claims.owned_by(far.id)
        while not holder.commit([SegmentFinished(
            claim.trial_id, claim.start, claim.stop,
            reports=({"resource": claim.stop, "loss": 0.5},), metrics={"loss": 0.5},
        )]):
            pass
        lease.release()
        thread.join(timeout=60)
        assert result and result[0].state == "finished"
        events = events_of(store)
        assert_log_integrity(events, owners=True)
        assert claim_stats(events)["reclaims"] == 0
    finally:
        store.close()


def test_heartbeats_keep_a_lease_young(url: str, tmp_path: Path) -> None:
    """The heartbeat thread renews the row long past one timeout (waited for, not slept)."""
    store = EventStore(url)
    try:
        store.create_experiment("coop", {})
        owner = Owner.current()
        settings = LeaseSettings(lease_timeout=0.3, poll_interval=0.05)  # a beat every 0.1 s
        lease = Lease(store, "coop", owner, settings)
        lease.acquire()
        try:
            first = store.leases("coop")[owner.id]
            age_lease(store, "coop", owner.id, 10)  # only a beat can make it young again
            wait_for(lambda: store.leases("coop")[owner.id].age < settings.lease_timeout,
                     30, "a heartbeat")
            row = store.leases("coop")[owner.id]
            assert row.heartbeat_at > first.heartbeat_at
            assert row.started_at == first.started_at
        finally:
            lease.release()
        assert owner.id not in store.leases("coop")  # released: reclaimable at once
    finally:
        store.close()


def test_result_of_a_reclaimed_segment_is_discarded(url: str, tmp_path: Path) -> None:
    store = EventStore(url)
    try:
        spec = make_spec(scheduler="random", concurrency=1)
        loser = ExperimentRunner(store, spec, str(tmp_path / "ckpt"), lease_settings=FAST)
        loser.open()
        pending: dict[Hashable, SegmentJob] = {}
        loser._decide(StuckExecutor(), pending)
        (job,) = pending.values()
        loser.lease.release()  # e.g. its heartbeats stopped reaching the database

        winner = ExperimentRunner(store, spec, str(tmp_path / "ckpt"), lease_settings=FAST)
        assert winner.run(ThreadExecutor()).state == "finished"
        before = store.last_seq("coop")

        late = SegmentFinished(job.trial_id, job.start, job.stop,
                               reports=({"resource": job.stop, "loss": 9.0},),
                               metrics={"loss": 9.0})
        assert loser._record_result(job, late) is False
        assert loser.summary.segments_discarded == 1
        assert store.last_seq("coop") == before  # nothing appended
        events = events_of(store)
        assert_log_integrity(events, owners=True)
        (reclaim,) = [e for e in events if isinstance(e, SegmentReclaimed)]
        assert reclaim.reason == "owner released its lease"
    finally:
        store.close()


# ----------------------------------------------------------- real processes
RUN = [
    sys.executable, "-c",
    "import sys, examples.faults; from flows.cli import app; sys.argv[0] = 'rungflow'; app()",
]


def write_spec(path: Path, name: str, concurrency: int, task_runner: str = "thread",
               max_resource: float = 120) -> Path:
    # Segments of 0.2 s per unit: long enough that a kill lands mid-segment.
    spec = make_spec(name, "asha", concurrency, seconds=0.2).to_json()
    spec["budget"] = {"max_resource": max_resource}
    spec["task_runner"] = task_runner
    path.write_text(json.dumps(spec))
    return path


def open_claims(store: EventStore, name: str) -> dict[str, str | None]:
    """Open segments by trial -> owner, from the log as it is now."""
    from flows.engine.leases import ClaimBook

    book = ClaimBook()
    for r in store.read(name):
        book.fold(r.event, r.seq)
    return {t: c.owner for t, c in book.open.items()}


def cooperate(tmp_path: Path, api_url: str, db: str, n: int, victim_host: str | None,
              task_runner: str = "thread", max_resource: float = 120) -> None:
    """Start ``n`` runs of one experiment, SIGKILL the first mid-segment, check the log."""
    name = "coop"
    spec = write_spec(tmp_path / "spec.json", name, concurrency=2, task_runner=task_runner,
                      max_resource=max_resource)
    base = dict(os.environ)
    base.update(
        PREFECT_API_URL=api_url, PREFECT_LOGGING_LEVEL="WARNING",
        RUNGFLOW_HOME=str(tmp_path / "home"), RUNGFLOW_LEASE_TIMEOUT="3",
        RUNGFLOW_POLL_INTERVAL="0.5",
    )
    args = [*RUN, "run", str(spec), "--json", "--db", db, "--checkpoints", str(tmp_path / "ckpt")]
    store = EventStore(db)
    procs: list[subprocess.Popen[str]] = []
    try:
        victim_env = dict(base)
        if victim_host:
            victim_env["RUNGFLOW_WORKER_HOST"] = victim_host  # looks like another machine
        victim = subprocess.Popen(args, env=victim_env, start_new_session=True, text=True,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        procs.append(victim)
        mark = f"/{victim.pid}/"

        def victim_holds() -> bool:
            return any(o and mark in o for o in open_claims(store, name).values())

        wait_for(lambda: store.has_experiment(name) and victim_holds(), 120, "the victim's claim")
        for _ in range(n - 1):
            procs.append(subprocess.Popen(args, env=base, start_new_session=True, text=True,
                                          stdout=subprocess.PIPE, stderr=subprocess.PIPE))

        def others_claimed() -> bool:
            owners = claim_stats(events_of(store, name))["segments_per_owner"]
            return any(mark not in o for o in owners)  # type: ignore[attr-defined]

        wait_for(others_claimed, 120, "the other runs' first claims")
        wait_for(victim_holds, 60, "the victim to hold a segment")
        os.killpg(victim.pid, signal.SIGKILL)
        victim.wait()
        held_at_death = [t for t, o in open_claims(store, name).items() if o and mark in o]

        for proc in procs[1:]:
            out, err = proc.communicate(timeout=180)
            assert proc.returncode == 0, err[-3000:]
            assert json.loads(out)["state"] == "finished"
        events = events_of(store, name)
        assert_log_integrity(events, owners=True)
        reclaims = [e for e in events if isinstance(e, SegmentReclaimed)]
        from_victim = [e for e in reclaims if e.previous_owner and mark in e.previous_owner]
        assert sorted(e.trial_id for e in from_victim) == sorted(held_at_death)
        assert held_at_death, "the victim was killed holding a segment"
        expected = "lease expired" if victim_host else "owner process is gone"
        assert all(expected in e.reason for e in from_victim), [e.reason for e in from_victim]
        owners = claim_stats(events)["segments_per_owner"]
        assert len(owners) >= 2  # type: ignore[arg-type]
        assert store.leases(name).keys() <= {e.previous_owner for e in from_victim}
    finally:
        for proc in procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        store.close()


@pytest.mark.slow
@pytest.mark.postgres
def test_four_processes_on_postgres_one_killed(tmp_path: Path, prefect_api_url: str) -> None:
    """The killed run looks like another machine: its segments wait for the lease timeout."""
    try:
        cooperate(tmp_path, prefect_api_url, pg_url(), n=4, victim_host="victim-machine")
    finally:
        drop_databases()


@pytest.mark.slow
def test_two_processes_on_sqlite_one_killed(tmp_path: Path, prefect_api_url: str) -> None:
    """Same machine: the dead process's segments are taken over at once."""
    cooperate(tmp_path, prefect_api_url, f"sqlite:///{tmp_path / 'coop.db'}", n=2,
              victim_host=None)


def test_list_says_interrupted_once_the_last_lease_expired(url: str, tmp_path: Path) -> None:
    """A SIGKILLed runner leaves its experiment stored as running, and its lease aging.

    The lease's age is moved on the database's clock (tests.lease_clock), not
    waited for: fresh, ``list`` says running; past the timeout with no live
    holder, interrupted. A live holder on this host keeps it running.
    """
    from typer.testing import CliRunner

    from flows.cli.app import app
    from flows.engine.status import listed_state

    def listed() -> str:
        result = CliRunner().invoke(app, ["list", "--json", "--db", url])
        assert result.exit_code == 0, result.output
        (row,) = json.loads(result.stdout)
        state: str = row["state"]
        return state

    store = EventStore(url)
    try:
        far = Owner("another-machine", os.getpid(), "far")  # killed: it never beats again
        _claim_one(store, far, tmp_path)
        (stored,) = store.list_experiments()
        assert stored.state == "running"
        assert listed_state(store, "coop", "running") == "running" == listed()
        timeout = LeaseSettings().lease_timeout
        age_lease(store, "coop", far.id, timeout + 1)
        assert listed_state(store, "coop", "running") == "interrupted" == listed()
        assert listed_state(store, "coop", "finished") == "finished"  # only "running" is judged
        # Another runner took over (a live process here, young lease): running again.
        me = Owner.current()
        store.register_lease("coop", me.id, me.host, me.pid)
        assert listed() == "running"
        store.release_lease("coop", me.id)
        store.release_lease("coop", far.id)
        assert listed() == "running"  # no lease at all: a runner still starting
    finally:
        store.close()
