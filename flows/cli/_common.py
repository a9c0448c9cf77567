"""What every command shares: consoles, the --db option, opening the store."""

from __future__ import annotations

import importlib
import os
from collections.abc import Iterator
from contextlib import contextmanager
from importlib import resources
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from flows.settings import get_settings

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
