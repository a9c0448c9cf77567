"""``rungflow run``: validate a spec, then run or resume it as a Prefect flow."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from flows.cli._common import (
    DbOption,
    _apply_storage_options,
    _example_path,
    _import_trainables,
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
from flows.spec import SpecError, load_spec


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
    _import_trainables()
    try:
        parsed = load_spec(source, name=name, max_concurrency=max_concurrency)
    except SpecError as exc:
        err.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from exc
    _apply_storage_options(db, checkpoints)
    # Before the flow: source URLs stay CLI input, never flow parameters.
    apply_warm_start(
        parsed, warm_start, warm_start_db=warm_start_db, with_checkpoints=with_checkpoints,
        source_checkpoints=warm_start_checkpoints,
    )

    from flows.cli.progress import CliProgress
    from flows.engine.runner import ResumeRefusedError
    from flows.ray_runner import RayResourceError
    from flows.trainable import MetricNotReportedError
    from flows.tune import tune

    progress = CliProgress(parsed, console=err, enabled=not as_json)
    try:
        with progress:
            summary = tune(parsed)
    except (ResumeRefusedError, MetricNotReportedError, RayResourceError) as exc:
        err.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(1) from exc
    if as_json:
        console.print_json(json.dumps(summary))
    else:
        print_leaderboard(parsed.name, db)
