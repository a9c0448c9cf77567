"""``rungflow export``: trial histories as CSV or JSON, one row per report.

Every ``ctx.report(resource, **metrics)`` a trainable made becomes one row,
with the trial's configuration *for that segment* (PBT changes it between
segments) and the segment's range::

    rungflow export digits --format csv --output digits.csv
    rungflow export digits --format json            # to stdout

CSV columns: ``trial_id, status, segment_start, segment_stop, resource,
finished_at``, then ``config.<name>`` per hyperparameter, then one column per
metric. ``status`` is the trial's outcome now (running, paused, completed,
pruned, failed: see :mod:`schedulers.outcomes`), the same word ``rungflow
status`` prints; ``finished_at`` is when the segment's result was recorded
(ISO 8601, UTC). JSON: a list of ``{"trial_id", "status", "segment_start",
"segment_stop", "resource", "finished_at", "config": {...}, "metrics":
{...}}`` objects, one per line.
"""

from __future__ import annotations

import csv
import io
import json
import sys
from collections.abc import Mapping, Sequence
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from schedulers import Event, ExperimentFinished, SegmentFinished, SegmentStarted, TrialRetried
from schedulers.outcomes import final_status, next_status

if TYPE_CHECKING:
    from storage.projections import ExportView

__all__ = ["ExportFormat", "history_records", "register", "to_csv", "to_json", "view_records"]


class ExportFormat(StrEnum):
    """Output formats of ``rungflow export``."""

    csv = "csv"
    json = "json"


def history_records(
    events: Sequence[Any], statuses: Mapping[str, str] | None = None
) -> list[dict[str, Any]]:
    """One record per report, in log order (see module docs for the fields).

    ``events`` are stored events (with ``created_at``, giving ``finished_at``)
    or bare events (``finished_at`` is then None). ``statuses`` gives trials'
    status words folded elsewhere (the scheduler's: then ``events`` need only
    be those of :data:`flows.engine.status.EXPORT_KINDS`); other trials'
    are folded from ``events``.
    """
    config: dict[str, dict[str, Any]] = {}
    status: dict[str, str | None] = {}
    finished = False
    records = []
    for item in events:
        event: Event = getattr(item, "event", item)
        stamp = getattr(item, "created_at", None)
        if event.trial is not None and not event.coordination:
            status[event.trial] = next_status(status.get(event.trial), event)
        if isinstance(event, ExperimentFinished):
            finished = True
        elif isinstance(event, TrialRetried):
            finished = False
        elif isinstance(event, SegmentStarted):
            config[event.trial_id] = dict(event.config)
        elif isinstance(event, SegmentFinished):
            for report in event.reports:
                records.append(
                    {
                        "trial_id": event.trial_id,
                        "status": None,  # filled in below: the trial's outcome now
                        "segment_start": event.start,
                        "segment_stop": event.stop,
                        "resource": report.get("resource"),
                        "finished_at": None if stamp is None else stamp.isoformat(),
                        "config": dict(config.get(event.trial_id, {})),
                        "metrics": {k: v for k, v in report.items() if k != "resource"},
                    }
                )
    if statuses is not None:
        status.update(statuses)
    for record in records:
        record["status"] = final_status(status.get(str(record["trial_id"])) or "paused", finished)
    return records


