"""``rungflow warm-start`` and the warm-start step of ``rungflow run``.

The import runs here, in the CLI process, before any flow starts: source
database URLs are command-line input and must never become flow parameters
(they would be stored by Prefect and shown in its UI). See
:mod:`flows.interop.warm_start` for what is imported and how.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console

if TYPE_CHECKING:
    from flows.spec import ExperimentSpec

__all__ = ["apply_warm_start", "register"]

err = Console(stderr=True)

WarmStartOption = Annotated[
    list[str] | None,
    typer.Option(
        "--warm-start",
        help="Import prior observations once, before the first trial: "
        "optuna:STORAGE_URL:STUDY, experiment:NAME or experiment:NAME@URL (repeatable).",
    ),
]
WarmStartDbOption = Annotated[
    str | None,
    typer.Option("--warm-start-db", help="Store of experiment:NAME sources (default: this one)."),
]
WithCheckpointsOption = Annotated[
    bool,
    typer.Option(
        "--with-checkpoints",
        help="Copy the source trials' latest checkpoints (experiment sources; kept, not resumed).",
    ),
]
WarmStartCheckpointsOption = Annotated[
    str | None,
    typer.Option(
        "--warm-start-checkpoints", help="Checkpoint root of the source (default: this one)."
    ),
]


def apply_warm_start(
    spec: ExperimentSpec,
    sources: list[str] | None,
    *,
    warm_start_db: str | None = None,
    with_checkpoints: bool = False,
    source_checkpoints: str | None = None,
    dry_run: bool = False,
) -> None:
    """Import every source into ``spec.name`` once; print what happened.

    Storage settings (``--db``, ``--checkpoints``) must already be applied.
    Exits 2 on a malformed source and 1 when a source cannot be imported.
    """
    if not sources:
        return
    from flows.cli._common import _open_store
    from flows.interop.warm_start import WarmStartError, parse_source, warm_start
    from flows.settings import get_settings
    from storage import StoreError

    try:
        parsed = [parse_source(s, experiment_db=warm_start_db) for s in sources]
    except WarmStartError as exc:
        err.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from exc
    settings = get_settings()
    store = _open_store(None)  # storage settings are already applied
    try:
        for source in parsed:
            report = warm_start(
                store,
                spec,
                source,
                with_checkpoints=with_checkpoints,
                source_checkpoints=source_checkpoints,
                checkpoints=settings.resolved_checkpoints,
                dry_run=dry_run,
            )
            prefix = "(dry run) " if dry_run else ""
            err.print(prefix + report.describe(), highlight=False, markup=False)
    except (WarmStartError, StoreError) as exc:
        err.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(1) from exc
    finally:
        store.close()


def register(app: typer.Typer) -> None:
    """Add ``warm-start`` to ``app``."""

    @app.command("warm-start")
    def warm_start_command(
        spec: Annotated[Path, typer.Argument(help="Experiment spec (YAML or JSON).")],
        warm_start: WarmStartOption = None,
        name: Annotated[str | None, typer.Option(help="Override the experiment name.")] = None,
        db: Annotated[
            str | None, typer.Option("--db", help="SQLAlchemy URL of this experiment's store.")
        ] = None,
        checkpoints: Annotated[
            str | None, typer.Option("--checkpoints", help="Checkpoint dir or fsspec URL.")
        ] = None,
        warm_start_db: WarmStartDbOption = None,
        with_checkpoints: WithCheckpointsOption = False,
        warm_start_checkpoints: WarmStartCheckpointsOption = None,
        dry_run: Annotated[
            bool, typer.Option("--dry-run", help="Check and count, import nothing.")
        ] = False,
    ) -> None:
        """Import prior observations into an experiment without running it.

        ``rungflow run SPEC`` afterwards starts from them (the same as
        ``rungflow run SPEC --warm-start ...``).
        """
        from flows.cli._common import _apply_storage_options, _import_trainables
        from flows.spec import SpecError, load_spec

        if not warm_start:
            err.print("[red]error:[/red] give at least one --warm-start SOURCE")
            raise typer.Exit(2)
        _import_trainables()
        try:
            parsed = load_spec(spec, name=name)
        except SpecError as exc:
            err.print(f"[red]error:[/red] {exc}")
            raise typer.Exit(2) from exc
        _apply_storage_options(db, checkpoints)
        apply_warm_start(
            parsed,
            warm_start,
            warm_start_db=warm_start_db,
            with_checkpoints=with_checkpoints,
            source_checkpoints=warm_start_checkpoints,
            dry_run=dry_run,
        )
