"""``task_runner: ray`` against a real Ray cluster: a head node and a worker node.

Both nodes are ``ray start --block`` subprocesses on 127.0.0.1 with one CPU
each, started once per session in their own process groups and their own Ray
temp directory; they run outside the repository with no PYTHONPATH, so their
workers find rungflow's packages (an editable install) and the test trainables'
module only through the runtime environment the task runner gives the job.
The workers share nothing with the flow process but the checkpoint directory
and the Prefect API.

Most tests here are slow (the cluster costs tens of seconds to start); one run
on a local instance (:func:`test_shipped_trainable_on_a_local_instance`) is
part of the default run, so CI exercises Ray end to end on every push.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import pickle
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import in_ci

if not in_ci():  # CI installs the extra: there a missing prefect-ray is a failure
    pytest.importorskip("prefect_ray")

import psutil

from flows.engine.segment import SegmentJob
from flows.ray_runner import (
    RayResourceError,
    RayRuntimeEnvError,
    _check_resources,
    parse_runtime_env,
    py_modules,
    remote_options,
    runtime_env,
)
from flows.settings import get_settings
from flows.spec import load_spec
from flows.trainable import SegmentOutcome
from flows.tune import PrefectExecutor, make_task_runner, tune
from schedulers import SegmentFailed, SegmentFinished, SegmentStarted
from storage import CheckpointStore, EventStore
from tests.log_checks import assert_log_integrity

slow = pytest.mark.slow
#: In-process flows report to the session's Prefect test harness.
harness = pytest.mark.usefixtures("prefect_harness")

RAY = str(Path(sys.executable).with_name("ray"))
#: The test cluster and its drivers: no token authentication (Ray 2.60 turns
#: it on for new clusters and keeps the token in ~/.ray, shared machine-wide).
RAY_ENV = {"RAY_AUTH_MODE": "disabled"}


@dataclass
class Cluster:
    address: str
    temp_dir: Path
    raylets: set[int]

    def is_worker(self, pid: int) -> bool:
        """A live Ray worker process of this cluster (a child of one of its raylets).

        Ray ends a job's workers when the job ends: after a run, check the
        parent pid the trainable reported instead.
        """
        try:
            return psutil.Process(pid).ppid() in self.raylets
        except psutil.NoSuchProcess:
            return False


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _ours(temp_dir: Path) -> list[psutil.Process]:
    """Every process on this machine that belongs to the test cluster."""
    out = []
    for proc in psutil.process_iter(["cmdline", "environ"]):
        try:
            cmd = " ".join(proc.info["cmdline"] or ())
            env = proc.info["environ"] or {}
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        if str(temp_dir) in cmd or env.get("RAY_TMPDIR") == str(temp_dir):
            out.append(proc)
    return out


@pytest.fixture(scope="session")
def ray_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """``ray start --head`` plus one ``ray start --address`` worker node, 1 CPU each.

    ``ray start`` returns once its node is up (no polling); the node's daemons
    stay in the process group of the ``ray start`` that launched them, which
    is how the teardown finds them (never ``ray stop``: it stops every Ray on
    the machine).
    """
    root = tmp_path_factory.mktemp("ray")
    # Ray's unix socket paths must stay short: a short temp dir of our own.
    temp_dir = Path(f"/tmp/rf-ray-{os.getpid()}")
    port = _free_port()
    address = f"127.0.0.1:{port}"
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)
    env.update(RAY_TMPDIR=str(temp_dir), RAY_USAGE_STATS_ENABLED="0", **RAY_ENV)
    common = ["--num-cpus", "1", "--disable-usage-stats", "--temp-dir", str(temp_dir),
              "--node-ip-address", "127.0.0.1"]
    groups: list[int] = []

    def start(args: list[str], log: str) -> None:
        # Ray gives a raylet 30 s to register: a loaded machine may need a retry.
        for attempt in range(3):
            with open(root / log, "wb") as out:
                proc = subprocess.Popen([RAY, "start", *args, *common], cwd=root, env=env,
                                        stdout=out, stderr=subprocess.STDOUT,
                                        start_new_session=True)
            if proc.wait(timeout=300) == 0:
                groups.append(proc.pid)
                return
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            if attempt == 2:
                raise RuntimeError((root / log).read_text()[-3000:])

    try:
        start(["--head", "--port", str(port), "--include-dashboard", "false"], "head.log")
        start(["--address", address], "worker.log")
        raylets = {p.pid for p in _ours(temp_dir) if p.name() == "raylet"}
        assert len(raylets) == 2, raylets
        yield Cluster(address, temp_dir, raylets)
    finally:
        for sig in (signal.SIGTERM, signal.SIGKILL):
            for group in groups:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(group, sig)
            _, alive = psutil.wait_procs(_ours(temp_dir), timeout=20)
            if not alive:
                break
        # Any daemon that left its process group: ours by its temp dir.
        left = _ours(temp_dir)
        for proc in left:
            proc.kill()
        psutil.wait_procs(left, timeout=10)
        shutil.rmtree(temp_dir, ignore_errors=True)


@pytest.fixture
def on_cluster(
    ray_cluster: Cluster, rungflow_home: Path, monkeypatch: pytest.MonkeyPatch
) -> Cluster:
    monkeypatch.setenv("RUNGFLOW_RAY_ADDRESS", ray_cluster.address)
    for key, value in RAY_ENV.items():
        monkeypatch.setenv(key, value)
    return ray_cluster


def probe_spec(name: str, trainable: str = "ray-probe", **extra: Any) -> Any:
    import tests.flows.worker_trainables  # noqa: F401  (registers them here too)

    return load_spec(
        {"name": name, "trainable": trainable, "metric": "loss",
         "space": {"x": {"type": "float", "low": 0, "high": 1}},
         "scheduler_args": {"max_t": 3}, "budget": {"max_trials": 6},
         "max_concurrency": 2, "task_runner": "ray", **extra}
    )


def test_spec_resources_become_remote_options() -> None:
    spec = probe_spec("opts", num_cpus=0.5, num_gpus=1)
    assert remote_options(spec) == {"max_retries": 3, "num_cpus": 0.5, "num_gpus": 1}
    assert remote_options(probe_spec("opts")) == {"max_retries": 3}


def test_a_segment_no_node_can_hold_is_refused_on_a_local_instance() -> None:
    spec = probe_spec("gpu", num_gpus=1)
    with pytest.raises(RayResourceError, match=r"num_gpus is 1, but the local Ray instance"):
        _check_resources(spec, None, {"CPU": 2.0})
    _check_resources(spec, "ray://far:10001", {"CPU": 2.0})  # may autoscale: only a warning


@slow
@harness
def test_prefect_executor_waits_on_ray_futures(on_cluster: Cluster, tmp_path: Path) -> None:
    """``wait_first`` hands back each PrefectRayFuture once, done; workers use the flow's API."""
    import ray
    from prefect import flow
    from prefect.context import FlowRunContext

    spec = probe_spec("ray-executor", num_cpus=1)
    root = str(tmp_path / "ckpt")
    jobs = [
        SegmentJob("ray-executor", "ray-probe", "loss", f"t{i:04d}", {"x": 0.5}, 0.0,
                   float(i + 1), None, root, started_seq=i + 1)
        for i in range(4)
    ]

    @flow
    def drive() -> tuple[str, list[tuple[SegmentJob, SegmentOutcome]]]:
        ctx = FlowRunContext.get()
        assert ctx is not None
        with make_task_runner(spec) as runner:
            executor = PrefectExecutor(runner, retries=0)
            pending = {executor.submit(job): job for job in jobs}
            out = []
            while pending:
                handle = executor.wait_first(list(pending))
                assert handle in pending
                ready, _ = ray.wait([handle.wrapped_future], timeout=0)  # type: ignore[attr-defined]
                assert ready, "wait_first returned a segment Ray has not finished"
                out.append((pending.pop(handle), executor.result(handle)))
        assert not ray.is_initialized(), "the runner left its Ray connection open"
        return str(ctx.client.api_url).rstrip("/"), out

    api_url, results = drive()
    assert sorted(job.trial_id for job, _ in results) == [job.trial_id for job in jobs]
    store = CheckpointStore(root)
    for job, outcome in results:
        assert outcome.reports[-1]["resource"] == job.stop
        assert outcome.checkpoint is not None
        seen = pickle.loads(store.get(outcome.checkpoint))
        assert seen["ppid"] in on_cluster.raylets, "a segment ran outside the Ray workers"
        assert seen["api_url"] == api_url
        assert not [c for c in seen["children"] if "prefect" in c], seen["children"]


