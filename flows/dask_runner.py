"""Task runners that train segments in other processes: a process pool and Dask.

A worker process receives a :class:`~flows.engine.segment.SegmentJob` (names, numbers,
the checkpoint root) and looks the trainable up by *name*. That works without
setup for trainables installed through the ``rungflow.trainables`` entry-point
group. A trainable registered with ``@trainable`` exists only in processes that
imported its module, so workers import:

* the module that registered the experiment's trainable in the flow process,
  when it is importable (not ``__main__``): keep trainables in a module, not in
  the script that starts the flow;
* every module in ``RUNGFLOW_WORKER_MODULES`` (comma-separated).

The process pool imports them in its initializer; on Dask a worker plugin
imports them on every worker, including ones that join later. The modules must
be importable on the workers (installed, or on their ``PYTHONPATH``); with an
external cluster, ``dask worker --preload my.module`` does the same.

Module names come from the trainable registry and from settings, never from a
spec or a UI form (see :mod:`flows.settings`).
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import os
import signal
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from prefect.task_runners import ProcessPoolTaskRunner

from flows.spec import ExperimentSpec
from flows.trainable import get_trainable

__all__ = [
    "PACKAGES",
    "ImportModules",
    "WorkerTrainableError",
    "ensure_packages",
    "import_modules",
    "init_worker",
    "make_dask_runner",
    "make_process_runner",
    "source_roots",
    "worker_modules",
]

log = logging.getLogger("rungflow")


class WorkerTrainableError(ValueError):
    """The trainable cannot be found by worker processes."""


def worker_modules(spec: ExperimentSpec, extra: Iterable[str] = ()) -> tuple[str, ...]:
    """Modules a worker process must import to find ``spec.trainable``.

    Args:
        spec: The experiment.
        extra: Modules from ``RUNGFLOW_WORKER_MODULES``.

    Raises:
        WorkerTrainableError: the trainable was registered in ``__main__``,
            which a worker process cannot import.
    """
    modules = list(dict.fromkeys(m for m in extra if m))
    fn = get_trainable(spec.trainable)
    module = getattr(fn, "__module__", None)
    if module == "__main__" and spec.trainable not in _installed():
        raise WorkerTrainableError(
            f"trainable {spec.trainable!r} is registered in __main__, which worker processes "
            f"cannot import (task_runner is {spec.task_runner!r}); move it into a module and "
            "import that module, install it in the 'rungflow.trainables' entry-point group, "
            "or use task_runner: thread"
        )
    if module and module != "__main__" and module not in modules:
        modules.append(module)
    return tuple(modules)


def _installed() -> set[str]:
    from importlib.metadata import entry_points

    from flows.trainable import ENTRY_POINT_GROUP

    return {ep.name for ep in entry_points(group=ENTRY_POINT_GROUP)}


def import_modules(modules: Sequence[str]) -> None:
    """Import ``modules`` (a worker initializer: registers their trainables)."""
    for name in modules:
        importlib.import_module(name)


def init_worker(modules: Sequence[str], parent: int) -> None:
    """Process-pool worker initializer: import ``modules``, leave stops to the parent.

    A Ctrl-C or SIGTERM sent to the run's whole process group is the flow
    process's to handle (it marks the experiment interrupted and ends the
    workers); a worker that died of it first would be recorded as a failed
    segment. A worker whose parent died (even by SIGKILL) exits instead of
    training on as an orphan.
    """
    from flows.parent_watch import die_with_parent

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_IGN)
    # No prctl: the kernel ties PR_SET_PDEATHSIG to the parent *thread*, and
    # the pool spawns workers from its helper threads. A worker of
    # make_process_runner's pool watches from its first moment already (see
    # _ProcessRunner.__enter__); this covers a pool built any other way.
    die_with_parent(parent, use_prctl=False)
    import_modules(modules)


class _ProcessRunner(ProcessPoolTaskRunner):
    """Prefect's process pool that, on an interrupt, kills its workers instead
    of waiting for their segments, and marks their task runs Crashed.

    Workers get ``PREFECT_API_URL`` from the environment (and Prefect's settings
    with each task): they use the flow's API, never an ephemeral server of
    their own (see :mod:`flows.prefect_api`). They die with the flow process,
    even a SIGKILLed one, from the moment they boot, not only once Prefect
    is imported and the initializer runs (:class:`WatchedSpawnContext`).
    """

    def __enter__(self) -> Any:
        from flows.parent_watch import WatchedSpawnContext

        entered = super().__enter__()
        executor = self._executor
        if executor is not None and hasattr(executor, "_mp_context"):
            # Prefect builds the pool on the plain spawn context; its workers are
            # started on the first submits, by the context held here.
            executor._mp_context = WatchedSpawnContext()
        return entered

    def submit(self, *args: Any, **kwargs: Any) -> Any:
        from flows.interrupts import unfinished

        future = super().submit(*args, **kwargs)
        self.__dict__["_rungflow_futures"] = [
            *unfinished(self.__dict__.get("_rungflow_futures", [])), future
        ]
        return future

    def __exit__(self, exc_type: Any, exc_value: Any, traceback: Any) -> None:
        from flows.interrupts import crash_task_runs, is_interrupt

        if exc_value is None or not is_interrupt(exc_value):
            super().__exit__(exc_type, exc_value, traceback)
            return
        crash_task_runs(self.__dict__.get("_rungflow_futures", []))
        executor, self._executor = self._executor, None
        if executor is not None:
            workers = list(getattr(executor, "_processes", {}).values())
            executor.shutdown(wait=False, cancel_futures=True)
            for worker in workers:
                worker.kill()
        resolver, self._resolver_executor = self._resolver_executor, None
        if resolver is not None:
            resolver.shutdown(wait=False, cancel_futures=True)
        self._stop_message_forwarding()
        self._started = False


def make_process_runner(spec: ExperimentSpec, modules: Sequence[str]) -> ProcessPoolTaskRunner:
    """A process pool of ``max_concurrency`` workers that import ``modules`` first."""
    return _ProcessRunner(
        max_workers=spec.max_concurrency,
        initializer=init_worker,
        initargs=(tuple(modules), os.getpid()),
    )


#: rungflow's top-level packages. ``storage`` collides with the ``storage``
#: spill directory Dask creates in each worker's local directory, which Dask
#: also puts on ``sys.path``: see :class:`ImportModules`.
PACKAGES = ("flows", "schedulers", "storage", "examples")


def source_roots() -> tuple[str, ...]:
    """Directories that contain rungflow's packages in this process."""
    roots: dict[str, None] = {}
    for name in PACKAGES:
        module = sys.modules.get(name) or importlib.import_module(name)
        file = getattr(module, "__file__", None)
        if file:
            roots[str(Path(file).resolve().parent.parent)] = None
    return tuple(roots)


