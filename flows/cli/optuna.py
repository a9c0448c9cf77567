"""``rungflow export-optuna``: write an experiment as an Optuna study.

Kept in its own module so that the main CLI only imports it as a plugin
(``register(app)``); :func:`export_command` is also what a generic
``rungflow export EXPERIMENT --to-optuna URL`` command calls.
"""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console

__all__ = ["export_command", "register"]

err = Console(stderr=True)


def export_command(
    experiment: str,
    to_optuna: str,
    study: str | None = None,
    db: str | None = None,
    overwrite: bool = False,
) -> str:
    """Export ``experiment`` to the Optuna storage ``to_optuna``; print the study name.

    Exits 1 (with the reason on stderr) when the experiment is missing or the
    study exists without ``overwrite``.
    """
    from flows.cli._common import _open_store
    from flows.interop.optuna_export import StudyExistsError, export_to_optuna
    from storage import ExperimentNotFoundError

    # Same precedence as every other command: --db beats the environment.
    store = _open_store(db)
    try:
        name = export_to_optuna(store, experiment, to_optuna, study, overwrite=overwrite)
    except (ExperimentNotFoundError, StudyExistsError) as exc:
        err.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(1) from exc
    finally:
        store.close()
    # Plain stdout, so that scripts can capture the study name.
    typer.echo(name)
    err.print(_exported_line(to_optuna, name))
    return name


def _exported_line(storage_url: str, name: str) -> str:
    """``exported N trials (a COMPLETE, b PRUNED, ...)`` and the dashboard command."""
    import optuna

    study = optuna.load_study(study_name=name, storage=storage_url)
    counts: dict[str, int] = {}
    for trial in study.get_trials(deepcopy=False):
        counts[trial.state.name] = counts.get(trial.state.name, 0) + 1
    states = ", ".join(f"{n} {state}" for state, n in sorted(counts.items()))
    try:  # never echo a password
        import sqlalchemy as sa

        storage_url = sa.make_url(storage_url).render_as_string(hide_password=True)
    except Exception:
        storage_url = "STORAGE_URL"
    return (
        f"exported {sum(counts.values())} trial(s) ({states or 'none'}) to study {name!r}; "
        f"view them with: optuna-dashboard {storage_url}"
    )


def register(app: typer.Typer) -> None:
    """Add ``export-optuna`` to ``app``."""

    @app.command("export-optuna")
    def export_optuna(
        experiment: Annotated[str, typer.Argument(help="Experiment name.")],
        to_optuna: Annotated[
            str,
            typer.Option(
                "--to-optuna",
                help="Optuna storage URL, e.g. sqlite:///optuna.db (for optuna-dashboard).",
            ),
        ],
        study: Annotated[
            str | None, typer.Option("--study", help="Study name (default: the experiment name).")
        ] = None,
        db: Annotated[
            str | None,
            typer.Option("--db", help="SQLAlchemy URL of the rungflow store (default: settings)."),
        ] = None,
        overwrite: Annotated[
            bool, typer.Option("--overwrite", help="Replace an existing study of that name.")
        ] = False,
    ) -> None:
        """Write an experiment's trials, intermediate values and results as an Optuna study."""
        export_command(experiment, to_optuna, study, db, overwrite)
