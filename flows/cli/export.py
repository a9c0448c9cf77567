"""``rungflow export``: trial histories as CSV or JSON, one row per report.

Every ``ctx.report(resource, **metrics)`` a trainable made becomes one row,
with the trial's configuration *for that segment* (PBT changes it between
segments) and the segment's range::

    rungflow export digits --format csv --output digits.csv
    rungflow export digits --format json            # to stdout

CSV columns: ``trial_id, segment_start, segment_stop, resource``, then
``config.<name>`` per hyperparameter, then one column per metric. JSON: a list
of ``{"trial_id", "segment_start", "segment_stop", "resource", "config": {...},
"metrics": {...}}`` objects.
"""

from __future__ import annotations

import csv
import io
import json
import sys
from collections.abc import Sequence
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer

from schedulers import Event, SegmentFinished, SegmentStarted

__all__ = ["ExportFormat", "history_records", "register", "to_csv", "to_json"]


class ExportFormat(StrEnum):
    """Output formats of ``rungflow export``."""

    csv = "csv"
    json = "json"


def history_records(events: Sequence[Event]) -> list[dict[str, Any]]:
    """One record per report, in log order (see module docs for the fields)."""
    config: dict[str, dict[str, Any]] = {}
    records = []
    for event in events:
        if isinstance(event, SegmentStarted):
            config[event.trial_id] = dict(event.config)
        elif isinstance(event, SegmentFinished):
            for report in event.reports:
                records.append(
                    {
                        "trial_id": event.trial_id,
                        "segment_start": event.start,
                        "segment_stop": event.stop,
                        "resource": report.get("resource"),
                        "config": dict(config.get(event.trial_id, {})),
                        "metrics": {k: v for k, v in report.items() if k != "resource"},
                    }
                )
    return records


def to_json(records: list[dict[str, Any]]) -> str:
    """Records as indented JSON."""
    return json.dumps(records, indent=2) + "\n"


def to_csv(records: list[dict[str, Any]]) -> str:
    """Records flattened to CSV (``config.<name>`` columns, metric columns)."""
    params = sorted({k for r in records for k in r["config"]})
    metrics = sorted({k for r in records for k in r["metrics"]})
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(
        ["trial_id", "segment_start", "segment_stop", "resource"]
        + [f"config.{p}" for p in params]
        + metrics
    )
    for r in records:
        writer.writerow(
            [r["trial_id"], r["segment_start"], r["segment_stop"], r["resource"]]
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
        from flows.engine.status import load_events

        with _reading(db) as store:
            events = load_events(store, experiment)
        records = history_records(events)
        text = to_csv(records) if fmt is ExportFormat.csv else to_json(records)
        if output is None:
            sys.stdout.write(text)
        else:
            output.write_text(text)
            err.print(f"wrote {len(records)} row(s) to {output}")
