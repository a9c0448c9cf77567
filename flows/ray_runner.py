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
  writes the same store;
* **code, when asked for** (settings only, never the spec or a UI form, which
  can only name a registered trainable): ``RUNGFLOW_RAY_PY_MODULES`` ships
  modules as the job's ``py_modules`` (see :func:`py_modules`), and
  ``RUNGFLOW_RAY_RUNTIME_ENV`` (a JSON object: ``working_dir``, ``pip``,
  ``excludes``, ...) is merged into the job's runtime environment (see
  :func:`runtime_env`). Ray uploads them once per job (cached by content) and
  every worker finds them on its ``sys.path``.

Per-segment resources ``num_cpus`` and ``num_gpus`` from the spec become
``ray.remote`` options of each segment. A segment whose worker process (or
node) dies is run again by Ray, up to :data:`MAX_RETRIES` times, under the same
Prefect task run and with the same checkpoint key, so the flow records it once.
"""

from __future__ import annotations

import importlib
import json
import logging
import math
import os
import site
import sys
import sysconfig
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from flows.dask_runner import PACKAGES, ensure_packages, import_modules, source_roots
from flows.spec import ExperimentSpec

__all__ = [
    "AUTO",
    "MAX_RETRIES",
    "MODULES_ENV",
    "PATHS_ENV",
    "RayResourceError",
    "RayRuntimeEnvError",
    "flow_api_url",
    "make_ray_runner",
    "module_source",
    "parse_runtime_env",
    "py_modules",
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


class RayRuntimeEnvError(ValueError):
    """``RUNGFLOW_RAY_PY_MODULES`` or ``RUNGFLOW_RAY_RUNTIME_ENV`` cannot be used."""


#: ``RUNGFLOW_RAY_PY_MODULES=auto``: ship what the workers import.
AUTO = "auto"
#: Keys of the job's runtime environment that rungflow sets itself.
_OURS = ("worker_process_setup_hook",)


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


def _installed_dirs() -> tuple[Path, ...]:
    """Directories of installed packages (site-packages and friends)."""
    dirs = {sysconfig.get_paths()[k] for k in ("purelib", "platlib")}
    dirs.update(site.getsitepackages())
    user = site.getusersitepackages()
    if isinstance(user, str):
        dirs.add(user)
    return tuple(Path(d).resolve() for d in dirs if d)


def module_source(name: str) -> Path:
    """What Ray ships so that workers can ``import name``.

    The directory of ``name``'s top-level package, or the file of a top-level
    single-file module (Ray puts either on the workers' ``sys.path``).

    Raises:
        RayRuntimeEnvError: the module cannot be imported in this process, or
            it is not plain Python source Ray can ship under that name.
    """
    top = name.partition(".")[0]
    try:
        module = sys.modules.get(top) or importlib.import_module(top)
    except ImportError as exc:
        raise RayRuntimeEnvError(
            f"RUNGFLOW_RAY_PY_MODULES: module {name!r} cannot be imported here ({exc}); "
            "ship a path instead, or install it on the Ray nodes"
        ) from None
    paths = list(getattr(module, "__path__", None) or ())
    if paths:
        if len(paths) != 1:
            raise RayRuntimeEnvError(
                f"RUNGFLOW_RAY_PY_MODULES: package {top!r} spans {len(paths)} directories "
                "(a namespace package); ship its directories by path"
            )
        return Path(paths[0]).resolve()
    file = getattr(module, "__file__", None)
    if not file or Path(file).suffix != ".py" or Path(file).stem != top:
        raise RayRuntimeEnvError(
            f"RUNGFLOW_RAY_PY_MODULES: module {top!r} is not a Python source file named "
            f"{top}.py (it is {file or 'built in'}); ship its directory by path"
        )
    return Path(file).resolve()


def py_modules(setting: str, modules: Sequence[str]) -> list[str]:
    """The job's ``py_modules`` from ``RUNGFLOW_RAY_PY_MODULES`` (comma-separated).

    Each entry is one of:

    * ``auto``: the top-level package (or single-file module) of every module
      the workers import (the trainable's module and ``RUNGFLOW_WORKER_MODULES``),
      except rungflow's own packages and packages installed in site-packages,
      which the nodes must have installed anyway;
    * a URI Ray understands (``s3://bucket/my_pkg.zip``, ``gs://...``);
    * a path (it contains ``/``, or ends in ``.py``, ``.whl`` or ``.zip``): a
      package directory, a single ``.py`` module or a wheel, made absolute;
    * a module name importable in this process: its top-level package.

    Args:
        setting: The value of ``RUNGFLOW_RAY_PY_MODULES``.
        modules: Modules the workers import (see
            :func:`flows.dask_runner.worker_modules`).

    Raises:
        RayRuntimeEnvError: an entry names nothing that can be shipped.
    """
    out: dict[str, None] = {}
    installed = _installed_dirs()
    for entry in (e.strip() for e in setting.split(",")):
        if not entry:
            continue
        if entry == AUTO:
            for name in modules:
                if name.partition(".")[0] in PACKAGES:
                    continue
                source = module_source(name)
                if not any(source.is_relative_to(d) for d in installed):
                    out[str(source)] = None
        elif "://" in entry:
            out[entry] = None
        elif "/" in entry or entry.endswith((".py", ".whl", ".zip")):
            path = Path(entry).expanduser().resolve()
            if not path.exists():
                raise RayRuntimeEnvError(f"RUNGFLOW_RAY_PY_MODULES: {entry!r} does not exist")
            out[str(path)] = None
        else:
            out[str(module_source(entry))] = None
    return list(out)


def parse_runtime_env(text: str) -> dict[str, Any]:
    """``RUNGFLOW_RAY_RUNTIME_ENV``: a JSON object, or nothing.

    Raises:
        RayRuntimeEnvError: not a JSON object, or it sets a key rungflow owns.
    """
    if not text.strip():
        return {}
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise RayRuntimeEnvError(f"RUNGFLOW_RAY_RUNTIME_ENV is not valid JSON ({exc})") from None
    if not isinstance(value, dict):
        raise RayRuntimeEnvError(
            "RUNGFLOW_RAY_RUNTIME_ENV must be a JSON object, e.g. "
            '{"working_dir": "/path/to/code"}'
        )
    for key in _OURS:
        if key in value:
            raise RayRuntimeEnvError(
                f"RUNGFLOW_RAY_RUNTIME_ENV sets {key!r}, which rungflow sets itself; "
                "list the modules workers must import in RUNGFLOW_WORKER_MODULES"
            )
    if not isinstance(value.get("env_vars", {}), dict):
        raise RayRuntimeEnvError("RUNGFLOW_RAY_RUNTIME_ENV: 'env_vars' must be an object")
    if not isinstance(value.get("py_modules", []), list):
        raise RayRuntimeEnvError("RUNGFLOW_RAY_RUNTIME_ENV: 'py_modules' must be a list")
    return value


def runtime_env(
    modules: Sequence[str],
    api_url: str,
    extra: Mapping[str, Any] | None = None,
    ship: Sequence[str] = (),
) -> dict[str, Any]:
    """The Ray job's runtime environment (see the module docs).

    Args:
        modules: Modules every worker imports in its setup hook.
        api_url: The flow run's Prefect API.
        extra: ``RUNGFLOW_RAY_RUNTIME_ENV`` (see :func:`parse_runtime_env`):
            its keys are passed to Ray as given, except that its ``env_vars``
            yield to rungflow's and its ``py_modules`` come before ``ship``.
        ship: ``py_modules`` from ``RUNGFLOW_RAY_PY_MODULES`` (see :func:`py_modules`).
    """
    env: dict[str, Any] = dict(extra or {})
    env["env_vars"] = {
        **env.get("env_vars", {}),
        "PREFECT_API_URL": api_url,
        MODULES_ENV: ",".join(modules),
        PATHS_ENV: os.pathsep.join(source_roots()),
    }
    shipped = list(dict.fromkeys([*env.get("py_modules", []), *ship]))
    if shipped:
        env["py_modules"] = shipped
    env["worker_process_setup_hook"] = f"{__name__}.setup_worker"
    return env


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


def make_ray_runner(
    spec: ExperimentSpec,
    modules: Sequence[str],
    address: str | None,
    ship: str = "",
    extra_env: str = "",
) -> Any:
    """A ``prefect_ray.RayTaskRunner`` for ``spec``.

    Args:
        spec: The experiment: ``max_concurrency`` sizes a local instance,
            ``num_cpus`` and ``num_gpus`` reserve resources per segment.
        modules: Modules every worker imports (see
            :func:`flows.dask_runner.worker_modules`).
        address: An existing cluster (``RUNGFLOW_RAY_ADDRESS``); None starts a
            local Ray instance for this run.
        ship: ``RUNGFLOW_RAY_PY_MODULES`` (see :func:`py_modules`).
        extra_env: ``RUNGFLOW_RAY_RUNTIME_ENV`` (see :func:`parse_runtime_env`).

    Raises:
        ImportError: ``prefect-ray`` is not installed (``pip install 'rungflow[ray]'``).
        RayRuntimeEnvError: ``ship`` or ``extra_env`` cannot be used.
    """
    # Checked before Ray starts, so a typo costs no cluster connection.
    extra = parse_runtime_env(extra_env)
    shipped = py_modules(ship, modules)
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
            self.init_kwargs["runtime_env"] = runtime_env(modules, api_url, extra, shipped)
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