def view_records(view: ExportView) -> list[dict[str, Any]]:
    """:func:`history_records` of the log, from what the projections hold
    (:func:`flows.engine.status.export_view`): equal records, no event decoded.

    Each trial's status word is the ``trials`` projection's (as
    :func:`flows.engine.status.projected_status` reads it).
    """
    from flows.engine.status import projected_status

    finished = False
    retried: dict[str, bool] = {}  # trial -> its last error/stop/retry event is a retry
    for _, kind, trial_id in view.events:
        if kind == "ExperimentFinished":
            finished = True
        elif kind == "TrialRetried":
            finished = False
        if trial_id is not None:
            retried[trial_id] = kind == "TrialRetried"
    words = {
        trial_id: final_status(projected_status(raw, retried.get(trial_id, False)), finished)
        for trial_id, raw in view.statuses.items()
    }
    records = []
    for trial_id, start, stop, reports, finished_at, config in view.segments:
        status = words[trial_id]
        for report in reports:
            records.append(
                {
                    "trial_id": trial_id,
                    "status": status,
                    "segment_start": start,
                    "segment_stop": stop,
                    "resource": report.get("resource"),
                    "finished_at": finished_at,
                    "config": dict(config),
                    "metrics": {k: v for k, v in report.items() if k != "resource"},
                }
            )
    return records


def to_json(records: list[dict[str, Any]]) -> str:
    """Records as a JSON list, one record per line (see :mod:`flows.cli.jsonout`)."""
    from flows.cli.jsonout import dumps

    return dumps(records)


def to_csv(records: list[dict[str, Any]]) -> str:
    """Records flattened to CSV (``config.<name>`` columns, metric columns)."""
    params = sorted({k for r in records for k in r["config"]})
    metrics = sorted({k for r in records for k in r["metrics"]})
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    fixed = ["trial_id", "status", "segment_start", "segment_stop", "resource", "finished_at"]
    writer.writerow(fixed + [f"config.{p}" for p in params] + metrics)
    for r in records:
        writer.writerow(
            [_cell(r.get(k)) for k in fixed]
            + [_cell(r["config"].get(p)) for p in params]
            + [_cell(r["metrics"].get(m)) for m in metrics]
        )
    return out.getvalue()


def _cell(value: Any) -> Any:
    # Lists/maps (categorical choices, structured metrics) as JSON, not Python repr.
    if isinstance(value, (list, dict)):
        return json.dumps(value)
    return "" if value is None else value


def register(app: typer.Typer) -> None:
    """Attach ``export`` to the rungflow CLI."""

    @app.command()
    def export(
        experiment: Annotated[str, typer.Argument(help="Experiment name.")],
        fmt: Annotated[
            ExportFormat, typer.Option("--format", "-f", help="Output format.")
        ] = ExportFormat.csv,
        output: Annotated[
            Path | None, typer.Option("--output", "-o", help="File to write (default: stdout).")
        ] = None,
        db: Annotated[
            str | None,
            typer.Option("--db", help="SQLAlchemy URL (default: sqlite in ./.rungflow)."),
        ] = None,
        to_optuna: Annotated[
            str | None,
            typer.Option(
                "--to-optuna",
                help="Write an Optuna study to this storage URL instead (for optuna-dashboard).",
            ),
        ] = None,
        study: Annotated[
            str | None, typer.Option("--study", help="Optuna study name (default: experiment).")
        ] = None,
        overwrite: Annotated[
            bool, typer.Option("--overwrite", help="Replace an existing Optuna study.")
        ] = False,
    ) -> None:
        """Write an experiment's trial histories (one row per report), or an Optuna study."""
        if to_optuna is not None:
            from flows.cli.optuna import export_command

            export_command(experiment, to_optuna, study=study, db=db, overwrite=overwrite)
            return
        from flows.cli._common import _reading, err
        from flows.engine.status import export_events, export_view
        from storage.snapshots import gc_paused

        # Every record stays alive until the text is out: the collector's
        # passes over them would cost about half the time.
        with gc_paused():
            with _reading(db) as store:
                view = export_view(store, experiment)
                if view is None:  # projections behind the log: decode and fold it
                    records = history_records(*export_events(store, experiment))
            if view is not None:
                records = view_records(view)
            text = to_csv(records) if fmt is ExportFormat.csv else to_json(records)
        if output is None:
            sys.stdout.write(text)
        else:
            output.write_text(text)
            err.print(f"wrote {len(records)} row(s) to {output}")
