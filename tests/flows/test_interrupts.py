"""Which stops leave an experiment resumable (interrupted) and which are Prefect's cancel.

The end-to-end signal drills are in test_lifecycle.py (slow); this checks the
rule they rely on without a process to kill.
"""

from __future__ import annotations

import logging
import signal
import threading
from pathlib import Path

import pytest
from prefect.exceptions import TerminationSignal

from flows import interrupts
from flows.interrupts import is_user_stop
from flows.tune import _ended_state


def test_outside_the_cli_a_sigterm_is_prefect_cancelling() -> None:
    # A worker or `serve` runs the flow: Prefect's SIGTERM means Cancel.
    assert not is_user_stop(TerminationSignal(signal.SIGTERM))
    assert _ended_state(TerminationSignal(signal.SIGTERM)) == "cancelled"


def test_under_the_cli_a_sigterm_is_the_users_stop(monkeypatch: pytest.MonkeyPatch) -> None:
    # Prefect raises TerminationSignal before the CLI's own handler has run,
    # so nothing but "the CLI owns the signals" tells the two apart.
    monkeypatch.setattr(interrupts._STATE, "owned", True)
    assert interrupts.interrupt_requested() is False
    assert is_user_stop(TerminationSignal(signal.SIGTERM))
    assert _ended_state(TerminationSignal(signal.SIGTERM)) == "interrupted"


def test_ctrl_c_and_errors() -> None:
    assert _ended_state(KeyboardInterrupt()) == "interrupted"
    assert _ended_state(RuntimeError("boom")) == "failed"


def test_a_hard_exits_work_is_bounded_when_the_interrupted_frame_holds_what_it_needs() -> None:
    # A signal handler may interrupt its thread inside a lock: the exit's
    # work (counting open segments, draining Prefect) must not wait for it.
    held = threading.Lock()
    with held:
        assert interrupts._within(0.1, held.acquire) is None
    assert interrupts._within(5, lambda: "done") == "done"


def test_after_a_stop_prefects_internal_loggers_say_nothing_either() -> None:
    from prefect._internal.concurrency import logger as internal

    said: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            said.append(record.getMessage())

    keep = Keep()
    internal.addHandler(keep)
    disabled = {
        name for name, lg in logging.root.manager.loggerDict.items()
        if isinstance(lg, logging.Logger) and lg.disabled
    }
    try:
        # Prefect's internal loggers ignore logging.disable: this is how
        # "Service 'EventsWorker' failed with N pending items" got through.
        logging.disable(logging.CRITICAL)
        internal.error("through logging.disable")
        interrupts.silence_logging()
        internal.error("after silence_logging")
    finally:
        internal.removeHandler(keep)
        logging.disable(logging.NOTSET)
        for name, lg in logging.root.manager.loggerDict.items():
            if isinstance(lg, logging.Logger) and name not in disabled:
                lg.disabled = False
    assert said == ["through logging.disable"]


@pytest.mark.parametrize(
    ("before", "after"),
    [("running", "interrupted"), ("finished", "finished"), ("failed", "failed")],
)
def test_a_hard_exit_stores_a_running_experiment_as_interrupted(
    rungflow_home: Path, before: str, after: str
) -> None:
    from flows.settings import get_settings
    from storage import EventStore

    store = EventStore(get_settings().resolved_database_url)
    try:
        store.create_experiment("life", {})
        store.set_state("life", before)
        line = interrupts._stop_line("life")
        assert {e.name: e.state for e in store.list_experiments()} == {"life": after}
    finally:
        store.close()
    assert line.startswith("interrupted: 0 segments will be re-run; resume with rungflow")
