"""``task_runner: dask`` against a real ``distributed`` scheduler and two workers.

The scheduler and the workers are subprocesses on 127.0.0.1, as on a cluster:
the workers share nothing with the flow process but the checkpoint directory
and the Prefect API. They run outside the repository with no PYTHONPATH, so
they find rungflow's packages (an editable install) and the test trainables'
module only through the worker plugin the task runner registers.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

pytest.importorskip("prefect_dask")

from flows.engine.segment import SegmentJob
from flows.engine.status import experiment_status
from flows.spec import load_spec
from flows.trainable import SegmentOutcome
from flows.tune import PrefectExecutor, make_task_runner, tune
from schedulers import SegmentFailed, SegmentFinished, SegmentStarted
from storage import EventStore
from tests.log_checks import assert_log_integrity

# The cluster and the Prefect harness take ~20 s to start on 2 cores.
pytestmark = [pytest.mark.usefixtures("prefect_harness"), pytest.mark.slow]



@dataclass
class Cluster:
    address: str
    worker_pids: set[int]


def _spawn(args: list[str], log: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
    with open(log, "wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", *args], cwd=log.parent, env=env, stdout=out,
            stderr=subprocess.STDOUT, start_new_session=True,
        )


@pytest.fixture(scope="module")
def dask_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """``dask scheduler`` plus two single-threaded ``dask worker`` processes."""
    from distributed import Client

    root = tmp_path_factory.mktemp("dask")
    scheduler_file = root / "scheduler.json"
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)
    procs = [
        _spawn(["distributed.cli.dask_scheduler", "--host", "127.0.0.1", "--port", "0",
                "--no-dashboard", "--scheduler-file", str(scheduler_file)],
               root / "scheduler.log", env)
    ]
    try:
        deadline = time.monotonic() + 60
        while not scheduler_file.exists() or not scheduler_file.read_text().strip():
            if procs[0].poll() is not None or time.monotonic() > deadline:
                raise RuntimeError((root / "scheduler.log").read_text()[-2000:])
            time.sleep(0.1)
        address = json.loads(scheduler_file.read_text())["address"]
        for i in range(2):
            procs.append(
                _spawn(["distributed.cli.dask_worker", address, "--nworkers", "1",
                        "--nthreads", "1", "--no-dashboard", "--host", "127.0.0.1",
                        "--local-directory", str(root / f"w{i}")],
                       root / f"worker{i}.log", env)
            )
        with Client(address, timeout=60) as client:
            client.wait_for_workers(2, timeout=60)
            pids = set(client.run(os.getpid).values())
        yield Cluster(address, pids)
    finally:
        for proc in reversed(procs):
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


@pytest.fixture
def on_cluster(
    dask_cluster: Cluster, rungflow_home: Path, monkeypatch: pytest.MonkeyPatch
) -> Cluster:
    monkeypatch.setenv("RUNGFLOW_DASK_ADDRESS", dask_cluster.address)
    return dask_cluster


def test_prefect_executor_waits_on_dask_futures(on_cluster: Cluster, tmp_path: Path) -> None:
    """``wait_first`` (as_completed) hands back each PrefectDaskFuture exactly once, done."""
    from prefect import flow

    import tests.flows.worker_trainables  # noqa: F401  (registers noop-pid here too)

    spec = load_spec(
        {"name": "dask-executor", "trainable": "noop-pid", "metric": "loss",
         "space": {"x": {"type": "float", "low": 0, "high": 1}},
         "scheduler_args": {"max_t": 3}, "budget": {"max_trials": 6},
         "max_concurrency": 3, "task_runner": "dask"}
    )
    jobs = [
        SegmentJob("dask-executor", "noop-pid", "loss", f"t{i:04d}", {"x": 0.5}, 0.0,
                   float(i + 1), None, str(tmp_path / "ckpt"), started_seq=i + 1)
        for i in range(5)
    ]

    @flow
    def drive() -> list[tuple[SegmentJob, SegmentOutcome]]:
        with make_task_runner(spec) as runner:
            executor = PrefectExecutor(runner, retries=0)
            pending = {executor.submit(job): job for job in jobs}
            out = []
            while pending:
                handle = executor.wait_first(list(pending))
                assert handle in pending
                # Done in Dask, not merely the first in line.
                assert handle.wrapped_future.done()  # type: ignore[attr-defined]
                out.append((pending.pop(handle), executor.result(handle)))
            return out

    results = drive()
    assert sorted(job.trial_id for job, _ in results) == [job.trial_id for job in jobs]
    for job, outcome in results:
        assert outcome.reports[-1]["resource"] == job.stop
        assert outcome.reports[-1]["pid"] in on_cluster.worker_pids
        assert outcome.checkpoint is not None


def test_hyperband_on_digits_through_two_dask_workers(
    on_cluster: Cluster, rungflow_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """HyperBand trains in the workers; promotions restore checkpoints across workers.

    The checkpoint root is a *relative* ``file://`` URL to a second directory
    (a stand-in for a shared mount), so the test also checks that the flow
    resolves it before shipping it to workers that run in another directory.
    """
    import tests.flows.worker_trainables  # noqa: F401

    monkeypatch.chdir(tmp_path)
    shared = tmp_path / "shared-mount"
    monkeypatch.setenv("RUNGFLOW_CHECKPOINTS", "file://shared-mount")
    spec = load_spec(
        {"name": "dask-hb", "trainable": "digits-pid", "metric": "error",
         "space": {"lr": {"type": "float", "low": 1e-3, "high": 0.2, "log": True},
                   "hidden": {"type": "int", "low": 8, "high": 32, "step": 8}},
         "scheduler": "hyperband",
         "scheduler_args": {"max_t": 9, "reduction_factor": 3},
         "budget": {"max_trials": 12}, "max_concurrency": 2, "seed": 3,
         "task_runner": "dask"}
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
    finished = [e for e in events if isinstance(e, SegmentFinished)]
    pids = {int(e.metrics["pid"]) for e in finished}
    assert pids <= on_cluster.worker_pids, "a segment ran outside the Dask workers"
    assert os.getpid() not in pids

    # Which worker wrote each checkpoint, and which worker restored it.
    writer = {e.checkpoint.key: int(e.metrics["pid"]) for e in finished if e.checkpoint}
    restored = [e for e in events if isinstance(e, SegmentStarted) and e.restore_from]
    assert restored, "HyperBand promoted nobody"
    reader: dict[tuple[str, float], int] = {
        (e.trial_id, e.start): int(e.metrics["pid"]) for e in finished
    }
    cross = [s for s in restored if reader[(s.trial_id, s.start)] != writer[s.restore_from.key]]  # type: ignore[union-attr]
    assert len(pids) == 2 and cross, "no checkpoint was restored by the other worker"

    # Checkpoints went to the shared directory, and status reports their size.
    on_disk = [p for p in shared.rglob("*.ckpt")]
    assert on_disk
    assert status["checkpoints"]["files"] == len(on_disk)
    assert status["checkpoints"]["bytes"] == sum(p.stat().st_size for p in on_disk)
