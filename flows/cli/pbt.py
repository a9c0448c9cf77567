"""``rungflow pbt-policy EXPERIMENT``: the PBT lineage and replay policy of an experiment.

The command reads the event log only (no Prefect); the lineage comes from
:func:`schedulers.pbt_replay.pbt_lineage` and a trial's schedule from
:func:`schedulers.pbt_replay.pbt_policy`, whose JSON output is a valid
``policy`` argument for the ``pbt_replay`` scheduler.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from schedulers.events import Event

__all__ = ["LoadEvents", "default_load_events", "lineage_table", "register"]

#: ``load_events(experiment, db_url_or_None) -> events``; raise ``LookupError``
#: (or a subclass) when the experiment does not exist.
LoadEvents = Callable[[str, str | None], list[Event]]


def default_load_events(experiment: str, db: str | None) -> list[Event]:
    """Read ``experiment``'s log with the storage layer (imported lazily)."""
    from storage import EventStore

    if db is None:
        from flows.settings import get_settings

        db = get_settings().resolved_database_url
    store = EventStore(db)
    try:
        if not store.has_experiment(experiment):
            raise LookupError(f"experiment {experiment!r} does not exist")
        return [stored.event for stored in store.read(experiment)]
    finally:
        store.close()


def _short(config: dict[str, Any]) -> str:
    parts = []
    for k, v in config.items():
        parts.append(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}")
    return ", ".join(parts)


def lineage_table(lineage: dict[str, list[dict[str, Any]]], experiment: str) -> Table:
    """One row per exploit: who copied whom, at which resources, and the configs."""
    table = Table(title=f"PBT lineage of {experiment}")
    for col in ("trial", "at", "donor", "donor at", "old config", "new config"):
        table.add_column(col)
    for trial_id in sorted(lineage):
        for row in lineage[trial_id]:
            table.add_row(
                trial_id,
                f"{row['resource']:g}",
                row["donor"],
                f"{row['donor_resource']:g}",
                _short(row["old_config"]),
                _short(row["new_config"]),
            )
    return table


def register(app: typer.Typer, load_events: LoadEvents | None = None) -> None:
    """Add ``pbt-policy`` to ``app``; ``load_events`` defaults to the SQL event store."""
    loader = load_events or default_load_events

    @app.command("pbt-policy")
    def pbt_policy_command(
        experiment: Annotated[str, typer.Argument(help="Experiment name.")],
        db: Annotated[
            str | None, typer.Option("--db", help="SQLAlchemy URL (default: from settings).")
        ] = None,
        trial: Annotated[
            str | None,
            typer.Option(
                "--trial",
                help="Print this trial's config schedule (input for scheduler pbt_replay).",
            ),
        ] = None,
        as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    ) -> None:
        """Show which trial copied which (donor, resources, old and new config)."""
        from schedulers.pbt_replay import pbt_lineage, pbt_policy  # the scheduler stack

        console, err = Console(), Console(stderr=True)
        try:
            events = loader(experiment, db)
        except LookupError as exc:
            err.print(f"[red]error:[/red] {exc}")
            raise typer.Exit(1) from exc
        if trial is not None:
            try:
                policy = pbt_policy(events, trial)
            except KeyError as exc:
                err.print(f"[red]error:[/red] trial {trial!r} is not in experiment {experiment!r}")
                raise typer.Exit(1) from exc
            if as_json:
                sys.stdout.write(json.dumps([[r, c] for r, c in policy], indent=2) + "\n")
                return
            table = Table(title=f"PBT policy of {trial} ({experiment})")
            table.add_column("from resource")
            table.add_column("config")
            for resource, config in policy:
                table.add_row(f"{resource:g}", _short(config))
            console.print(table)
            return
        lineage = pbt_lineage(events)
        if as_json:
            sys.stdout.write(json.dumps(lineage, indent=2) + "\n")
            return
        console.print(lineage_table(lineage, experiment))
        n = sum(len(v) for v in lineage.values())
        console.print(f"{n} exploits over {len(lineage)} trials")
