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
* ``RUNGFLOW_ARTIFACTS`` (default on): progress/leaderboard/summary artifacts
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["RungflowSettings", "get_settings"]


class RungflowSettings(BaseSettings):
    """Storage locations, read from ``RUNGFLOW_*`` environment variables."""

    model_config = SettingsConfigDict(env_prefix="RUNGFLOW_", env_file=".env", extra="ignore")

    home: Path = Path(".rungflow")
    database_url: str | None = None
    checkpoints: str | None = None
    database_block: str | None = None
    artifacts: bool = True

    @property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        if self.database_block:
            # Loaded on use, not at import: the Prefect API may not be up yet.
            from prefect.blocks.system import Secret

            secret: Any = Secret.load(self.database_block, _sync=True)  # type: ignore[call-arg]
            return str(secret.get())
        return f"sqlite:///{(self.home / 'rungflow.db').resolve()}"

    @property
    def resolved_checkpoints(self) -> str:
        if self.checkpoints:
            return self.checkpoints
        return str((self.home / "checkpoints").resolve())


def get_settings() -> RungflowSettings:
    """Read settings now (not at import), so tests and the CLI can set the env first."""
    return RungflowSettings()
