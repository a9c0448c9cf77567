"""``rungflow status`` and ``rungflow list``: read the event log, print tables."""

from __future__ import annotations

import json
import sys
from typing import Annotated, Any

import typer
from rich.table import Table

from flows.cli._common import DbOption, _bytes, _fmt, _reading, console


def print_leaderboard(name: str, store: Any, limit: int = 10) -> None:
    """The leaderboard and best trial of ``name``, read from an open ``store``."""
    from flows.engine.status import experiment_status

    status = experiment_status(store, name)
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


def status(
    experiment: Annotated[str, typer.Argument(help="Experiment name.")],
    db: DbOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Show an experiment's trials, segments and best trial."""
    from flows.engine.status import experiment_status

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


def list_(
    db: DbOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """List experiments in the store."""
    with _reading(db) as store:
        rows = store.list_experiments()
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
