"""Warm start from Optuna studies and earlier experiments, on real SQLite stores."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import optuna
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from typer.testing import CliRunner

import examples.objectives  # noqa: F401 - registers the "synthetic" trainable
from examples.synthetic import SPACE, objective
from flows.engine.status import experiment_status
from flows.interop.optuna_export import export_to_optuna
from flows.interop.warm_start import (
    WarmStartError,
    parse_source,
    warm_start,
)
from flows.spec import ExperimentSpec, load_spec
from schedulers import SegmentFinished, TrialCreated
from schedulers.events import ImportCompleted, ObservationImported
from schedulers.simulate import simulate
from storage import CheckpointStore, EventStore

optuna.logging.set_verbosity(optuna.logging.WARNING)


def spec(name: str, **changes: Any) -> ExperimentSpec:
    data: dict[str, Any] = {
        "name": name,
        "trainable": "synthetic",
        "metric": "loss",
        "space": SPACE.to_json(),
        "scheduler": "asha",
        "scheduler_args": {"max_t": 9, "grace_period": 1, "reduction_factor": 3},
        "budget": {"max_trials": 8},
        "seed": 1,
    }
    data.update(changes)
    return load_spec(data)


@pytest.fixture
def store(tmp_path: Path) -> Any:
    s = EventStore(f"sqlite:///{tmp_path / 'rungflow.db'}")
    yield s
    s.close()


def simulated_experiment(store: EventStore, name: str) -> ExperimentSpec:
    """An ASHA experiment run by the simulator and written to ``store``."""
    s = spec(name)
    result = simulate(s.build_scheduler(), objective, max_concurrency=2)
    store.create_experiment(name, s.to_json())
    store.append(name, result.events, expected_seq=1)
    return s


def imported(store: EventStore, name: str) -> list[ObservationImported]:
    return [r.event for r in store.read(name) if isinstance(r.event, ObservationImported)]


def curves_of(store: EventStore, name: str) -> dict[str, tuple[dict[str, Any], list[Any]]]:
    """Per trial of a finished experiment: its config and [(resource, loss)] reports."""
    out: dict[str, tuple[dict[str, Any], list[Any]]] = {}
    for record in store.read(name):
        e = record.event
        if isinstance(e, TrialCreated):
            out[e.trial_id] = (dict(e.config), [])
        elif isinstance(e, SegmentFinished):
            out[e.trial_id][1].extend((r["resource"], r["loss"]) for r in e.reports)
    return out


def as_curves(observations: list[ObservationImported]) -> dict[str, Any]:
    return {
        str(o.source_trial): (dict(o.config), [(r["resource"], r["loss"]) for r in o.reports])
        for o in observations
    }


def test_round_trip_through_an_optuna_export_gives_the_same_observations(
    store: EventStore, tmp_path: Path
) -> None:
    simulated_experiment(store, "old")
    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    export_to_optuna(store, "old", url, "old-study")

    report = warm_start(store, spec("new"), parse_source(f"optuna:{url}:old-study"))
    warm_start(store, spec("new-direct"), parse_source("experiment:old"))

    source = curves_of(store, "old")
    assert report.imported == len(source) and not report.skipped
    via_optuna = imported(store, "new")
    numbers = {o.source_trial for o in via_optuna}
    assert numbers == {str(i) for i in range(len(source))}  # optuna numbers, creation order
    # Optuna trial i is rungflow trial i: same config, same loss at every resource.
    by_id = {f"t{int(o.source_trial or 0):04d}": o for o in via_optuna}
    for tid, (config, points) in source.items():
        o = by_id[tid]
        assert dict(o.config) == config
        assert [(r["resource"], r["loss"]) for r in o.reports] == points
    # The direct import from the experiment sees exactly the same data.
    direct = imported(store, "new-direct")
    assert as_curves(direct) == {tid: source[tid] for tid in source}
    assert all(o.source == "experiment:old" for o in direct)


def test_incompatible_params_are_skipped_with_counts(store: EventStore, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'hand.db'}"
    study = optuna.create_study(study_name="hand", storage=url, direction="minimize")
    dists = {
        "lr": FloatDistribution(1e-5, 10.0, log=True),
        "width": IntDistribution(1, 512, log=True),
        "dropout": FloatDistribution(0.0, 0.6, step=0.05),
        "act": CategoricalDistribution(["relu", "tanh", "sigmoid", "gelu"]),
        "batch": IntDistribution(16, 256),
    }
    good = {"lr": 1e-3, "width": 64, "dropout": 0.2, "act": "relu", "batch": 32}

    def add(state: Any = optuna.trial.TrialState.COMPLETE, **params: Any) -> None:
        p = {**good, **params}
        study.add_trial(optuna.trial.create_trial(
            params=p, distributions={k: dists[k] for k in p}, state=state,
            value=None if state != optuna.trial.TrialState.COMPLETE else 0.5,
            intermediate_values={1: 0.9, 3: 0.7, 9: 0.5},
        ))

    add()
    add(lr=5.0)  # outside this space's lr
    add(act="gelu")  # not one of this space's choices
    add(width=300)
    add(state=optuna.trial.TrialState.FAIL)
    study.add_trial(optuna.trial.create_trial(  # no dropout at all
        params={"lr": 1e-3, "width": 64, "act": "relu"},
        distributions={k: dists[k] for k in ("lr", "width", "act")}, value=0.4,
    ))

    report = warm_start(store, spec("skips"), parse_source(f"optuna:{url}:hand"))
    assert report.imported == 1
    assert report.skipped == {
        "param 'act' outside the space": 1,
        "param 'dropout' missing": 1,
        "param 'lr' outside the space": 1,
        "param 'width' outside the space": 1,
        "state FAIL": 1,
    }
    assert report.dropped_params == {"batch": 1}  # kept, without the extra param
    assert "skipped 5 source trial(s)" in report.describe()
    (obs,) = imported(store, "skips")
    assert dict(obs.config) == {k: v for k, v in good.items() if k != "batch"}
    assert [r["resource"] for r in obs.reports] == [1.0, 3.0, 9.0]
    done = [r.event for r in store.read("skips") if isinstance(r.event, ImportCompleted)]
    assert done[0].skipped == report.skipped

    status = experiment_status(store, "skips")
    assert status["imported"]["observations"] == 1
    (src,) = status["imported"]["sources"]
    assert src["source"] == f"optuna:{url}:hand" and src["skipped"] == report.skipped
    assert status["n_trials"] == 0 and status["resource_used"] == 0


def test_import_happens_once_and_never_touches_the_budget(store: EventStore) -> None:
    simulated_experiment(store, "old")
    new = spec("again")
    first = warm_start(store, new, parse_source("experiment:old"))
    n_events = store.last_seq("again")
    second = warm_start(store, new, parse_source("experiment:old"))
    assert second.already and second.imported == first.imported
    assert store.last_seq("again") == n_events  # nothing appended the second time

    scheduler = new.build_scheduler()
    cold = new.build_scheduler()
    for record in store.read("again"):
        scheduler.tell(record.event)
    assert len(scheduler.imported) == first.imported > 0
    assert scheduler.trials == {} and scheduler.resource_used == 0.0
    assert scheduler.new_trial_id() == "t0000"
    # Warm or cold, the experiment creates exactly max_trials trials.
    assert simulate(scheduler, objective, max_concurrency=2).done is not None
    assert simulate(cold, objective, max_concurrency=2).done is not None
    assert len(scheduler.trials) == len(cold.trials) == new.budget.max_trials


def test_warm_start_is_refused_after_the_first_trial_or_for_another_spec(
    store: EventStore,
) -> None:
    simulated_experiment(store, "old")
    simulated_experiment(store, "busy")
    with pytest.raises(WarmStartError, match="before the first trial"):
        warm_start(store, spec("busy"), parse_source("experiment:old"))
    with pytest.raises(WarmStartError, match="different spec"):
        warm_start(store, spec("busy", seed=9), parse_source("experiment:old"))
    with pytest.raises(WarmStartError, match="itself"):
        warm_start(store, spec("old2"), parse_source("experiment:old2"))
    with pytest.raises(WarmStartError, match="not found"):
        warm_start(store, spec("x"), parse_source("experiment:nope"))


def test_optuna_study_with_another_direction_or_metric_is_refused(
    store: EventStore, tmp_path: Path
) -> None:
    url = f"sqlite:///{tmp_path / 'o.db'}"
    optuna.create_study(study_name="acc", storage=url, direction="maximize")
    with pytest.raises(WarmStartError, match="maximises"):
        warm_start(store, spec("dir"), parse_source(f"optuna:{url}:acc"))
    other = optuna.create_study(study_name="err", storage=url)
    other.set_user_attr("rungflow_metric", "error")
    with pytest.raises(WarmStartError, match="'error'"):
        warm_start(store, spec("metric"), parse_source(f"optuna:{url}:err"))
    with pytest.raises(WarmStartError, match="not found"):
        warm_start(store, spec("missing"), parse_source(f"optuna:{url}:nope"))


@pytest.mark.parametrize(
    "text",
    [
        "optuna:redis://localhost:6379:study",
        "optuna:sqlite://:study",
        "optuna:sqlite:///x.db?plugin=evil:study",
        "optuna:postgresql+psycopg://u:pw@h/db?module=os:study",
        "optuna:sqlite:///x.db",
        "experiment:../etc",
        "experiment:ok@mysql://u@h/db",
        "mlflow:run",
    ],
)
def test_source_urls_are_checked(text: str) -> None:
    with pytest.raises(WarmStartError) as info:
        parse_source(text)
    assert "pw" not in str(info.value)


def test_labels_and_reprs_never_show_passwords() -> None:
    src = parse_source("optuna:postgresql+psycopg://me:s3cret@db.example/optuna:study")
    assert "s3cret" not in src.label and "s3cret" not in repr(src)
    assert src.label == "optuna:postgresql+psycopg://me:***@db.example/optuna:study"
    other = parse_source("experiment:old", experiment_db="postgresql+psycopg://me:s3cret@h/x")
    assert other.label == "experiment:old@postgresql+psycopg://me:***@h/x"


def test_with_checkpoints_copies_blobs_into_the_new_experiment(
    store: EventStore, tmp_path: Path
) -> None:
    blobs = CheckpointStore(str(tmp_path / "ckpt"))
    s = spec("src")
    store.create_experiment("src", s.to_json())
    config = {"lr": 1e-3, "width": 64, "dropout": 0.2, "act": "relu"}
    ref = blobs.put("src", "t0000", "0-1", b"weights", 1.0)
    from schedulers import SegmentStarted

    report = {"resource": 1.0, "loss": 0.5}
    store.append("src", [
        TrialCreated("t0000", config),
        SegmentStarted("t0000", 0, 1, config),
        SegmentFinished("t0000", 0, 1, (report,), report, checkpoint=ref),
    ], expected_seq=1)
    out = warm_start(store, spec("dst"), parse_source("experiment:src"),
                     with_checkpoints=True, checkpoints=str(tmp_path / "ckpt"))
    assert out.checkpoints_copied == 1
    (obs,) = imported(store, "dst")
    assert obs.checkpoint is not None and obs.checkpoint.key == "dst/i0000/0-1.ckpt"
    assert blobs.get(obs.checkpoint) == b"weights"
    # Without the flag nothing is copied.
    warm_start(store, spec("dst2"), parse_source("experiment:src"))
    assert imported(store, "dst2")[0].checkpoint is None


@pytest.mark.usefixtures("prefect_harness")
def test_cli_run_with_warm_start_imports_once_then_runs(
    rungflow_home: Path, tmp_path: Path
) -> None:
    from flows.cli import app

    home_store = EventStore(f"sqlite:///{rungflow_home / 'rungflow.db'}")
    simulated_experiment(home_store, "old")
    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    export_to_optuna(home_store, "old", url, "old")
    path = tmp_path / "spec.json"
    data = spec("warm", budget={"max_trials": 3}).to_json()
    path.write_text(json.dumps(data))

    runner = CliRunner()
    args = ["run", str(path), "--warm-start", f"optuna:{url}:old", "--json"]
    first = runner.invoke(app, args)
    assert first.exit_code == 0, first.output
    assert "observation(s) imported" in first.output
    # The experiment is finished: a second run prints its results without
    # Prefect and without touching the store, so nothing is imported twice.
    again = runner.invoke(app, args)
    assert again.exit_code == 0, again.output
    assert "observation(s) imported" not in again.output

    status = experiment_status(home_store, "warm")
    assert status["state"] == "finished"
    assert status["n_trials"] == 3  # priors are not trials and took no trial budget
    assert status["imported"]["observations"] == 8
    assert len(status["imported"]["sources"]) == 1
    home_store.close()
