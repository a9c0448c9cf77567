"""``rungflow retry EXPERIMENT TRIAL``: run a failed trial's failed segment again.

The work happens in the ``retry-trial`` Prefect flow (:mod:`flows.retry`);
this command checks the request first so that a refusal is one clear line,
not a failed flow run.
"""

from __future__ import annotations

import json
import sys
from typing import Annotated

import typer
from rich.console import Console

__all__ = ["register"]

console = Console()
err = Console(stderr=True)


def register(app: typer.Typer) -> None:
    """Add ``retry`` to ``app``."""

    @app.command("retry")
    def retry(
        experiment: Annotated[str, typer.Argument(help="Experiment name.")],
        trial: Annotated[str, typer.Argument(help="Failed trial id, e.g. t0003.")],
        retries: Annotated[
            int, typer.Option("--retries", min=0, max=10, help="Task retries of the segment.")
        ] = 0,
        continue_: Annotated[
            bool,
            typer.Option(
                "--continue", help="Then resume the experiment if its scheduler has work."
            ),
        ] = False,
        db: Annotated[
            str | None, typer.Option("--db", help="SQLAlchemy URL (default: settings).")
        ] = None,
        checkpoints: Annotated[
            str | None, typer.Option("--checkpoints", help="Checkpoint dir or fsspec URL.")
        ] = None,
        as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
    ) -> None:
        """Re-run a failed trial's failed segment from its checkpoint; record the result."""
        from flows.cli._common import _apply_storage_options, _import_trainables, _open_store
        from flows.retry import RetryRefusedError, check_retry, retry_trial
        from flows.settings import get_settings
        from storage import ExperimentNotFoundError

        _apply_storage_options(db, checkpoints)
        _import_trainables()
        settings = get_settings()
        store = _open_store(db)
        try:
            target = check_retry(store, experiment, trial, settings.resolved_checkpoints)
        except (ExperimentNotFoundError, RetryRefusedError) as exc:
            err.print(f"[red]error:[/red] {exc}")
            raise typer.Exit(1) from exc
        finally:
            store.close()
        result = retry_trial(experiment, trial, retries)
        if as_json:
            sys.stdout.write(json.dumps(result, indent=2) + "\n")
        else:
            line = f"{trial} {result['start']:g}->{result['stop']:g}: {result['outcome']}"
            if result["error"]:
                line += f" ({result['error']})"
            elif result["metrics"]:
                line += f" ({', '.join(f'{k}={v}' for k, v in result['metrics'].items())})"
            console.print(line, highlight=False, markup=False)
            for decision in result["decisions"]:
                console.print(f"  {decision}", highlight=False, markup=False)
            if not result["experiment_finished"] and not continue_:
                console.print(
                    f"experiment {experiment} has more work: `rungflow retry ... --continue` "
                    "or `rungflow run SPEC` resumes it",
                    highlight=False,
                    markup=False,
                )
        if continue_ and not result["experiment_finished"]:
            from flows.spec import load_spec
            from flows.tune import tune

            summary = tune(load_spec(target.spec.to_json()))
            if not as_json:
                console.print(
                    f"experiment {experiment} {summary['state']}: "
                    f"{summary['segments_run']} more segment(s) run",
                    highlight=False,
                    markup=False,
                )
