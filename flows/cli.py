"""The ``rungflow`` command line.

``rungflow run`` starts or resumes an experiment as a Prefect flow run (on the
ephemeral API unless ``PREFECT_API_URL`` points at a server); ``status``,
``list`` and friends read the event log.
"""

from __future__ import annotations

import importlib
import json
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from importlib import resources
from pathlib import Path
from typing import Annotated, Any

# Prefect's ephemeral server records a telemetry row on first start and, on a
# fresh SQLite file, races its own migrations ("database is locked" noise).
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
# The ephemeral API migrates a fresh database on first start; 20 s (Prefect's
# default) is not enough on a loaded two-core machine.
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
# One log line per task run drowns the progress bar; --verbose brings them back.
if "--verbose" not in sys.argv:
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")

import typer
from rich.console import Console
from rich.table import Table

from flows.cli_warm import (
    WarmStartCheckpointsOption,
    WarmStartDbOption,
    WarmStartOption,
    WithCheckpointsOption,
    apply_warm_start,
)
from flows.settings import get_settings
from flows.spec import SpecError, load_spec

app = typer.Typer(
    name="rungflow",
    help="Hyperparameter tuning on Prefect: HyperBand, ASHA, PBT, DyHPO with a crash-proof log.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
console = Console()
err = Console(stderr=True)

DbOption = Annotated[
    str | None,
    typer.Option("--db", help="SQLAlchemy URL (default: sqlite in ./.rungflow).", envvar=None),
]


def _apply_storage_options(db: str | None, checkpoints: str | None = None) -> None:
    # Settings are read from the environment so the flow run (which takes no
    # storage parameters) sees the same locations as this command.
    if db:
        os.environ["RUNGFLOW_DATABASE_URL"] = db
    if checkpoints:
        os.environ["RUNGFLOW_CHECKPOINTS"] = checkpoints


def _open_store(db: str | None) -> Any:
    from storage import EventStore, StoreError

    _apply_storage_options(db)
    try:
        return EventStore(get_settings().resolved_database_url)
    except StoreError as exc:
        err.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(1) from exc


@contextmanager
def _reading(db: str | None) -> Iterator[Any]:
    """The store, closed afterwards; a missing experiment is ``error: ...`` and exit 1."""
    from storage import ExperimentNotFoundError

    store = _open_store(db)
    try:
        yield store
    except ExperimentNotFoundError as exc:
        err.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(1) from exc
    finally:
        store.close()


def example_names() -> list[str]:
    return sorted(
        p.name[: -len(".yaml")]
        for p in resources.files("examples").iterdir()
        if p.name.endswith(".yaml")
    )


def _example_path(name: str) -> Path:
    names = example_names()
    if name not in names:
        err.print(f"[red]error:[/red] --example is {name!r}, but must be one of {names}")
        raise typer.Exit(2)
    return Path(str(resources.files("examples").joinpath(f"{name}.yaml")))


def _import_trainables() -> None:
    # Examples register their trainables on import; entry points cover installs.
    for module in ("examples.digits", "examples.noop", "examples.objectives"):
        importlib.import_module(module)


@app.command()
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

    from flows.progress import CliProgress
    from flows.runner import ResumeRefusedError
    from flows.trainable import MetricNotReportedError
    from flows.tune import tune

    progress = CliProgress(parsed, console=err, enabled=not as_json)
    try:
        with progress:
            summary = tune(parsed)
    except (ResumeRefusedError, MetricNotReportedError) as exc:
        err.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(1) from exc
    if as_json:
        console.print_json(json.dumps(summary))
    else:
        _print_leaderboard(parsed.name, db)


def _print_leaderboard(name: str, db: str | None, limit: int = 10) -> None:
    from flows.status import experiment_status

    store = _open_store(db)
    try:
        status = experiment_status(store, name)
    finally:
        store.close()
    console.print(leaderboard_table(status, limit))
    best = status["best"]
    if best:
        console.print(
            f"best trial [bold]{best['trial_id']}[/bold] {status['metric']}="
            f"{best[status['metric']]:.4g} at resource {best['resource']:g}: {best['config']}"
        )


def leaderboard_table(status: dict[str, Any], limit: int = 10) -> Table:
    """Top trials by metric at their highest resource."""
    metric, sign = status["metric"], (1 if status["mode"] == "min" else -1)
    rows = []
    for t in status["trials"]:
        if t["segments"] and t["segments"][-1]["metrics"].get(metric) is not None:
            value = t["segments"][-1]["metrics"][metric]
            rows.append((-t["resource"], sign * value, t, value))
    rows.sort(key=lambda r: (r[0], r[1]))
    table = Table(title=f"{status['experiment']} ({status['state']}, {status['scheduler']})")
    for col in ("trial", "status", "resource", metric, "config"):
        table.add_column(col)
    for _, _, t, value in rows[:limit]:
        config = ", ".join(f"{k}={_fmt(v)}" for k, v in t["config"].items())
        table.add_row(t["trial_id"], t["status"], f"{t['resource']:g}", f"{value:.4g}", config)
    return table


def _bytes(n: int) -> str:
    """``n`` bytes for people: 0 B, 12.3 KiB, 4.5 MiB..."""
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")


def _fmt(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


@app.command()
def status(
    experiment: Annotated[str, typer.Argument(help="Experiment name.")],
    db: DbOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Show an experiment's trials, segments and best trial."""
    from flows.status import experiment_status

    with _reading(db) as store:
        data = experiment_status(store, experiment)
    if as_json:
        sys.stdout.write(json.dumps(data, indent=2, sort_keys=False) + "\n")
        return
    console.print(leaderboard_table(data))
    counts: dict[str, int] = {}
    for t in data["trials"]:
        counts[t["status"]] = counts.get(t["status"], 0) + 1
    console.print(
        f"state {data['state']}; {data['n_trials']} trials "
        + ", ".join(f"{v} {k}" for k, v in sorted(counts.items()))
        + f"; resource used {data['resource_used']:g}"
    )
    disk = data.get("checkpoints") or {}
    if disk.get("bytes") is not None:
        console.print(f"checkpoints: {disk['files']} file(s), {_bytes(disk['bytes'])}")
    elif disk.get("error"):
        console.print(f"checkpoints: unavailable ({disk['error']})")


@app.command("list")
def list_(
    db: DbOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """List experiments in the store."""
    store = _open_store(db)
    try:
        rows = store.list_experiments()
    finally:
        store.close()
    if as_json:
        payload = [
            {"name": r.name, "state": r.state, "created_at": r.created_at.isoformat(),
             "events": r.last_seq, "trials": r.n_trials}
            for r in rows
        ]
        sys.stdout.write(json.dumps(payload, indent=2) + "\n")
        return
    table = Table(title="experiments")
    for col in ("name", "state", "trials", "events", "created"):
        table.add_column(col)
    for r in rows:
        created = f"{r.created_at:%Y-%m-%d %H:%M}"
        table.add_row(r.name, r.state, str(r.n_trials), str(r.last_seq), created)
    console.print(table)


def _register_plugins() -> None:
    """Attach command groups that live in their own modules."""
    for module in (
        "flows.cli_plan",
        "flows.cli_pbt",
        "flows.cli_export",
        "flows.cli_optuna",
        "flows.cli_plot",
        "flows.cli_warm",
        "flows.cli_retry",
    ):
        importlib.import_module(module).register(app)


_register_plugins()


if __name__ == "__main__":  # pragma: no cover
    app()