@slow
@harness
def test_hyperband_on_digits_through_two_ray_nodes(
    on_cluster: Cluster, rungflow_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """HyperBand trains on both nodes; promotions restore from shared checkpoints.

    The checkpoint root is a *relative* ``file://`` URL to a second directory
    (a stand-in for a shared mount): the flow resolves it before shipping it.
    """
    import tests.flows.worker_trainables  # noqa: F401

    monkeypatch.chdir(tmp_path)
    shared = tmp_path / "shared-mount"
    monkeypatch.setenv("RUNGFLOW_CHECKPOINTS", "file://shared-mount")
    spec = load_spec(
        {"name": "ray-hb", "trainable": "digits-pid", "metric": "error",
         "space": {"lr": {"type": "float", "low": 1e-3, "high": 0.2, "log": True},
                   "hidden": {"type": "int", "low": 8, "high": 32, "step": 8}},
         "scheduler": "hyperband",
         "scheduler_args": {"max_t": 9, "reduction_factor": 3},
         "budget": {"max_trials": 12}, "max_concurrency": 2, "seed": 3,
         "task_runner": "ray", "num_cpus": 1}
    )
    summary = tune(spec)
    assert summary["state"] == "finished"
    assert summary["segments_failed"] == 0

    store = EventStore(f"sqlite:///{rungflow_home / 'rungflow.db'}")
    try:
        events = [r.event for r in store.read(spec.name)]
    finally:
        store.close()
    assert_log_integrity(events)
    finished = [e for e in events if isinstance(e, SegmentFinished)]
    node = {int(e.metrics["pid"]): int(e.metrics["ppid"]) for e in finished}
    assert set(node.values()) <= on_cluster.raylets, "a segment ran outside the Ray workers"
    assert len(set(node.values())) == 2, "one node trained everything"

    # Promotions restored checkpoints from the shared directory. (Which node
    # restores which is up to Ray's scheduler: it prefers the node that is
    # free first, so a cross-node restore is likely but not certain.)
    restored = [e for e in events if isinstance(e, SegmentStarted) and e.restore_from]
    assert restored, "HyperBand promoted nobody"
    written = {e.checkpoint.key for e in finished if e.checkpoint}
    assert {s.restore_from.key for s in restored} <= written  # type: ignore[union-attr]
    assert list(shared.rglob("*.ckpt"))


@slow
@harness
def test_killed_ray_worker_loses_and_duplicates_nothing(
    on_cluster: Cluster, rungflow_home: Path, tmp_path: Path
) -> None:
    """SIGKILL the worker process training a segment: Ray runs it again, the flow
    records it once, and the experiment finishes with no failed segment."""
    marker = tmp_path / "stalled.pid"
    spec = probe_spec("ray-kill", trainable="stall-once",
                      trainable_args={"marker": str(marker), "trial": "t0002"})
    killed: list[int] = []

    def kill_when_stalled() -> None:
        deadline = time.monotonic() + 240
        while not marker.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        if marker.exists():
            pid = int(marker.read_text())
            assert on_cluster.is_worker(pid)
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)

    killer = threading.Thread(target=kill_when_stalled, daemon=True)
    killer.start()
    summary = tune(spec)
    killer.join()
    assert killed, "the segment never stalled"
    assert summary["state"] == "finished"
    assert summary["segments_failed"] == 0

    store = EventStore(f"sqlite:///{rungflow_home / 'rungflow.db'}")
    try:
        events = [r.event for r in store.read(spec.name)]
    finally:
        store.close()
    assert_log_integrity(events)
    assert not [e for e in events if isinstance(e, SegmentFailed)]
    redone = [e for e in events if isinstance(e, SegmentFinished)
              and e.trial_id == "t0002" and e.start == 0]
    assert len(redone) == 1
    assert int(redone[0].metrics["pid"]) != killed[0]