def ensure_packages(paths: Sequence[str]) -> None:
    """Make rungflow's packages importable as regular packages in this process.

    Dask puts a worker's local directory on ``sys.path``, and that directory
    holds a ``storage`` spill folder. With an editable install (found by a
    meta-path finder, after ``sys.path``), ``import storage`` then yields that
    empty namespace package. A regular package anywhere on ``sys.path`` wins
    over namespace portions, so appending the flow process's source roots
    fixes it (they are harmless where they do not exist, e.g. on another
    machine with a regular install); namespace imports made before are dropped.
    """
    for path in paths:
        if path not in sys.path:
            sys.path.append(path)
    for name in PACKAGES:
        module = sys.modules.get(name)
        if module is not None and getattr(module, "__file__", None) is None:
            del sys.modules[name]


try:  # the `dask` extra is optional
    from distributed.diagnostics.plugin import WorkerPlugin
except ImportError:  # pragma: no cover - exercised only without the extra
    WorkerPlugin = object  # type: ignore[misc,assignment]


class ImportModules(WorkerPlugin):
    """Dask worker plugin: fix package imports, then import modules, on every
    worker (present and future).

    Args:
        modules: Importable module names.
        paths: Source roots to make importable (see :func:`ensure_packages`).
    """

    name = "rungflow-import-modules"

    def __init__(
        self, modules: Sequence[str], paths: Sequence[str] = (), parent: int | None = None
    ) -> None:
        self.modules = tuple(modules)
        self.paths = tuple(paths)
        self.parent = parent

    def setup(self, worker: Any) -> None:
        if self.parent is not None:
            # A LocalCluster worker of this run: stops are the flow process's to
            # handle (see init_worker), and it dies with that process.
            from flows.parent_watch import die_with_parent

            with contextlib.suppress(ValueError):  # only possible in the main thread
                for sig in (signal.SIGINT, signal.SIGTERM):
                    signal.signal(sig, signal.SIG_IGN)
            if os.getpid() != self.parent:
                die_with_parent(self.parent, use_prctl=False)
        ensure_packages(self.paths)
        import_modules(self.modules)


