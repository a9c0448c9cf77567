"""Clean stops: Ctrl-C or SIGTERM ends a run in seconds, resumable, in one line.

The event log is write-ahead, so a run may stop at any instant without losing
a segment (that is what the kill -9 suite checks); stopping *cleanly* is about
the rest: the experiment is marked ``interrupted`` (not ``failed``), the flow
run's last states reach Prefect, nothing but one line reaches the terminal,
and nobody waits for segments still training (they are run again on resume).

* :func:`stoppable_run` wraps a ``rungflow run``: it owns the Prefect API (see
  :mod:`flows.prefect_api`) and turns the first SIGINT or SIGTERM (to the pid
  or the whole process group) into :class:`Interrupted` in the main thread.
  The flow unwinds, the owned API is drained and stopped, one line is said,
  and the process exits 130 (SIGINT) or 143 (SIGTERM). If that takes longer
  than ``grace`` seconds, or a second signal arrives, it exits at once: the
  line, a drain of Prefect's event and log workers bounded to seconds, and
  out (further signals are ignored meanwhile).
* :class:`ThreadRunner` is Prefect's thread pool minus the wait for running
  segments on an interrupt.
* :func:`is_interrupt` tells an interrupt from a failure.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shlex
import signal
import sys
import threading
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from prefect.exceptions import TerminationSignal
from prefect.task_runners import ThreadPoolTaskRunner

__all__ = [
    "Interrupted",
    "ThreadRunner",
    "crash_task_runs",
    "interrupt_requested",
    "is_interrupt",
    "is_user_stop",
    "kill_children",
    "silence_logging",
    "stoppable_run",
    "unfinished",
]

_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Interrupted(KeyboardInterrupt):
    """A stop signal arrived; raised in the main thread.

    Args:
        signum: The signal (SIGINT or SIGTERM).
    """

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


@dataclass
class _State:
    signum: int | None = None
    #: Inside :func:`stoppable_run`: the CLI owns this process's stop signals.
    owned: bool = False


_STATE = _State()


def interrupt_requested() -> bool:
    """True once a stop signal arrived in this process (inside :func:`stoppable_run`)."""
    return _STATE.signum is not None


def is_user_stop(exc: BaseException) -> bool:
    """Whether ``exc`` is a stop the user asked for, not Prefect cancelling the run.

    Prefect's flow engine turns the first SIGTERM into a ``TerminationSignal``
    before the CLI's handler sees it (the CLI's runs when Prefect re-raises
    the signal on its way out), so :func:`interrupt_requested` is still False
    while the run unwinds. Under :func:`stoppable_run` the signal is the
    user's (Ctrl-C, ``kill PID``, a process manager): a run the CLI started
    is cancelled through Prefect only by its control channel, which marks its
    intent. Outside it (a worker or ``serve`` runs the flow), a SIGTERM is
    Prefect cancelling the flow run.
    """
    if isinstance(exc, TerminationSignal):
        return _STATE.owned and not _prefect_cancel_intent()
    return isinstance(exc, KeyboardInterrupt) or interrupt_requested()


def _prefect_cancel_intent() -> bool:
    """Whether Prefect's control channel is driving this teardown (a cancel)."""
    try:
        from prefect._internal import control_listener
    except ImportError:  # pragma: no cover - another Prefect layout
        return False
    get_intent = getattr(control_listener, "get_intent", None)
    return get_intent is not None and get_intent() is not None


def is_interrupt(exc: BaseException) -> bool:
    """Whether ``exc`` is a stop (Ctrl-C, SIGTERM), not a failure of the experiment."""
    return isinstance(exc, (KeyboardInterrupt, TerminationSignal)) or interrupt_requested()


def kill_children(pid: int | None = None) -> int:
    """SIGKILL every descendant of ``pid`` (this process by default); return how many.

    Used when this process is about to leave without waiting: process-pool and
    Dask workers still training would otherwise train on as orphans.
    """
    root = os.getpid() if pid is None else pid
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc") if os.path.isdir("/proc") else []:
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            parents[int(entry)] = int(fields[1])
        except (OSError, IndexError, ValueError):
            continue
    found: list[int] = []
    frontier = [root]
    while frontier:
        p = frontier.pop()
        kids = [c for c, pp in parents.items() if pp == p]
        found += kids
        frontier += kids
    for child in found:
        with contextlib.suppress(OSError):
            os.kill(child, signal.SIGKILL)
    return len(found)


def _done(future: Any) -> bool:
    """Whether a Prefect future's underlying (thread/process/Dask) future is done."""
    wrapped = getattr(future, "wrapped_future", None)
    return bool(wrapped.done()) if wrapped is not None else False


def unfinished(futures: Iterable[Any]) -> list[Any]:
    """The futures not done yet (done ones hold their results: drop them)."""
    return [f for f in futures if not _done(f)]


