"""Where rungflow keeps its data: settings, never flow parameters.

The database URL and checkpoint location come from environment variables (or a
``.env`` file), so they never appear in a Prefect UI form, a flow-run's
parameters or its logs:

* ``RUNGFLOW_HOME`` (default ``./.rungflow``)
* ``RUNGFLOW_DATABASE_URL`` (default ``sqlite:///$RUNGFLOW_HOME/rungflow.db``)
* ``RUNGFLOW_CHECKPOINTS`` (default ``$RUNGFLOW_HOME/checkpoints``; any fsspec URL)
* ``RUNGFLOW_DATABASE_BLOCK``: name of a Prefect ``Secret`` block holding the
  database URL, for workers that should not carry credentials in their
  environment; used when ``RUNGFLOW_DATABASE_URL`` is not set
* ``RUNGFLOW_DATABASE_URL`` may also be a reference instead of a literal URL:
  ``env:VAR`` (the URL is in environment variable ``VAR``) or ``block:NAME``
  (a Prefect ``Secret`` block), so a password never has to be typed on a
  command line, where every user of the machine sees it in ``ps``
* ``RUNGFLOW_CONNECT_TIMEOUT`` (default 10): seconds opening a PostgreSQL
  connection may take before the command fails (SQLite's busy timeout is
  separate, see :mod:`storage.engine`)
* ``RUNGFLOW_ARTIFACTS`` (default on): progress/leaderboard/summary artifacts
* ``RUNGFLOW_DASK_ADDRESS``: scheduler of an existing ``distributed`` cluster
  (``tcp://host:8786``) for ``task_runner: dask``; unset, a LocalCluster with
  ``max_concurrency`` single-threaded worker processes is started per run
* ``RUNGFLOW_RAY_ADDRESS``: an existing Ray cluster (``ray://host:10001``,
  ``host:6379`` or ``auto``) for ``task_runner: ray``; unset, a local Ray
  instance with ``max_concurrency`` CPUs is started per run
* ``RUNGFLOW_RAY_PY_MODULES``: code Ray ships to its workers for
  ``task_runner: ray`` (the job's ``py_modules``), comma-separated: ``auto``
  (the modules of the experiment's trainable and ``RUNGFLOW_WORKER_MODULES``
  that are not installed in site-packages), module names, package
  directories, ``.py`` files, wheels or remote URIs (see
  :func:`flows.ray_runner.py_modules`)
* ``RUNGFLOW_RAY_RUNTIME_ENV``: a JSON object merged into the Ray job's runtime
  environment (``working_dir``, ``pip``, ``excludes``, ``env_vars``...)
* ``RUNGFLOW_WORKER_MODULES``: comma-separated modules every worker process
  (process pool, Dask, Ray) imports before it trains, so that trainables registered
  with ``@trainable`` there are found. The module of the experiment's
  trainable is added automatically when it is importable.
* ``RUNGFLOW_RETENTION`` (default on), ``RUNGFLOW_KEEP_LAST`` (default 2) and
  ``RUNGFLOW_RETAIN_EVERY`` (default 10): checkpoint retention, see
  :mod:`flows.engine.retention`
* ``RUNGFLOW_PG_SYNCHRONOUS_COMMIT`` (default on): ``off`` lets the runner's
  result and decision commits on PostgreSQL return before their WAL is on
  disk (faster per result; a crash of the database server can lose the last
  ~0.6 s of them, see :mod:`storage.pg_session` and ``docs/scaling.md``).
  SQLite ignores it.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Hashable
from pathlib import Path
from typing import Any, TypeVar, cast

from flows.envsettings import EnvSettings, setting

__all__ = [
    "BLOCK_PREFIX",
    "ENV_PREFIX",
    "DatabaseReferenceError",
    "RungflowSettings",
    "get_settings",
    "read_settings",
    "resolve_database_reference",
]

#: ``--db env:VAR``: the URL is in environment variable ``VAR``.
ENV_PREFIX = "env:"
#: ``--db block:NAME``: the URL is in the Prefect ``Secret`` block ``NAME``.
BLOCK_PREFIX = "block:"


class DatabaseReferenceError(ValueError):
    """A database reference (``env:VAR``, ``block:NAME``) that leads nowhere."""


def resolve_database_reference(value: str) -> str:
    """The database URL ``value`` stands for: itself, or what ``env:``/``block:`` names.

    Raises:
        DatabaseReferenceError: the variable is unset or empty, or the block
            cannot be loaded.
    """
    if value.startswith(ENV_PREFIX):
        var = value[len(ENV_PREFIX) :]
        url = os.environ.get(var, "") if var else ""
        if not url:
            raise DatabaseReferenceError(
                f"database reference {value!r}: environment variable {var!r} is not set or empty; "
                f"export {var or 'VAR'}=postgresql+psycopg://... (or sqlite:///...) first"
            )
        if url.startswith((ENV_PREFIX, BLOCK_PREFIX)):
            raise DatabaseReferenceError(
                f"database reference {value!r} points at another reference; put the URL itself "
                f"in {var}"
            )
        return url
    if value.startswith(BLOCK_PREFIX):
        return _load_block(value[len(BLOCK_PREFIX) :])
    return value


def _load_block(name: str) -> str:
    # Loaded on use, not at import: the Prefect API may not be up yet, and the
    # CLI checks everything else before it starts Prefect.
    from prefect.blocks.system import Secret

    try:
        secret: Any = Secret.load(name, _sync=True)  # type: ignore[call-arg]
    except (ValueError, RuntimeError, OSError) as exc:
        raise DatabaseReferenceError(
            f"Prefect Secret block {name!r} cannot be loaded ({exc}); create it with "
            f"Secret(value='postgresql+psycopg://...').save({name!r})"
        ) from None
    return str(secret.get())


class RungflowSettings(EnvSettings):
    """Storage locations, read from ``RUNGFLOW_*`` environment variables (and ``./.env``).

    Read without pydantic when the values are plain (see :mod:`flows.envsettings`);
    invalid values raise ``pydantic.ValidationError``.
    """

    home: Path = setting(Path(".rungflow"))
    database_url: str | None = setting(None)
    checkpoints: str | None = setting(None)
    database_block: str | None = setting(None)
    artifacts: bool = setting(True)
    # Infrastructure addresses live here, never in the spec: a Prefect UI form
    # must not be able to choose where a flow run connects to.
    dask_address: str | None = setting(None)
    ray_address: str | None = setting(None)
    # Code to ship to Ray workers: settings too. A spec or UI form never
    # chooses code to import or a path to upload.
    ray_py_modules: str = setting("")
    ray_runtime_env: str = setting("")
    worker_modules: str = setting("")
    retention: bool = setting(True)
    keep_last: int = setting(2, ge=1, le=1_000_000)
    retain_every: int = setting(10, ge=1, le=1_000_000)
    connect_timeout: float = setting(10.0, gt=0, le=3600)
    # Durability is the user's choice, per machine: never a spec field.
    pg_synchronous_commit: bool = setting(True)

    @property
    def resolved_database_url(self) -> str:
        """The database URL, with an ``env:``/``block:`` reference resolved.

        Raises:
            DatabaseReferenceError: see :func:`resolve_database_reference`.
        """
        if self.database_url:
            return resolve_database_reference(self.database_url)
        if self.database_block:
            return _load_block(self.database_block)
        return f"sqlite:///{(self.home / 'rungflow.db').resolve()}"

    @property
    def resolved_checkpoints(self) -> str:
        """Checkpoint root as an absolute path or URL (workers may run elsewhere)."""
        from storage.checkpoints import resolve_root

        return resolve_root(self.checkpoints or str(self.home / "checkpoints"))

    @property
    def worker_module_list(self) -> list[str]:
        """``RUNGFLOW_WORKER_MODULES`` split on commas, blanks dropped."""
        return [m.strip() for m in self.worker_modules.split(",") if m.strip()]


def get_settings() -> RungflowSettings:
    """Read settings now (not at import), so tests and the CLI can set the env first."""
    return read_settings(RungflowSettings)


_S = TypeVar("_S", bound=EnvSettings)
#: The settings last read per class, under what they were read from.
_read: dict[type[EnvSettings], tuple[Hashable, EnvSettings]] = {}
_read_lock = threading.Lock()


def read_settings(cls: type[_S]) -> _S:
    """``cls()``, read from the ``RUNGFLOW_*`` environment and ``./.env`` as they are now.

    Validating settings costs about half a millisecond per class, on every
    flow run: the values read last are handed out again (a copy) while the
    ``RUNGFLOW_*`` variables, the working directory and the ``.env`` file
    (its size and modification time) are the same.
    """
    key = _sources()
    with _read_lock:
        last = _read.get(cls)
    if last is not None and last[0] == key:
        return cast(_S, last[1].model_copy())
    settings = cls()
    with _read_lock:
        _read[cls] = (key, settings)
    return settings.model_copy()


def _sources() -> Hashable:
    """What settings are read from: RUNGFLOW_* variables (any case), cwd, ./.env."""
    env = tuple(sorted(
        (k, v) for k, v in os.environ.items() if k[:9].upper() == "RUNGFLOW_"
    ))
    cwd = os.getcwd()
    try:
        st = os.stat(os.path.join(cwd, ".env"))
        dotenv: tuple[int, int] | None = (st.st_mtime_ns, st.st_size)
    except OSError:
        dotenv = None
    return env, cwd, dotenv
