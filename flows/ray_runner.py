"""``task_runner: ray``: train segments on a Ray cluster through ``prefect-ray``.

The flow makes every decision and writes every event, exactly as with threads
or Dask; Ray workers only train, read and write checkpoints, and return
metrics. Per run, the flow process connects to the cluster at
``RUNGFLOW_RAY_ADDRESS`` (``ray://host:10001``, ``host:6379`` or ``auto``) as a
Ray job, or, when it is unset, starts a local Ray instance sized for
``max_concurrency`` segments and shuts it down at the end.

What the job's runtime environment gives every worker process:

* **trainables**: a ``worker_process_setup_hook`` (:func:`setup_worker`)
  imports the trainable's module and ``RUNGFLOW_WORKER_MODULES``, the same
  modules a Dask worker plugin imports (see :func:`flows.dask_runner.worker_modules`);
  installed trainables are found through their entry points anyway;
* **the flow's Prefect API**: ``PREFECT_API_URL`` of the flow run (also the
  ephemeral API the flow process started), so no worker ever starts a Prefect
  server of its own. Task submissions carry the same URL in the Prefect
  settings they serialize, which is what the task engine in the worker reads;
* **checkpoints**: the job carries the checkpoint root as an absolute path or
  fsspec URL (the flow refuses a process-local one), so every worker reads and
  writes the same store.

Per-segment resources ``num_cpus`` and ``num_gpus`` from the spec become
``ray.remote`` options of each segment. A segment whose worker process (or
node) dies is run again by Ray, up to :data:`MAX_RETRIES` times, under the same
Prefect task run and with the same checkpoint key, so the flow records it once.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Sequence
from typing import Any

from flows.dask_runner import ensure_packages, import_modules, source_roots
from flows.spec import ExperimentSpec

__all__ = [
    "MAX_RETRIES",
    "MODULES_ENV",
    "PATHS_ENV",
    "RayResourceError",
    "flow_api_url",
    "make_ray_runner",
    "remote_options",
    "runtime_env",
    "setup_worker",
]

log = logging.getLogger("rungflow")

#: Environment variables the job's runtime environment sets for
#: :func:`setup_worker` (module names and source roots, never user input).
MODULES_ENV = "RUNGFLOW_RAY_WORKER_MODULES"
PATHS_ENV = "RUNGFLOW_RAY_WORKER_PATHS"
#: Ray re-runs a segment whose worker died this many times before the flow
#: sees the failure (Ray's own default, made explicit).
MAX_RETRIES = 3


class RayResourceError(ValueError):
    """No node of the Ray instance can ever hold one segment (``num_cpus``/``num_gpus``)."""


def setup_worker() -> None:
    """Ray ``worker_process_setup_hook``: make trainables findable in this worker.

    Reads the module names and source roots the flow put in the job's
    environment (:data:`MODULES_ENV`, :data:`PATHS_ENV`).
    """
    paths = [p for p in os.environ.get(PATHS_ENV, "").split(os.pathsep) if p]
    ensure_packages(paths)
    import_modules([m for m in os.environ.get(MODULES_ENV, "").split(",") if m])


def flow_api_url() -> str:
    """The Prefect API of the current flow run (or of this process's client)."""
    from prefect.context import FlowRunContext

    ctx = FlowRunContext.get()
    client: Any = ctx.client if ctx is not None else None
    if client is None:
        from prefect.client.orchestration import get_client

        client = get_client(sync_client=True)
    return str(client.api_url).rstrip("/")


def runtime_env(modules: Sequence[str], api_url: str) -> dict[str, Any]:
    """The Ray job's runtime environment (see the module docs)."""
    return {
        "env_vars": {
            "PREFECT_API_URL": api_url,
            MODULES_ENV: ",".join(modules),
            PATHS_ENV: os.pathsep.join(source_roots()),
        },
        "worker_process_setup_hook": f"{__name__}.setup_worker",
    }


def remote_options(spec: ExperimentSpec) -> dict[str, Any]:
    """``ray.remote`` options of each segment: resources and retries."""
    options: dict[str, Any] = {"max_retries": MAX_RETRIES}
    if spec.num_cpus is not None:
        options["num_cpus"] = spec.num_cpus
    if spec.num_gpus is not None:
        options["num_gpus"] = spec.num_gpus
    return options


def _local_cpus(spec: ExperimentSpec) -> int:
    """Logical CPUs of a local instance: room for ``max_concurrency`` segments."""
    per_segment = 1.0 if spec.num_cpus is None else spec.num_cpus
    return max(1, math.ceil(spec.max_concurrency * per_segment))


def _check_resources(spec: ExperimentSpec, address: str | None, have: dict[str, float]) -> None:
    """Refuse a segment no node of the cluster can ever hold (Ray would wait forever)."""
    for field, key, default in (("num_cpus", "CPU", 1.0), ("num_gpus", "GPU", 0.0)):
        need = getattr(spec, field)
        need = default if need is None else need
        total = float(have.get(key, 0.0))
        if need > total:
            where = f"the Ray cluster at {address}" if address else "the local Ray instance"
            message = f"{field} is {need:g}, but {where} has {total:g} {key}(s)"
            if address:
                # An autoscaling cluster may add nodes: say so, do not refuse.
                log.warning("%s; segments wait until the cluster grows", message)
            else:
                raise RayResourceError(message)


def make_ray_runner(spec: ExperimentSpec, modules: Sequence[str], address: str | None) -> Any:
    """A ``prefect_ray.RayTaskRunner`` for ``spec``.

    Args:
        spec: The experiment: ``max_concurrency`` sizes a local instance,
            ``num_cpus`` and ``num_gpus`` reserve resources per segment.
        modules: Modules every worker imports (see
            :func:`flows.dask_runner.worker_modules`).
        address: An existing cluster (``RUNGFLOW_RAY_ADDRESS``); None starts a
            local Ray instance for this run.

    Raises:
        ImportError: ``prefect-ray`` is not installed (``pip install 'rungflow[ray]'``).
    """
    try:
        import ray
        from prefect_ray import RayTaskRunner
        from prefect_ray.context import remote_options as ray_options
    except ImportError as exc:
        raise ImportError(
            "task_runner 'ray' needs prefect-ray: pip install 'rungflow[ray]'"
        ) from exc
    from prefect.context import SettingsContext
    from prefect.settings import PREFECT_API_URL

    options = remote_options(spec)

    class _Runner(RayTaskRunner):
        """RayTaskRunner whose workers use the flow's API and find its trainables."""

        _settings: SettingsContext | None = None

        def __enter__(self) -> Any:
            api_url = flow_api_url()
            self.init_kwargs["runtime_env"] = runtime_env(modules, api_url)
            super().__enter__()
            if not self._owns_ray:
                # Ray was initialised in this process before (by the caller):
                # its job's runtime environment applies, not ours.
                log.warning(
                    "Ray is already initialised in this process; its runtime environment "
                    "must provide PREFECT_API_URL and the trainables' modules"
                )
            current = SettingsContext.get()
            assert current is not None
            self._settings = SettingsContext(
                profile=current.profile,
                settings=current.settings.copy_with_update(updates={PREFECT_API_URL: api_url}),
            )
            try:
                _check_resources(spec, address, ray.cluster_resources())
            except BaseException:
                self.__exit__(None, None, None)
                raise
            return self

        def submit(self, task: Any, parameters: Any, wait_for: Any = None,
                   dependencies: Any = None) -> Any:
            # serialize_context() ships the current Prefect settings to the
            # worker's task engine: make them name the flow's API.
            assert self._settings is not None, "enter the task runner first"
            with self._settings, ray_options(**options):
                return super().submit(task, parameters, wait_for, dependencies)

    init_kwargs: dict[str, Any] = {"log_to_driver": False}
    if address == "auto":
        # prefect-ray reads "auto" as "no address"; Ray reads it as "the
        # cluster on this machine" (or RAY_ADDRESS).
        return _Runner(init_kwargs={**init_kwargs, "address": "auto"})
    if address:
        return _Runner(address=address, init_kwargs=init_kwargs)
    return _Runner(
        init_kwargs={
            **init_kwargs,
            # A new instance even if a cluster runs on this machine.
            "address": "local",
            "num_cpus": _local_cpus(spec),
            # No dashboard: it needs a free port, and nobody looks at a
            # per-run throwaway instance.
            "include_dashboard": False,
        }
    )
