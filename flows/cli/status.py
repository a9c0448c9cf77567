"""``rungflow status`` and ``rungflow list``: read the event log, print tables."""

from __future__ import annotations

import json
import sys
from typing import Annotated, Any

import typer
from rich.table import Table

from flows.cli._common import DbOption, _bytes, _fmt, _reading, console


def print_leaderboard(name: str, store: Any, limit: int | None = 10) -> None:
    """The leaderboard, failures and best trial of ``name``, read from an open ``store``."""
    from flows.engine.status import experiment_summary

    print_status(experiment_summary(store, name), limit)


def last_metrics(trial: dict[str, Any]) -> dict[str, Any] | None:
    """A trial row's last finished segment's metrics (None before one).

    Rows of :func:`~flows.engine.status.experiment_status` list every segment;
    those of :func:`~flows.engine.status.experiment_summary` carry ``metrics``.
    """
    if "segments" in trial:
        return trial["segments"][-1]["metrics"] if trial["segments"] else None
    metrics: dict[str, Any] | None = trial["metrics"]
    return metrics


def ranked_trials(status: dict[str, Any]) -> list[tuple[dict[str, Any], float]]:
    """Trials with a metric, best first: highest resource, then metric (rungflow's ranking)."""
    metric, sign = status["metric"], (1 if status["mode"] == "min" else -1)
    rows = []
    for t in status["trials"]:
        metrics = last_metrics(t)
        if metrics is not None and metrics.get(metric) is not None:
            value = metrics[metric]
            rows.append(((-t["resource"], sign * value, t["trial_id"]), t, value))
    rows.sort(key=lambda r: r[0])
    return [(t, value) for _, t, value in rows]


def leaderboard_table(status: dict[str, Any], limit: int | None = 10) -> Table:
    """Top trials by metric at their highest resource ("top 10 of N" in the title)."""
    metric = status["metric"]
    ranked = ranked_trials(status)
    shown = ranked if limit is None else ranked[:limit]
    scope = f"top {len(shown)} of {len(ranked)} reporting {metric}"
    if len(ranked) != len(status["trials"]):
        scope += f" ({len(status['trials'])} in all)"
    table = Table(
        title=f"{status['experiment']} ({status['state']}, {status['scheduler']}): {scope}"
    )
    for col in ("trial", "status", "resource", metric, "config"):
        table.add_column(col)
    for t, value in shown:
        config = ", ".join(f"{k}={_fmt(v)}" for k, v in t["config"].items())
        table.add_row(t["trial_id"], t["status"], f"{t['resource']:g}", f"{value:.4g}", config)
    return table


def print_status(status: dict[str, Any], limit: int | None = 10) -> None:
    """The leaderboard, then failed trials, trials without a report and the totals."""
    from schedulers.outcomes import TRIAL_STATUSES

    console.print(leaderboard_table(status, limit))
    metric = status["metric"]
    failed = [t for t in status["trials"] if t["status"] == "failed"]
    if failed:
        table = Table(title=f"failed trials ({len(failed)})")
        for col in ("trial", "resource", "error"):
            table.add_column(col)
        for t in failed if limit is None else failed[:limit]:
            table.add_row(t["trial_id"], f"{t['resource']:g}", t.get("error", "?"))
        if limit is not None and len(failed) > limit:
            table.caption = f"{len(failed) - limit} more: --all"
        console.print(table)
    ranked = {t["trial_id"] for t, _ in ranked_trials(status)}
    waiting = [
        t for t in status["trials"] if t["trial_id"] not in ranked and t["status"] != "failed"
    ]
    if waiting:
        ids = ", ".join(f"{t['trial_id']} ({t['status']})" for t in waiting[:20])
        more = f" and {len(waiting) - 20} more" if len(waiting) > 20 else ""
        console.print(f"no {metric} reported yet: {ids}{more}")
    best = status["best"]
    if best:
        console.print(
            f"best trial [bold]{best['trial_id']}[/bold] {metric}="
            f"{best[metric]:.4g} at resource {best['resource']:g}: {best['config']}"
        )
    counts = status.get("counts", {})
    state = status["state"] + (f" ({status['reason']})" if status.get("reason") else "")
    console.print(
        f"state {state}; {status['n_trials']} trials: "
        + ", ".join(f"{counts[k]} {k}" for k in TRIAL_STATUSES if counts.get(k))
        + f"; resource used {status['resource_used']:g}"
    )


def status(
    experiment: Annotated[str, typer.Argument(help="Experiment name.")],
    db: DbOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    limit: Annotated[
        int, typer.Option("--limit", "-n", min=1, help="Trials in the leaderboard.")
    ] = 10,
    all_: Annotated[bool, typer.Option("--all", help="Show every trial.")] = False,
) -> None:
    """Show an experiment's trials (top 10 by default), failures and best trial."""
    from flows.engine.status import experiment_status, experiment_summary

    with _reading(db) as store:
        # The table needs no segment list: the summary skips the results scan.
        # The JSON's segments stay the text SQL wrote (see flows.engine.rawjson).
        data = (experiment_status(store, experiment, raw=True) if as_json
                else experiment_summary(store, experiment))
    if as_json:
        from flows.cli.jsonout import dumps

        sys.stdout.write(dumps(data))  # one trial per line (see flows.cli.jsonout)
        return
    print_status(data, None if all_ else limit)
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
    from flows.engine.status import listed_state

    with _reading(db) as store:
        rows = store.list_experiments()
        states = {r.name: listed_state(store, r.name, r.state) for r in rows}
    if as_json:
        payload = [
            {"name": r.name, "state": states[r.name], "created_at": r.created_at.isoformat(),
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
        table.add_row(r.name, states[r.name], str(r.n_trials), str(r.last_seq), created)
    console.print(table)
