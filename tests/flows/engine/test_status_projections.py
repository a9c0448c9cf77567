"""``status`` (and ``export``) from projections and snapshots == from a full fold.

:func:`flows.engine.status.experiment_status` reads the runner's latest
snapshot plus the log's tail and the ``results`` projection; the log stays the
truth, so its JSON must equal :func:`experiment_status_from_log`'s, for every
scheduler, on every backend, with and without a snapshot, and on a store whose
projections were lost (rebuilt once).
"""

from __future__ import annotations

import json
from typing import Any

import pytest
import sqlalchemy as sa

from flows.cli import jsonout
from flows.cli.export import history_records, to_csv, to_json, view_records
from flows.engine.runner import ExperimentRunner
from flows.engine.status import (
    experiment_status,
    experiment_status_from_log,
    export_events,
    export_view,
    read_records,
)
from flows.spec import ExperimentSpec
from schedulers.events import (
    VERSION_KEY,
    Event,
    SegmentFailed,
    SegmentFinished,
    SegmentStarted,
    TrialCreated,
    TrialRetried,
    TrialStopped,
)
from schedulers.simulate import simulate
from storage import EventStore
from storage.models import EVENTS, RESULTS, TRIALS
from tests.schedulers.conftest import objective

NAME = "status-contract"
SPACE = {
    "lr": {"type": "float", "low": 1e-4, "high": 1.0, "log": True},
    "width": {"type": "int", "low": 8, "high": 64, "step": 8},
    "act": {"type": "categorical", "choices": ["relu", "tanh", "sigmoid"]},
}
#: scheduler -> (scheduler_args, budget): small runs that finish quickly.
CASES: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
    "random": ({"max_t": 9}, {"max_trials": 12}),
    "fifo": ({"max_t": 3, "points_per_dim": 2}, {}),
    "hyperband": ({"max_t": 9, "reduction_factor": 3}, {"max_trials": 30}),
    "asha": ({"max_t": 9, "grace_period": 1, "reduction_factor": 3}, {"max_trials": 20}),
    "pbt": ({"perturbation_interval": 2, "population_size": 6, "max_generations": 3}, {}),
    "dyhpo": (
        {"max_t": 9, "grace_period": 1, "reduction_factor": 3, "num_init_random": 4,
         "num_candidates": 16, "max_gp_points": 32},
        {"max_resource": 80},
    ),
}


def make_spec(scheduler: str) -> ExperimentSpec:
    args, budget = CASES[scheduler]
    return ExperimentSpec(
        name=NAME, trainable="synthetic", metric="loss", mode="min", space=SPACE,
        scheduler=scheduler, scheduler_args=args, budget=budget, max_concurrency=3, seed=3,
    )


def simulated_log(spec: ExperimentSpec) -> list[Event]:
    """A run with failures (every 7th segment fails) and its end."""
    count = {"n": 0}

    def fail(_: Any) -> bool:
        count["n"] += 1
        return count["n"] % 7 == 0

    result = simulate(spec.build_scheduler(), objective, max_concurrency=3, fail=fail, seed=2)
    return list(result.events)


def write(store: EventStore, spec: ExperimentSpec, events: list[Event], batch: int) -> int:
    store.create_experiment(NAME, spec.to_json())
    seq = 1
    for i in range(0, len(events), batch):
        seq = store.append(NAME, events[i : i + batch], expected_seq=seq)
    return seq


def both(store: EventStore) -> tuple[str, str]:
    """Both JSON texts (as printed: 0 and 0.0 differ there, not in a dict).

    Also checks that what ``rungflow status --json`` prints (the segments as
    the text SQL wrote, see flows.engine.rawjson) is byte for byte the
    encoding of the full fold's document.
    """
    full = experiment_status_from_log(store, NAME, checkpoints="/nonexistent")
    printed = jsonout.dumps(experiment_status(store, NAME, checkpoints="/nonexistent", raw=True))
    assert printed == jsonout.dumps(full)
    return (
        json.dumps(experiment_status(store, NAME, checkpoints="/nonexistent"), indent=2),
        json.dumps(full, indent=2),
    )


@pytest.mark.parametrize("scheduler", list(CASES))
@pytest.mark.parametrize("cut", [None, 0.3, 0.8, 1.0])
def test_status_from_projections_equals_full_fold(
    store: EventStore, scheduler: str, cut: float | None
) -> None:
    spec = make_spec(scheduler)
    events = simulated_log(spec)
    # Short appends take the per-event projection path, long ones the bulk one.
    head = len(events) if cut is None else int(len(events) * cut)
    write(store, spec, events[:head], batch=1 if scheduler in ("random", "pbt") else 50)
    if cut is not None:
        runner = ExperimentRunner(store, spec, "")
        runner.restore()
        runner.save_snapshot()
        seq = store.last_seq(NAME)
        for i in range(head, len(events), 5):
            seq = store.append(NAME, events[i : i + 5], expected_seq=seq)
    fast, full = both(store)
    assert fast == full
    status = json.loads(fast)
    exported = history_records(*export_events(store, NAME))
    assert json.dumps(exported) == json.dumps(history_records(read_records(store, NAME)))
    assert status["n_trials"] > 0 and status["trials"][0]["segments"]
    if scheduler in ("random", "asha"):
        assert status["counts"].get("failed")