def make_dask_runner(
    spec: ExperimentSpec, modules: Sequence[str], address: str | None
) -> Any:
    """A ``prefect_dask.DaskTaskRunner`` for ``spec``.

    Args:
        spec: The experiment; ``max_concurrency`` sizes a local cluster.
        modules: Modules every worker imports (see :func:`worker_modules`).
        address: Scheduler of an existing cluster (``RUNGFLOW_DASK_ADDRESS``);
            None starts a LocalCluster of ``max_concurrency`` worker processes
            with one thread each, so one segment runs per process and a
            trainable that holds the GIL does not slow its neighbours.

    Raises:
        ImportError: ``prefect-dask`` is not installed (``pip install 'rungflow[dask]'``).
    """
    try:
        from prefect_dask import DaskTaskRunner
    except ImportError as exc:
        raise ImportError(
            "task_runner 'dask' needs prefect-dask: pip install 'rungflow[dask]'"
        ) from exc

    local = not address

    class _Runner(DaskTaskRunner):
        """DaskTaskRunner that registers :class:`ImportModules` once connected,
        and on an interrupt marks the task runs it abandons Crashed.

        Workers use the flow's Prefect API: Prefect ships this process's
        settings (``PREFECT_API_URL`` included) with every task, and a local
        cluster's workers inherit the environment (see :mod:`flows.prefect_api`).
        """

        def __enter__(self) -> Any:
            super().__enter__()
            # Accessing .client connects (or starts the LocalCluster).
            self.client.register_plugin(
                ImportModules(modules, source_roots(), os.getpid() if local else None)
            )
            return self

        def submit(self, *args: Any, **kwargs: Any) -> Any:
            from flows.interrupts import unfinished

            future = super().submit(*args, **kwargs)
            self.__dict__["_rungflow_futures"] = [
                *unfinished(self.__dict__.get("_rungflow_futures", [])), future
            ]
            return future

        def __exit__(self, *exc_info: Any) -> None:
            from flows.interrupts import crash_task_runs, is_interrupt

            if exc_info[1] is not None and is_interrupt(exc_info[1]):
                crash_task_runs(self.__dict__.get("_rungflow_futures", []))
            super().__exit__(*exc_info)

    # Dask's INFO lines (cluster up, workers registered) drown the progress bar
    # like Prefect's per-task lines do; the same switch (--verbose) brings them back.
    if os.environ.get("PREFECT_LOGGING_LEVEL", "").upper() in ("WARNING", "ERROR", "CRITICAL"):
        logging.getLogger("distributed").setLevel(logging.WARNING)

    if address:
        return _Runner(address=address)
    return _Runner(
        cluster_kwargs={
            "n_workers": spec.max_concurrency,
            "threads_per_worker": 1,
            "processes": True,
            # No dashboard: it needs bokeh and a free port, and nobody looks
            # at a per-run throwaway cluster.
            "dashboard_address": None,
        }
    )
