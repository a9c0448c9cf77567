"""``rungflow run``: check everything, then run or resume the spec as a Prefect flow.

Prefect is imported and started only in :func:`_start_flow`; every error that
can be found without it (spec, database, resume, checkpoints) is reported by
the preflight first, in about a second, as one ``error:`` line.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from flows.cli._common import (
    DbOption,
    _apply_storage_options,
    _example_path,
    _fail,
    _import_trainables,
    _reading,
    console,
    err,
)
from flows.cli.status import print_leaderboard
from flows.cli.warm import (
    WarmStartCheckpointsOption,
    WarmStartDbOption,
    WarmStartOption,
    WithCheckpointsOption,
    apply_warm_start,
)

if TYPE_CHECKING:
    from flows.engine.preflight import Preflight
    from flows.spec import ExperimentSpec


def run(
    spec: Annotated[Path | None, typer.Argument(help="Experiment spec (YAML or JSON).")] = None,
    example: Annotated[
        str | None, typer.Option("--example", help="Run a bundled example spec.")
    ] = None,
    name: Annotated[str | None, typer.Option(help="Override the experiment name.")] = None,
    max_concurrency: Annotated[
        int | None, typer.Option("--max-concurrency", help="Segments in flight.")
    ] = None,
    db: DbOption = None,
    checkpoints: Annotated[
        str | None, typer.Option("--checkpoints", help="Checkpoint dir or fsspec URL.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
    verbose: Annotated[
        bool, typer.Option("--verbose", help="Show Prefect's per-task logs.")
    ] = False,
    warm_start: WarmStartOption = None,
    warm_start_db: WarmStartDbOption = None,
    with_checkpoints: WithCheckpointsOption = False,
    warm_start_checkpoints: WarmStartCheckpointsOption = None,
) -> None:
    """Run an experiment; running an existing one again resumes it."""
    if (spec is None) == (example is None):
        err.print("[red]error:[/red] give exactly one of SPEC or --example NAME")
        raise typer.Exit(2)
    source = _example_path(example) if example is not None else spec
    assert source is not None
    from flows.spec import SpecError, load_spec

    _import_trainables()
    try:
        parsed = load_spec(source, name=name, max_concurrency=max_concurrency)
    except SpecError as exc:
        raise _fail(exc, 2) from None
    _apply_storage_options(db, checkpoints)
    # Everything that can be wrong without Prefect is found before it boots.
    with _preflight(parsed) as checked:
        if checked.state == "finished":
            _print_finished(checked, parsed, as_json)
            return
    # Before the flow: source URLs stay CLI input, never flow parameters.
    apply_warm_start(
        parsed, warm_start, warm_start_db=warm_start_db, with_checkpoints=with_checkpoints,
        source_checkpoints=warm_start_checkpoints,
    )
    summary = _start_flow(parsed, as_json)
    if as_json:
        console.print_json(json.dumps(summary))
    else:
        with _reading(None) as store:  # storage settings are already applied
            print_leaderboard(parsed.name, store)


@contextmanager
def _preflight(parsed: ExperimentSpec) -> Iterator[Preflight]:
    """:func:`flows.engine.preflight.preflight`, its errors as one ``error:`` line."""
    from flows.engine.preflight import PreflightError, preflight

    try:
        with preflight(parsed) as checked:
            yield checked
    except PreflightError as exc:
        raise _fail(exc, exc.exit_code) from None


def _print_finished(checked: Preflight, parsed: ExperimentSpec, as_json: bool) -> None:
    """A finished experiment: its stored results, without starting Prefect."""
    from flows.engine.runner import ExperimentRunner

    if as_json:
        runner = ExperimentRunner(checked.store, parsed, checked.checkpoint_root)
        runner.open()  # replays the log; writes nothing for a finished experiment
        console.print_json(json.dumps(runner.summary.to_json()))
        return
    err.print(f"experiment {parsed.name!r} is finished; its results:")
    print_leaderboard(parsed.name, checked.store)


def _start_flow(parsed: ExperimentSpec, as_json: bool) -> dict[str, Any]:
    """Run the ``tune`` flow on ``parsed`` (this is where Prefect starts); its summary."""
    from prefect.exceptions import FailedRun

    from flows.cli.progress import CliProgress
    from flows.engine.runner import ResumeRefusedError
    from flows.interrupts import stoppable_run
    from flows.ray_runner import RayResourceError, RayRuntimeEnvError
    from flows.trainable import MetricNotReportedError
    from flows.tune import tune
    from storage import StoreError

    progress = CliProgress(parsed, console=err, enabled=not as_json)
    try:
        # One owned Prefect API for the run; Ctrl-C/SIGTERM: one line, exit 130/143.
        with stoppable_run(parsed.name, say=lambda line: err.print(line, markup=False)), progress:
            summary: dict[str, Any] = tune(parsed)
    except ResumeRefusedError as exc:  # another runner created it differently meanwhile
        raise _fail(exc, 2) from None
    except (MetricNotReportedError, StoreError, RayResourceError, RayRuntimeEnvError) as exc:
        raise _fail(exc, 1) from None
    except FailedRun as exc:
        # Every trial failed, or none reported the metric: show what is known.
        if not as_json:
            with _reading(None) as store:
                print_leaderboard(parsed.name, store)
        raise _fail(exc, 1) from None
    return summary