@pytest.mark.parametrize("scheduler", ["asha", "pbt"])
def test_mid_run_status_with_open_segments(store: EventStore, scheduler: str) -> None:
    """A crashed run: open segments, no ExperimentFinished, snapshot behind the end."""
    spec = make_spec(scheduler)
    events = simulated_log(spec)
    cut = len(events) * 2 // 3
    write(store, spec, events[: cut // 2], batch=7)
    ExperimentRunner(store, spec, "").save_snapshot()  # an empty state at seq 0 is ignored
    runner = ExperimentRunner(store, spec, "")
    runner.restore()
    runner.save_snapshot()
    store.append(NAME, events[cut // 2 : cut], expected_seq=store.last_seq(NAME))
    fast, full = both(store)
    assert fast == full
    assert json.loads(fast)["state"] in ("running", "interrupted")


def test_lost_projections_are_rebuilt(store: EventStore) -> None:
    """Projections missing rows (an older rungflow, a hand edit) are detected and rebuilt."""
    spec = make_spec("asha")
    write(store, spec, simulated_log(spec), batch=40)
    expected = experiment_status_from_log(store, NAME, checkpoints="/nonexistent")
    text = json.dumps(expected)
    engine = sa.create_engine(store._url)  # behind the store's back
    with engine.begin() as conn:
        conn.execute(sa.delete(RESULTS).where(RESULTS.c.seq > 30))
        conn.execute(sa.delete(TRIALS).where(TRIALS.c.trial_id == "t0003"))
    engine.dispose()
    assert json.dumps(experiment_status(store, NAME, checkpoints="/nonexistent")) == text
    assert len(store.results(NAME)) == sum(len(t["segments"]) for t in expected["trials"])


def test_unfoldable_projection_falls_back_to_the_log(store: EventStore) -> None:
    """A log event the projections never keep (a stop of an unknown trial) is harmless."""
    spec = make_spec("random")
    seq = write(store, spec, simulated_log(spec)[:20], batch=20)
    store.append(NAME, [TrialStopped("t9999", "ghost")], expected_seq=seq)
    fast, full = both(store)
    assert fast == full


def assert_same_export(store: EventStore) -> list[dict[str, Any]]:
    """``rungflow export`` from the projections == from decoding and folding the log."""
    view = export_view(store, NAME)
    assert view is not None
    fast = view_records(view)
    full = history_records(read_records(store, NAME))
    assert to_json(fast) == to_json(full)
    assert to_csv(fast) == to_csv(full)
    return fast


@pytest.mark.parametrize("scheduler", list(CASES))
@pytest.mark.parametrize("cut", [0.4, 1.0])
def test_export_from_projections_equals_the_log(
    store: EventStore, scheduler: str, cut: float
) -> None:
    spec = make_spec(scheduler)
    events = simulated_log(spec)
    write(store, spec, events[: int(len(events) * cut)],
          batch=1 if scheduler in ("random", "pbt") else 50)
    records = assert_same_export(store)
    assert records and all(r["finished_at"] for r in records)


def test_export_and_status_keep_numbers_as_written(store: EventStore) -> None:
    """Integer ranges and metrics stay integers (``0``, not ``0.0``) in both views."""
    spec = make_spec("random")
    config = {"lr": 0.01, "width": 8, "act": "relu"}
    # Literals whose text a parse and re-encode must keep: exponents, -0.0,
    # long reprs, escaped unicode, nesting (rungflow status --json prints the
    # stored text of each segment, see flows.engine.rawjson).
    odd = {"resource": 3e-05, "loss": -0.0, "big": 1e+16, "long": 0.35000000000000003,
           "ünï ✓": {"n": [1, 2.0, None, True, "x\"y"]}}
    write(store, spec, [
        TrialCreated("t0000", config),
        SegmentStarted("t0000", 0, 1, config),
        SegmentFinished("t0000", 0, 1, ({"resource": 1, "loss": 2, "tags": ["a", 1.5]},),
                        {"resource": 1, "loss": 2, "tags": ["a", 1.5]}),
        SegmentStarted("t0000", 1, 2.5, {**config, "lr": 0.02}),
        SegmentFinished("t0000", 1, 2.5, ({"loss": 0.5}, {"resource": 2.5, "loss": 1.0}),
                        {"resource": 2.5, "loss": 1.0}),
        TrialCreated("t0001", config),
        SegmentStarted("t0001", 1e-05, 3e-05, config),
        SegmentFinished("t0001", 1e-05, 3e-05, (odd,), odd),
        TrialCreated("t0002", config),
    ], batch=1)
    fast, full = both(store)
    assert fast == full
    first = json.loads(fast)["trials"][0]["segments"][0]
    assert (first["start"], first["stop"], first["metrics"]["loss"]) == (0, 1, 2)
    assert type(first["start"]) is int and type(first["metrics"]["loss"]) is int
    records = assert_same_export(store)
    assert [(r["segment_start"], r["resource"], r["config"]["lr"]) for r in records] == [
        (0, 1, 0.01), (1, None, 0.02), (1, 2.5, 0.02), (1e-05, 3e-05, 0.01)]


@pytest.mark.parametrize("batch", [1, 10])
def test_export_after_a_retry(store: EventStore, batch: int) -> None:
    """A retried trial is paused, and the finished experiment reopened, in both reads."""
    spec = make_spec("random")
    events = simulated_log(spec)
    seq = write(store, spec, events, batch=batch)
    failed = next(e for e in events if isinstance(e, SegmentFailed) and e.final)
    assert_same_export(store)
    store.append(NAME, [TrialRetried(failed.trial_id, failed.start, failed.stop)],
                 expected_seq=seq)
    records = assert_same_export(store)
    assert {r["status"] for r in records if r["trial_id"] == failed.trial_id} <= {"paused"}


def test_export_falls_back_to_the_log(store: EventStore) -> None:
    """Projections missing a trial, or a payload naming its version: the log is decoded."""
    spec = make_spec("asha")
    write(store, spec, simulated_log(spec), batch=40)
    expected = to_json(history_records(read_records(store, NAME)))
    engine = sa.create_engine(store._url)  # behind the store's back
    ev = EVENTS.c
    with engine.begin() as conn:
        seq, payload = conn.execute(
            sa.select(ev.seq, ev.payload).where(
                ev.experiment_id == NAME, ev.kind == "SegmentFinished").limit(1)
        ).one()
        conn.execute(sa.update(EVENTS).where(ev.experiment_id == NAME, ev.seq == seq)
                     .values(payload={**payload, VERSION_KEY: 1}))
    assert export_view(store, NAME) is None  # an upcaster might have to read it
    assert to_json(history_records(*export_events(store, NAME))) == expected
    with engine.begin() as conn:
        conn.execute(sa.update(EVENTS).where(ev.experiment_id == NAME, ev.seq == seq)
                     .values(payload=payload))
        conn.execute(sa.delete(TRIALS).where(TRIALS.c.trial_id == "t0003"))
    engine.dispose()
    assert export_view(store, NAME) is None
    assert to_json(history_records(*export_events(store, NAME))) == expected


def _scheduler_state(scheduler: Any) -> tuple[object, ...]:
    return (scheduler.trials, scheduler.status_extras(), scheduler.ask(1),
            scheduler.resource_used, scheduler.best_trial())


@pytest.mark.parametrize("scheduler", ["asha", "pbt"])
def test_status_folds_the_snapshot_without_a_runner(store: EventStore, scheduler: str) -> None:
    """status's scheduler: the runner's snapshot (found from the stored spec
    alone) plus the tail, the state a runner's restore folds; a snapshot of
    another version is never used."""
    from flows.engine.status import _snapshot_scheduler

    spec = make_spec(scheduler)
    events = simulated_log(spec)
    head = len(events) // 2
    write(store, spec, events[:head], batch=10)
    assert _snapshot_scheduler(store, NAME) is None  # no snapshot yet
    runner = ExperimentRunner(store, spec, "")
    runner.restore()
    runner.save_snapshot()
    seq = store.append(NAME, events[head:], expected_seq=store.last_seq(NAME))
    folded = _snapshot_scheduler(store, NAME)
    assert folded is not None
    names, fast, fast_seq = folded
    runner.restore()
    assert fast_seq == runner.seq == seq
    assert _scheduler_state(fast) == _scheduler_state(runner.scheduler)
    assert (names.scheduler, names.metric, names.mode) == (spec.scheduler, "loss", "min")
    fast_text, full = both(store)
    assert fast_text == full
    # Another version's snapshot (older code, another spec): the runner's path.
    with store._engine.begin() as conn:
        conn.exec_driver_sql("UPDATE snapshots SET version = 'older'")
    assert _snapshot_scheduler(store, NAME) is None
    fast_text, full = both(store)
    assert fast_text == full
