"""The Schedy-style job API on real SQLite and PostgreSQL."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from flows.engine.leases import LeaseSettings
from flows.engine.status import experiment_status
from flows.jobs import (
    DONE,
    FAILED,
    QUEUED,
    RUNNING,
    Experiment,
    JobNotFoundError,
    JobNotHeldError,
    NoJobError,
)
from flows.spec import ExperimentSpec
from schedulers import JobUpdated, SegmentReclaimed, SegmentStarted, TrialCreated
from storage import EventStore, ExperimentNotFoundError
from tests.log_checks import assert_log_integrity
from tests.pg import drop_databases, pg_url

SPACE = {"lr": {"type": "float", "low": 0.001, "high": 1.0, "log": True}}
SCHEDULERS: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
    "random": ({"max_t": 3}, {"max_trials": 6}),
    "fifo": ({"max_t": 3, "points_per_dim": 4}, {}),
    "hyperband": ({"max_t": 9, "reduction_factor": 3}, {"max_trials": 12}),
    "asha": ({"max_t": 9, "grace_period": 1, "reduction_factor": 3}, {"max_resource": 40}),
    "pbt": ({"perturbation_interval": 2, "population_size": 4, "max_generations": 3}, {}),
    "dyhpo": ({"max_t": 9, "grace_period": 1, "num_init_random": 3, "num_candidates": 16},
              {"max_resource": 30}),
}


def spec_for(name: str, scheduler: str) -> ExperimentSpec:
    args, budget = SCHEDULERS[scheduler]
    return ExperimentSpec.model_validate(
        {"name": name, "trainable": "noop", "metric": "loss", "space": SPACE,
         "scheduler": scheduler, "scheduler_args": args, "budget": budget},
    )


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[EventStore]:
    url = f"sqlite:///{tmp_path / 'jobs.db'}" if request.param == "sqlite" else pg_url()
    s = EventStore(url)
    yield s
    s.close()
    if request.param == "postgres":
        drop_databases()


@pytest.fixture
def sqlite_store(tmp_path: Path) -> Iterator[EventStore]:
    s = EventStore(f"sqlite:///{tmp_path / 'jobs.db'}")
    yield s
    s.close()


def work_until_done(exp: Experiment) -> int:
    """A Schedy worker loop; returns how many jobs it ran."""
    n = 0
    while True:
        try:
            job = exp.next_job()
        except NoJobError as exc:
            assert not exc.retry_later, exc
            return n
        with job:
            data = job.load_checkpoint()
            assert (data is None) == (job.restore_from is None)
            job.results["loss"] = float(job.hyperparameters["lr"]) + 1.0 / (1.0 + job.stop)
            job.save_checkpoint(f"{job.job_id}@{job.stop}".encode())
        n += 1


@pytest.mark.parametrize("scheduler", sorted(SCHEDULERS))
def test_worker_loop_drives_every_scheduler_with_added_jobs(
    sqlite_store: EventStore, tmp_path: Path, scheduler: str
) -> None:
    spec = spec_for(f"jobs-{scheduler}", scheduler)
    with Experiment(spec.name, store=sqlite_store, spec=spec,
                    checkpoint_root=str(tmp_path / "ckpt")) as exp:
        queued = exp.add_job({"lr": 0.01})
        done = exp.add_job({"lr": 0.5}, status=DONE, results={"loss": 0.7})
        assert (queued.status, done.status) == (QUEUED, DONE)
        assert work_until_done(exp) >= 1
        assert exp.status == Experiment.DONE
        jobs = {j.job_id: j for j in exp.all_jobs()}
        assert jobs[queued.job_id].status == DONE  # handed out and finished
        assert all(j.status in (DONE, QUEUED) for j in jobs.values())
        events = [r.event for r in sqlite_store.read(spec.name)]
        assert_log_integrity(events)
        sources = [e.info.get("source") for e in events if isinstance(e, TrialCreated)]
        assert sources.count("job_api") == 2
        # The same log is what `rungflow status` shows.
        status = experiment_status(sqlite_store, spec.name)
        assert {t["trial_id"] for t in status["trials"]} == set(jobs)


def test_manual_experiment_semantics(store: EventStore) -> None:
    exp = Experiment.manual("m", store=store, metric="acc", mode="max",
                            space={"a": {"type": "int", "low": 0, "high": 9}})
    with pytest.raises(NoJobError) as empty:
        exp.next_job()
    assert empty.value.retry_later  # RUNNING and empty: more jobs may be added
    ids = [exp.add_job({"a": a}).job_id for a in range(3)]
    running = exp.add_job({"a": 7}, status=RUNNING, results={"acc": 0.1})
    assert running.status == RUNNING and running.owner == exp.owner
    assert running.results == {"acc": 0.1}

    job = exp.next_job()
    assert (job.job_id, job.status, job.hyperparameters) == (ids[0], RUNNING, {"a": 0})
    job.results["acc"] = 0.5
    job.put()  # still RUNNING: a progress note others can read
    assert exp.get_job(job.job_id).results == {"acc": 0.5}
    job.update(status=DONE, results={"acc": 0.9})
    assert exp.get_job(job.job_id).status == DONE
    job.put()  # repeating a final put is harmless

    other = exp.next_job()
    other.status = FAILED
    other.error = "diverged"
    other.put()
    failed = exp.get_job(other.job_id)
    assert (failed.status, failed.error) == (FAILED, "diverged")
    with pytest.raises(ValueError, match="re-queued"):
        other.status = QUEUED
        other.put()
    with pytest.raises(JobNotFoundError):
        exp.get_job("nope")

    exp.status = Experiment.DONE
    exp.push_updates()
    with pytest.raises(NoJobError) as finished:
        exp.next_job()
    assert not finished.value.retry_later
    with pytest.raises(ValueError, match="DONE"):
        exp.add_job({"a": 1})
    states = {j.job_id: j.status for j in exp.all_jobs()}
    assert states == {ids[0]: DONE, ids[1]: FAILED, ids[2]: QUEUED, running.job_id: RUNNING}
    events = [r.event for r in store.read("m")]
    assert sum(isinstance(e, JobUpdated) for e in events) == 2

    reopened = Experiment("m", store=store)  # spec read from the log
    assert reopened.status == Experiment.DONE and len(list(reopened.all_jobs())) == 4
    exp.delete()
    with pytest.raises(ExperimentNotFoundError):
        exp.delete(ensure=True)
    exp.delete(ensure=False)
    with pytest.raises(ExperimentNotFoundError):
        Experiment("m", store=store)
    exp.close()


def test_a_reclaimed_job_cannot_be_put_by_its_old_holder(store: EventStore) -> None:
    fast = LeaseSettings(lease_timeout=30, poll_interval=0.05)
    a = Experiment.manual("r", store=store, lease_settings=fast)
    a.add_job({})
    job = a.next_job()
    a.close()  # released: a second worker may take the job at once
    b = Experiment("r", store=store, lease_settings=fast)
    taken = b.next_job()
    assert taken.job_id == job.job_id and taken.owner == b.owner
    before = store.last_seq("r")
    job.status = DONE
    with pytest.raises(JobNotHeldError, match="not held"):
        job.put()
    assert store.last_seq("r") == before
    taken.update(status=DONE, results={"loss": 1.0})
    events = [r.event for r in store.read("r")]
    (reclaim,) = [e for e in events if isinstance(e, SegmentReclaimed)]
    assert reclaim.reason == "owner released its lease"
    b.close()


def test_add_job_refusals(sqlite_store: EventStore) -> None:
    replay = ExperimentSpec.model_validate(
        {"name": "rp", "trainable": "noop", "metric": "loss", "space": SPACE,
         "scheduler": "pbt_replay",
         "scheduler_args": {"policy": [[0, {"lr": 0.1}]], "max_t": 4}},
    )
    exp = Experiment("rp", store=sqlite_store, spec=replay)
    with pytest.raises(ValueError, match="pbt_replay"):
        exp.add_job({"lr": 0.1})
    other = Experiment("rp2", store=sqlite_store, spec=spec_for("rp2", "random"))
    with pytest.raises(ValueError, match=r"lack \['lr'\]"):
        other.add_job({})
    with pytest.raises(ValueError, match="status"):
        other.add_job({"lr": 0.1}, status="PAUSED")


@pytest.mark.parametrize("mode", ["queue", "scheduler"])
def test_eight_threads_never_get_the_same_job(store: EventStore, mode: str) -> None:
    fast = LeaseSettings(lease_timeout=30, poll_interval=0.02)
    if mode == "queue":
        exp = Experiment.manual("h", store=store, lease_settings=fast)
        for i in range(80):
            exp.add_job({"i": i})
    else:
        spec = spec_for("h", "random").model_copy(update={"budget": _budget(80)})
        exp = Experiment("h", store=store, spec=spec, lease_settings=fast)
    handed: list[tuple[str, float, float, str]] = []
    errors: list[BaseException] = []
    lock = threading.Lock()
    barrier = threading.Barrier(8)

    def hammer() -> None:
        # One client per thread, like eight worker processes.
        client = Experiment("h", store=store, lease_settings=fast)
        barrier.wait()
        try:
            while True:
                try:
                    job = client.next_job(timeout=0.5 if mode == "scheduler" else 0.0)
                except NoJobError:
                    return
                with lock:
                    handed.append((job.job_id, job.start, job.stop, job.owner or ""))
                job.update(status=DONE, results={"loss": 0.1})
        except BaseException as exc:
            errors.append(exc)
        finally:
            client.close()

    threads = [threading.Thread(target=hammer) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert not errors, errors
    segments = [(j, a, b) for j, a, b, _ in handed]
    assert len(segments) == len(set(segments)) == 80  # every job exactly once
    assert len({o for *_, o in handed}) > 1  # several clients really took part
    events = [r.event for r in store.read("h")]
    starts = [e for e in events if isinstance(e, SegmentStarted)]
    assert len(starts) == 80
    assert_log_integrity(events, finished=mode == "scheduler", owners=True)
    exp.close()


def _budget(n: int) -> Any:
    from flows.spec import BudgetSpec

    return BudgetSpec(max_trials=n)