@slow
def test_cooperating_runs_on_ray_one_killed(
    on_cluster: Cluster, tmp_path: Path, prefect_api_url: str
) -> None:
    """Two ``rungflow run`` on one experiment and one Ray cluster; one is SIGKILLed
    mid-segment: its segments are reclaimed, none is lost or finished twice."""
    from tests.flows.engine.test_cooperation import cooperate

    cooperate(tmp_path, prefect_api_url, f"sqlite:///{tmp_path / 'coop.db'}", n=2,
              victim_host=None, task_runner="ray", max_resource=40)


@slow
@harness
def test_local_instance_without_an_address(
    rungflow_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No RUNGFLOW_RAY_ADDRESS: a local instance for the run, gone when it ends."""
    import ray

    monkeypatch.delenv("RUNGFLOW_RAY_ADDRESS", raising=False)
    before = {p.pid for p in psutil.Process().children(recursive=True)}
    summary = tune(probe_spec("ray-local", trainable="noop-pid"))
    assert summary["state"] == "finished" and summary["segments_failed"] == 0
    assert not ray.is_initialized()
    left = [p for p in psutil.Process().children(recursive=True) if p.pid not in before]
    _, alive = psutil.wait_procs(left, timeout=30)
    assert not alive, [" ".join(p.cmdline()) for p in alive]


# -- shipping a trainable's code (RUNGFLOW_RAY_PY_MODULES) --------------------------

#: A trainable that says where its code came from, in which process it ran,
#: which Prefect API that process used and what it started.
SHIPPED = '''
import os

import psutil
from prefect.settings import PREFECT_API_URL

from flows.trainable import trainable


@trainable("ray-shipped")
def train(ctx):
    ctx.report(ctx.stop, loss=1.0 / (1.0 + ctx.stop))
    children = [" ".join(p.cmdline()) for p in psutil.Process().children(recursive=True)]
    ctx.save({"file": __file__, "pid": os.getpid(), "ppid": os.getppid(),
              "api_url": PREFECT_API_URL.value(), "children": children})
'''


def load_by_file(
    root: Path, monkeypatch: pytest.MonkeyPatch, *, package: bool
) -> tuple[str, Path]:
    """Write the ``ray-shipped`` trainable under ``root`` and import it *by file*.

    ``root`` never goes on ``sys.path`` (Ray would copy the driver's sys.path
    and working directory to workers on this machine), so a worker can only
    import the module through what the job ships. Returns the module's name
    and its source (the package directory or the ``.py`` file).
    """
    root.mkdir(parents=True)
    if package:
        name, source = "rf_shipped_pkg.train", root / "rf_shipped_pkg"
        source.mkdir()
        (source / "__init__.py").write_text("")
        (source / "train.py").write_text(SHIPPED)
        spec = importlib.util.spec_from_file_location(
            "rf_shipped_pkg", source / "__init__.py", submodule_search_locations=[str(source)]
        )
    else:
        name, source = "rf_shipped", root / "rf_shipped.py"
        source.write_text(SHIPPED)
        spec = importlib.util.spec_from_file_location(name, source)
    specs = [spec]
    if package:
        specs.append(importlib.util.spec_from_file_location(name, source / "train.py"))
    for each in specs:
        assert each is not None and each.loader is not None
        module = importlib.util.module_from_spec(each)
        monkeypatch.setitem(sys.modules, each.name, module)  # gone after the test
        each.loader.exec_module(module)
    assert str(root) not in sys.path
    return name, source


def shipped_spec(name: str, **extra: Any) -> Any:
    return load_spec(
        {"name": name, "trainable": "ray-shipped", "metric": "loss",
         "space": {"x": {"type": "float", "low": 0, "high": 1}},
         "scheduler_args": {"max_t": 2}, "budget": {"max_trials": 3},
         "max_concurrency": 2, "task_runner": "ray", **extra}
    )


def shipped_runs(name: str, home: Path) -> list[dict[str, Any]]:
    """What each finished segment of experiment ``name`` saw in its worker."""
    store = EventStore(f"sqlite:///{home / 'rungflow.db'}")
    try:
        events = [r.event for r in store.read(name)]
    finally:
        store.close()
    assert_log_integrity(events)
    checkpoints = CheckpointStore(get_settings().resolved_checkpoints)
    return [pickle.loads(checkpoints.get(e.checkpoint))
            for e in events if isinstance(e, SegmentFinished) and e.checkpoint]


def test_py_modules_ships_what_workers_import_and_what_the_setting_names(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``auto`` ships the trainable's top-level package or single file; rungflow's
    own packages and installed ones are left to the nodes' installs."""
    name, package = load_by_file(tmp_path / "a", monkeypatch, package=True)
    single, file = load_by_file(tmp_path / "b", monkeypatch, package=False)
    assert py_modules("auto", [name, single, "flows.tune", "psutil"]) == [
        str(package), str(file)
    ]
    assert py_modules("", [name]) == []
    wheel = tmp_path / "dep-1.0-py3-none-any.whl"
    wheel.write_bytes(b"")
    assert py_modules(f" {single} , s3://bucket/code.zip, {wheel},auto", [single]) == [
        str(file), "s3://bucket/code.zip", str(wheel)
    ]
    with pytest.raises(RayRuntimeEnvError, match="'no_such_module' cannot be imported"):
        py_modules("no_such_module", [])
    with pytest.raises(RayRuntimeEnvError, match="does not exist"):
        py_modules(str(tmp_path / "missing"), [])


def test_runtime_env_setting_is_merged_under_rungflows_keys() -> None:
    extra = parse_runtime_env(
        '{"working_dir": "/code", "pip": ["tqdm"], "py_modules": ["/libs/a"],'
        ' "env_vars": {"OMP_NUM_THREADS": "1", "PREFECT_API_URL": "http://elsewhere"}}'
    )
    env = runtime_env(["rf_shipped"], "http://flow/api", extra, ["/libs/b", "/libs/a"])
    assert env["working_dir"] == "/code" and env["pip"] == ["tqdm"]
    assert env["py_modules"] == ["/libs/a", "/libs/b"]
    assert env["env_vars"]["OMP_NUM_THREADS"] == "1"
    assert env["env_vars"]["PREFECT_API_URL"] == "http://flow/api"
    assert env["worker_process_setup_hook"] == "flows.ray_runner.setup_worker"
    assert "py_modules" not in runtime_env([], "http://flow/api")
    assert parse_runtime_env("  ") == {}
    for bad, match in (("{", "not valid JSON"), ("[1]", "must be a JSON object"),
                       ('{"worker_process_setup_hook": "x.y"}', "rungflow sets itself"),
                       ('{"env_vars": []}', "'env_vars' must be an object")):
        with pytest.raises(RayRuntimeEnvError, match=match):
            parse_runtime_env(bad)


@harness
def test_shipped_trainable_on_a_local_instance(
    rungflow_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The default run's Ray test: a local instance of 2 CPUs (no RUNGFLOW_RAY_ADDRESS)
    trains a trainable whose module exists only as a file in a temp directory.

    The workers import it from the job's ``py_modules`` (``RUNGFLOW_RAY_PY_MODULES=auto``),
    report to the flow's Prefect API and start no server; the instance is gone
    when the run ends.
    """
    import ray

    name, source = load_by_file(tmp_path / "code", monkeypatch, package=False)
    ray_tmp = Path(f"/tmp/rf-ray-{os.getpid()}-local")  # Ray's socket paths must stay short
    monkeypatch.setenv("RAY_TMPDIR", str(ray_tmp))
    monkeypatch.setenv("RUNGFLOW_RAY_PY_MODULES", "auto")
    monkeypatch.delenv("RUNGFLOW_RAY_ADDRESS", raising=False)
    before = {p.pid for p in psutil.Process().children(recursive=True)}
    try:
        summary = tune(shipped_spec("ray-shipped-local"))
        assert summary["state"] == "finished" and summary["segments_failed"] == 0
        assert not ray.is_initialized()
        left = [p for p in psutil.Process().children(recursive=True) if p.pid not in before]
        _, alive = psutil.wait_procs(left, timeout=30)
        assert not alive, [" ".join(p.cmdline()) for p in alive]
        runs = shipped_runs("ray-shipped-local", rungflow_home)
        assert len(runs) >= 3
        api_urls = set()
        for seen in runs:
            shipped = Path(seen["file"])
            assert shipped.is_relative_to(ray_tmp) and "runtime_resources" in shipped.parts, shipped
            assert shipped.name == source.name and shipped != source
            assert seen["pid"] != os.getpid()
            assert not [c for c in seen["children"] if "prefect" in c], seen["children"]
            api_urls.add(seen["api_url"])
        assert len(api_urls) == 1 and next(iter(api_urls)).startswith("http"), api_urls
        assert name == "rf_shipped"
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)


@slow
@harness
def test_shipped_package_on_a_two_node_cluster(
    on_cluster: Cluster, rungflow_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An external cluster (``ray start`` nodes without the code): the trainable's
    package, written to a temp directory, reaches the workers of both nodes
    through the job's ``py_modules``."""
    _, package = load_by_file(tmp_path / "code", monkeypatch, package=True)
    monkeypatch.setenv("RUNGFLOW_RAY_PY_MODULES", "auto")
    spec = shipped_spec("ray-shipped-cluster", num_cpus=1, budget={"max_trials": 4})
    summary = tune(spec)
    assert summary["state"] == "finished" and summary["segments_failed"] == 0
    runs = shipped_runs(spec.name, rungflow_home)
    assert len(runs) >= 4
    for seen in runs:
        shipped = Path(seen["file"])
        assert shipped.is_relative_to(on_cluster.temp_dir), shipped
        assert "runtime_resources" in shipped.parts and shipped.parent.name == package.name
        assert seen["ppid"] in on_cluster.raylets, "a segment ran outside the Ray workers"
        assert not [c for c in seen["children"] if "prefect" in c], seen["children"]
