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

console = Console()
err = Console(stderr=True)

DbOption = Annotated[
    str | None,
    typer.Option(
        "--db",
        help="SQLAlchemy URL (default: sqlite in ./.rungflow), or a reference to one: "
        "env:VAR (an environment variable) or block:NAME (a Prefect Secret block). "
        "Use a reference when the URL holds a password: a command line is visible to "
        "every user of the machine (ps).",
        envvar=None,
    ),
]


def _apply_storage_options(db: str | None, checkpoints: str | None = None) -> None:
    # Settings are read from the environment so the flow run (which takes no
    # storage parameters) sees the same locations as this command.
    if db:
        _warn_if_password(db)
        os.environ["RUNGFLOW_DATABASE_URL"] = db
    if checkpoints:
        os.environ["RUNGFLOW_CHECKPOINTS"] = checkpoints


def _warn_if_password(db: str) -> None:
    """One line when ``--db`` carries a password: every user of the machine sees it in ``ps``."""
    from flows.settings import BLOCK_PREFIX, ENV_PREFIX

    if db.startswith((ENV_PREFIX, BLOCK_PREFIX)):
        return
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        password = make_url(db).password
    except ArgumentError:
        return  # the preflight reports the bad URL
    if password:
        err.print(
            "[yellow]warning:[/yellow] --db holds a password, which every user of this machine "
            "can read in `ps`; put the URL in a variable and pass --db env:VAR, or use "
            "--db block:NAME (a Prefect Secret block)",
            soft_wrap=True,
        )


def _fail(exc: BaseException, code: int) -> typer.Exit:
    """Print ``error: <exc>`` on one line and return the exit to raise."""
    err.print(f"[red]error:[/red] {exc}", soft_wrap=True, markup=True, highlight=False)
    return typer.Exit(code)


def _open_store(db: str | None) -> Any:
    """The store, or ``error: ...`` and exit 2 (bad URL) / 1 (database unusable)."""
    from flows.engine.preflight import PreflightError, load_settings, open_store

    _apply_storage_options(db)
    try:
        return open_store(load_settings())
    except PreflightError as exc:
        raise _fail(exc, exc.exit_code) from None


@contextmanager
def _reading(db: str | None) -> Iterator[Any]:
    """The store, closed afterwards; a missing experiment is ``error: ...`` and exit 1."""
    from storage import ExperimentNotFoundError, StoreError

    store = _open_store(db)
    try:
        yield store
    except ExperimentNotFoundError as exc:
        raise _fail(exc, 1) from None
    except StoreError as exc:  # e.g. the database went away after it opened
        raise _fail(exc, 1) from None
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
