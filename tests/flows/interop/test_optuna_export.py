"""Optuna export: a real flow run and hand-built logs, read back by optuna itself."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path
from typing import Any

import optuna
import pytest
import typer
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState
from typer.testing import CliRunner

from flows.cli.optuna import register
from flows.engine.status import experiment_status
from flows.interop.optuna_export import StudyExistsError, export_to_optuna, step_scale
from flows.spec import load_spec
from schedulers import (
    CheckpointRef,
    SegmentFailed,
    SegmentFinished,
    SegmentStarted,
    TrialCreated,
    TrialPerturbed,
    TrialRetried,
    TrialStopped,
)
from storage import EventStore, ExperimentNotFoundError

optuna.logging.set_verbosity(optuna.logging.WARNING)


def _optuna_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'optuna.db'}"


@pytest.mark.usefixtures("prefect_harness")
def test_real_hyperband_run_round_trips(rungflow_home: Path, tmp_path: Path) -> None:
    from flows.tune import tune

    spec = load_spec(
        {
            "name": "export-hb",
            "trainable": "synthetic",
            "metric": "loss",
            "space": {
                "lr": {"type": "float", "low": 1e-4, "high": 1.0, "log": True},
                "width": {"type": "int", "low": 16, "high": 256, "log": True},
                "dropout": {"type": "float", "low": 0.0, "high": 0.6, "step": 0.05},
                "act": {"type": "categorical", "choices": ["relu", "tanh"]},
            },
            "scheduler": "hyperband",
            "scheduler_args": {"max_t": 9, "reduction_factor": 3},
            "budget": {"max_trials": 9},
            "max_concurrency": 2,
        }
    )
    summary = tune(spec)
    assert summary["state"] == "finished"
    store = EventStore(f"sqlite:///{rungflow_home / 'rungflow.db'}")
    try:
        status = experiment_status(store, "export-hb")
        name = export_to_optuna(store, "export-hb", _optuna_url(tmp_path))
    finally:
        store.close()
    assert name == "export-hb"

    study = optuna.load_study(study_name=name, storage=_optuna_url(tmp_path))
    assert study.direction == optuna.study.StudyDirection.MINIMIZE
    assert study.user_attrs["rungflow_step_scale"] == 1
    assert len(study.trials) == len(status["trials"]) == 9
    by_id = {t.user_attrs["rungflow_trial_id"]: t for t in study.trials}
    states = {s: 0 for s in TrialState}
    for row in status["trials"]:
        trial = by_id[row["trial_id"]]
        states[trial.state] += 1
        assert trial.params == row["config"]
        assert isinstance(trial.distributions["lr"], FloatDistribution)
        assert isinstance(trial.distributions["width"], IntDistribution)
        assert isinstance(trial.distributions["act"], CategoricalDistribution)
        last = row["segments"][-1]
        assert trial.value == pytest.approx(last["metrics"]["loss"])
        assert trial.user_attrs["rungflow_resource"] == row["resource"]
        # One intermediate value per reported epoch, exactly the curve's values.
        from examples.synthetic import synthetic_curve

        assert sorted(trial.intermediate_values) == list(range(1, int(row["resource"]) + 1))
        for step, value in trial.intermediate_values.items():
            assert value == pytest.approx(synthetic_curve(row["config"], step))
        expected = TrialState.COMPLETE if row["resource"] == 9 else TrialState.PRUNED
        assert trial.state == expected
    # HyperBand with R=9, eta=3 culls most trials early and trains some to 9.
    assert states[TrialState.COMPLETE] >= 1
    assert states[TrialState.PRUNED] >= 1
    assert study.best_trial.user_attrs["rungflow_trial_id"] == status["best"]["trial_id"]

    # Optuna's own analysis tools accept the exported study.
    importances = optuna.importance.get_param_importances(study)
    assert set(importances) == {"lr", "width", "dropout", "act"}
    matplotlib = pytest.importorskip("matplotlib")
    matplotlib.use("Agg")
    from optuna.visualization.matplotlib import plot_intermediate_values

    with pytest.warns(optuna.exceptions.ExperimentalWarning):
        assert plot_intermediate_values(study) is not None
    # trials_dataframe needs pandas, which rungflow does not depend on.
    if importlib.util.find_spec("pandas") is not None:
        frame = study.trials_dataframe()
        assert len(frame) == 9 and "params_lr" in frame.columns


def _hand_built_store(url: str) -> EventStore:
    """A maximised PBT-like experiment with float resources, a failure and a perturbation."""
    spec = load_spec(
        {
            "name": "hand",
            "trainable": "noop",
            "metric": "acc",
            "mode": "max",
            "space": {
                "lr": {"type": "float", "low": 0.001, "high": 0.1, "log": True},
                "momentum": {"type": "float", "low": 0.0, "high": 0.9, "step": 0.1},
            },
            "scheduler": "pbt",
            "scheduler_args": {"perturbation_interval": 0.5, "max_t": 1.5},
        }
    )
    store = EventStore(url)
    store.create_experiment("hand", spec.to_json())
    ck = CheckpointRef("hand/t0000/0-0.5", 1, "x", "t0000", 0.5)
    a = {"lr": 0.01, "momentum": 0.5}
    b = {"lr": 0.05, "momentum": 0.2}
    c = {"lr": 0.02, "momentum": 0.9}
    new_b = {"lr": 0.012, "momentum": 0.5}

    def seg(tid: str, start: float, stop: float, values: list[tuple[float, float]]) -> Any:
        reports = tuple({"resource": r, "acc": v} for r, v in values)
        return SegmentFinished(tid, start, stop, reports=reports, metrics=reports[-1])

    events = [
        TrialCreated("t0000", a),
        TrialCreated("t0001", b),
        TrialCreated("t0002", c),
        SegmentStarted("t0000", 0.0, 0.5, a),
        SegmentStarted("t0001", 0.0, 0.5, b),
        seg("t0000", 0.0, 0.5, [(0.25, 0.5), (0.5, 0.6)]),
        seg("t0001", 0.0, 0.5, [(0.25, 0.3), (0.5, 0.4)]),
        SegmentStarted("t0002", 0.0, 0.5, c),
        SegmentFailed("t0002", 0.0, 0.5, "ValueError: boom", final=True),
        TrialPerturbed("t0001", "t0000", 0.5, b, new_b, ck),
        SegmentStarted("t0000", 0.5, 1.5, a),
        SegmentStarted("t0001", 0.5, 1.0, new_b),
        seg("t0000", 0.5, 1.5, [(1.0, 0.7), (1.5, 0.75)]),
        seg("t0001", 0.5, 1.0, [(0.75, 0.62), (1.0, 0.71)]),
        TrialStopped("t0000", "max_t reached"),
    ]
    store.append("hand", events, expected_seq=1)
    return store


def test_hand_built_log_maps_states_steps_and_direction(tmp_path: Path) -> None:
    store = _hand_built_store(f"sqlite:///{tmp_path / 'rungflow.db'}")
    try:
        export_to_optuna(store, "hand", _optuna_url(tmp_path), "hand-study")
    finally:
        store.close()
    study = optuna.load_study(study_name="hand-study", storage=_optuna_url(tmp_path))
    assert study.direction == optuna.study.StudyDirection.MAXIMIZE
    # Resources in quarters: scale 100 turns 0.25 into step 25.
    assert study.user_attrs["rungflow_step_scale"] == 100
    t0, t1, t2 = sorted(study.trials, key=lambda t: t.number)

    assert [t.user_attrs["rungflow_trial_id"] for t in (t0, t1, t2)] == ["t0000", "t0001", "t0002"]
    assert t0.state == TrialState.COMPLETE
    assert t0.value == 0.75
    assert t0.intermediate_values == {25: 0.5, 50: 0.6, 100: 0.7, 150: 0.75}
    assert t0.params == {"lr": 0.01, "momentum": 0.5}
    assert t0.user_attrs["rungflow_stop_reason"] == "max_t reached"

    # The perturbed member exports its latest config and keeps the history.
    assert t1.state == TrialState.PRUNED
    assert t1.value == pytest.approx(0.71)
    assert t1.params == {"lr": 0.012, "momentum": 0.5}
    assert t1.user_attrs["rungflow_configs"] == [
        {"lr": 0.05, "momentum": 0.2},
        {"lr": 0.012, "momentum": 0.5},
    ]
    assert t1.intermediate_values == {25: 0.3, 50: 0.4, 75: 0.62, 100: 0.71}
    assert t1.user_attrs["rungflow_resource"] == 1.0

    assert t2.state == TrialState.FAIL
    assert t2.value is None
    assert t2.user_attrs["rungflow_error"] == "ValueError: boom"
    assert t2.params == {"lr": 0.02, "momentum": 0.9}
    assert study.best_trial.number == t0.number
    assert t0.datetime_start is not None and t0.datetime_complete is not None
    assert t0.datetime_start <= t0.datetime_complete


def test_existing_study_is_refused_unless_overwritten(tmp_path: Path) -> None:
    store = _hand_built_store(f"sqlite:///{tmp_path / 'rungflow.db'}")
    url = _optuna_url(tmp_path)
    try:
        export_to_optuna(store, "hand", url)
        with pytest.raises(StudyExistsError, match="already exists"):
            export_to_optuna(store, "hand", url)
        export_to_optuna(store, "hand", url, overwrite=True)
        with pytest.raises(ExperimentNotFoundError):
            export_to_optuna(store, "nope", url)
    finally:
        store.close()
    assert len(optuna.load_study(study_name="hand", storage=url).trials) == 3


def test_values_outside_the_space_are_kept_as_attributes(tmp_path: Path) -> None:
    store = EventStore(f"sqlite:///{tmp_path / 'rungflow.db'}")
    spec = load_spec(
        {
            "name": "odd",
            "trainable": "noop",
            "metric": "loss",
            "space": {"x": {"type": "float", "low": 0.0, "high": 1.0}},
            "scheduler": "random",
            "scheduler_args": {"max_t": 1},
            "budget": {"max_trials": 1},
        }
    )
    store.create_experiment("odd", spec.to_json())
    report = {"resource": 1.0, "loss": 0.5}
    store.append(
        "odd",
        [
            TrialCreated("t0000", {"x": 7.0}),
            SegmentStarted("t0000", 0.0, 1.0, {"x": 7.0}),
            SegmentFinished("t0000", 0.0, 1.0, reports=(report,), metrics=report),
        ],
        expected_seq=1,
    )
    try:
        export_to_optuna(store, "odd", _optuna_url(tmp_path))
    finally:
        store.close()
    (trial,) = optuna.load_study(study_name="odd", storage=_optuna_url(tmp_path)).trials
    assert trial.state == TrialState.COMPLETE
    assert trial.params == {}
    assert trial.user_attrs["rungflow_params_outside_space"] == ["x"]
    assert trial.user_attrs["rungflow_config"] == {"x": 7.0}


def test_step_scale() -> None:
    assert step_scale([1.0, 2.0, 81.0]) == 1
    assert step_scale([0.5, 1.0]) == 10
    assert step_scale([0.125]) == 1000
    assert step_scale([math.pi]) == 10**6


def test_cli_command_on_a_local_app(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'rungflow.db'}"
    _hand_built_store(db).close()
    app = typer.Typer()

    @app.callback()
    def main() -> None:
        """Keep typer in multi-command mode."""

    register(app)
    runner = CliRunner()
    url = _optuna_url(tmp_path)
    args = ["export-optuna", "hand", "--to-optuna", url, "--study", "s1", "--db", db]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == "s1"
    assert len(optuna.load_study(study_name="s1", storage=url).trials) == 3
    again = runner.invoke(app, args)
    assert again.exit_code == 1
    assert runner.invoke(app, [*args, "--overwrite"]).exit_code == 0
    missing = runner.invoke(app, ["export-optuna", "nope", "--to-optuna", url, "--db", db])
    assert missing.exit_code == 1


def test_a_retried_trial_is_no_longer_exported_as_failed(tmp_path: Path) -> None:
    """`rungflow retry` un-fails a trial; the export follows the log, not the first failure."""
    store = _hand_built_store(f"sqlite:///{tmp_path / 'rungflow.db'}")
    c = {"lr": 0.02, "momentum": 0.9}
    reports = ({"resource": 0.5, "acc": 0.8},)
    try:
        store.append(
            "hand",
            [
                TrialRetried("t0002", 0.0, 0.5),
                SegmentStarted("t0002", 0.0, 0.5, c),
                SegmentFinished("t0002", 0.0, 0.5, reports=reports, metrics=reports[0]),
            ],
            expected_seq=store.last_seq("hand"),
        )
        export_to_optuna(store, "hand", _optuna_url(tmp_path), "retried")
    finally:
        store.close()
    study = optuna.load_study(study_name="retried", storage=_optuna_url(tmp_path))
    t2 = next(t for t in study.trials if t.user_attrs["rungflow_trial_id"] == "t0002")
    assert t2.state != TrialState.FAIL
    assert t2.value == pytest.approx(0.8)
    assert "rungflow_error" not in t2.user_attrs