def crash_task_runs(futures: Iterable[Any], message: str = "interrupted") -> int:
    """Mark the task runs of unfinished ``futures`` Crashed in Prefect; return how many.

    Their threads or processes are abandoned on an interrupt, so their own
    engines never report a final state: without this they stay Running in
    the UI forever. Best effort: the API may not have recorded a run yet.
    """
    from prefect.client.orchestration import get_client
    from prefect.states import Crashed

    ids = [f.task_run_id for f in futures if not _done(f)]
    marked = 0
    if not ids:
        return 0
    with contextlib.suppress(Exception), get_client(sync_client=True) as client:
        for task_run_id in ids:
            with contextlib.suppress(Exception):
                client.set_task_run_state(task_run_id, Crashed(message=message), force=True)
                marked += 1
    return marked


class ThreadRunner(ThreadPoolTaskRunner):
    """Prefect's ``ThreadPoolTaskRunner`` that, on an interrupt, does not wait
    for running segments (their threads are abandoned; the process exits) and
    marks their task runs Crashed."""

    def submit(self, *args: Any, **kwargs: Any) -> Any:
        future = super().submit(*args, **kwargs)
        # Only the unfinished ones matter (and done ones hold their results).
        live = unfinished(self.__dict__.get("_rungflow_futures", []))
        self.__dict__["_rungflow_futures"] = [*live, future]
        return future

    def __exit__(self, exc_type: Any, exc_value: Any, traceback: Any) -> None:
        if exc_value is None or not is_interrupt(exc_value):
            super().__exit__(exc_type, exc_value, traceback)
            return
        crash_task_runs(self.__dict__.get("_rungflow_futures", []))
        for event in self._cancel_events.values():
            event.set()
        executor: ThreadPoolExecutor | None = self._executor
        if executor is not None:
            executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None
        self._started = False


#: Seconds a hard exit gives Prefect's event and log workers to send what they
#: hold (task-run states travel as events) while the owned API still runs.
_DRAIN_WAIT = 2.0
#: Seconds a hard exit waits for the stop to be stored and the
#: ``interrupted:`` line's segment count.
_LINE_WAIT = 2.0


def _within(timeout: float, fn: Callable[[], Any]) -> Any:
    """``fn()`` in a helper thread, or None if it raised or took longer than ``timeout``.

    A hard exit runs in a signal handler, which may have interrupted this
    thread anywhere, including inside a lock the work needs (Prefect's
    service registry, a database transaction): done here, that work would
    wait for the interrupted frame forever. In a helper thread it is bounded.
    """
    result: list[Any] = []

    def run() -> None:
        with contextlib.suppress(Exception):
            result.append(fn())

    helper = threading.Thread(target=run, name="rungflow-exit-helper", daemon=True)
    helper.start()
    helper.join(timeout)
    return result[0] if result else None


def _drain_prefect() -> None:
    from flows.prefect_api import drain_prefect_workers

    drain_prefect_workers(timeout=_DRAIN_WAIT)


def _exit_now(code: int) -> None:
    """Leave without joining threads still training (the log is write-ahead).

    Prefect's event and log workers get a bounded drain first, so the states
    they hold reach the API before it goes with the children; whatever they
    would say about failing after that (``EventsWorker failed with N pending
    items``) is not the user's business: logging is off from here on.
    """
    silence_logging()
    _within(_DRAIN_WAIT, _drain_prefect)
    kill_children()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(code)


def silence_logging() -> None:
    """Nothing but rungflow's own line reaches the terminal from here on.

    ``logging.disable`` silences every logger but Prefect's internal ones:
    ``prefect._internal.*`` are ``SafeLogger``s whose ``isEnabledFor`` looks
    only at ``PREFECT_LOGGING_INTERNAL_LEVEL``. They are the ones that say
    ``Service 'EventsWorker' failed with N pending items`` when a stopped
    run's API goes before its event worker is done; a disabled logger drops
    its records whatever ``isEnabledFor`` said.
    """
    logging.disable(logging.CRITICAL)
    for name, logger in list(logging.root.manager.loggerDict.items()):
        if isinstance(logger, logging.Logger) and (
            name == "prefect._internal" or name.startswith("prefect._internal.")
        ):
            logger.disabled = True


def _ignore_stop_signals() -> None:
    """Ignore further SIGINT/SIGTERM (main thread only): an exit is under way."""
    if threading.current_thread() is threading.main_thread():
        for s in _SIGNALS:
            signal.signal(s, signal.SIG_IGN)


def resume_command() -> str:
    """The command line that started this process, as ``rungflow ...``."""
    return shlex.join(["rungflow", *sys.argv[1:]])


def _open_segments(experiment: str) -> int | None:
    """Segments started and not finished: what a resume runs again."""
    try:
        from flows.engine.runner import unfinished_segments
        from flows.settings import get_settings
        from storage import EventStore

        store = EventStore(get_settings().resolved_database_url)
        try:
            if not store.has_experiment(experiment):
                return 0
            return len(unfinished_segments([r.event for r in store.read(experiment)]))
        finally:
            store.close()
    except Exception:
        return None


def _record_stop(experiment: str) -> None:
    """Store ``experiment`` as interrupted if it is still stored as running.

    The flow records a stop as it unwinds (:func:`flows.tune.run_experiment`);
    a hard exit (a second Ctrl-C a moment after the first) may leave before
    it got there, and the experiment must not read ``running`` afterwards. A
    state the run itself reached meanwhile (finished, failed) is kept.
    """
    from flows.settings import get_settings
    from storage import EventStore

    store = EventStore(get_settings().resolved_database_url)
    try:
        states = {e.name: e.state for e in store.list_experiments()}
        if states.get(experiment) == "running":
            store.set_state(experiment, "interrupted")
    finally:
        store.close()


def _stop_line(experiment: str) -> str:
    """Record the stop (see :func:`_record_stop`), then the line to say."""
    with contextlib.suppress(Exception):
        _record_stop(experiment)
    return interrupted_line(experiment)


def interrupted_line(experiment: str | None) -> str:
    """``interrupted: N segments will be re-run; resume with rungflow run ...``.

    With ``experiment`` None (its log could not be read in time), the count is
    left out.
    """
    n = None if experiment is None else _open_segments(experiment)
    what = "unfinished segments" if n is None else f"{n} segment{'s' if n != 1 else ''}"
    return f"interrupted: {what} will be re-run; resume with {resume_command()}"


@contextlib.contextmanager
def _signals(grace: float, on_hard_exit: Callable[[int], None]) -> Iterator[None]:
    if threading.current_thread() is not threading.main_thread():
        yield  # signals can only be handled in the main thread
        return
    hard = threading.Event()

    def handler(signum: int, frame: Any) -> None:
        if _STATE.signum is not None:
            on_hard_exit(_STATE.signum)  # a second signal: leave at once
            return
        _STATE.signum = signum
        # Prefect reports the crash as an ERROR log line; the user asked for the
        # stop and gets one line of ours instead.
        silence_logging()

        def deadline() -> None:
            if not hard.wait(grace):
                on_hard_exit(signum)

        threading.Thread(target=deadline, name="rungflow-stop-deadline", daemon=True).start()
        raise Interrupted(signum)

    previous = {s: signal.signal(s, handler) for s in _SIGNALS}
    try:
        yield
    finally:
        hard.set()
        for s, h in previous.items():
            signal.signal(s, h)


class _QuietCrash(logging.Filter):
    """Drops Prefect's ``Crash detected! ... aborted by a ... signal`` ERROR line:
    Prefect's own SIGTERM handler logs it before ours runs, and the user, who
    sent the signal, gets our one line instead (the flow run's state in
    Prefect still says Crashed, with that message)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = str(record.msg)
        return not (message.startswith("Crash detected!") and "signal" in message)


@contextlib.contextmanager
def stoppable_run(
    experiment: str, say: Callable[[str], None], grace: float = 8.0
) -> Iterator[str | None]:
    """Run a flow with an owned Prefect API and clean stops (see the module doc).

    Args:
        experiment: The experiment's name, for the ``interrupted:`` line.
        say: Prints one line to the user (stderr).
        grace: Seconds an interrupted run has to unwind before it exits anyway.

    Yields:
        The owned API URL, or None when ``PREFECT_API_URL`` is set.
    """
    from flows.prefect_api import owned_prefect_api

    exiting = threading.Lock()
    this_thread = threading.local()

    def report_and_exit(signum: int) -> None:
        # A third Ctrl-C (or the grace deadline) must not cut the line short:
        # the first caller says it and exits; a later one waits for that.
        _ignore_stop_signals()
        if getattr(this_thread, "exiting", False):
            return  # a signal already pending ran inside this thread's own exit
        this_thread.exiting = True
        if not exiting.acquire(timeout=2 * (_LINE_WAIT + _DRAIN_WAIT)):
            _exit_now(128 + signum)  # the first caller is stuck: leave anyway
        line = _within(_LINE_WAIT, lambda: _stop_line(experiment))
        with contextlib.suppress(Exception):
            say(line or interrupted_line(None))
        _exit_now(128 + signum)

    _STATE.signum = None
    _STATE.owned = True
    quiet = _QuietCrash()
    flow_runs = logging.getLogger("prefect.flow_runs")
    flow_runs.addFilter(quiet)
    try:
        with _signals(grace, report_and_exit):
            try:
                with owned_prefect_api() as url:
                    try:
                        yield url
                    except BaseException as exc:
                        # A stop Prefect's own SIGTERM handler turned into an
                        # exception: quiet before the API is drained and stopped.
                        if is_user_stop(exc):
                            silence_logging()
                        raise
            except BaseException as exc:
                if _STATE.signum is None:
                    if isinstance(exc, TerminationSignal):
                        _STATE.signum = exc.signal
                    elif isinstance(exc, KeyboardInterrupt):
                        _STATE.signum = signal.SIGINT
                    else:
                        raise
        if _STATE.signum is not None:
            report_and_exit(_STATE.signum)
    finally:
        flow_runs.removeFilter(quiet)
        _STATE.signum = None
        _STATE.owned = False
