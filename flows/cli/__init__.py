"""The ``rungflow`` command line: one Typer ``app``, one module per command.

``rungflow run`` starts or resumes an experiment as a Prefect flow run (on the
ephemeral API unless ``PREFECT_API_URL`` points at a server); ``status``,
``list`` and friends read the event log. Nothing outside this package imports
it (checked by import-linter).
"""

from __future__ import annotations

import os
import sys

# Prefect's ephemeral server records a telemetry row on first start and, on a
# fresh SQLite file, races its own migrations ("database is locked" noise).
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
# The ephemeral API migrates a fresh database on first start; 20 s (Prefect's
# default) is not enough on a loaded two-core machine.
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
# One log line per task run drowns the progress bar; --verbose brings them back.
if "--verbose" not in sys.argv:
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")

from flows.cli.app import app

__all__ = ["app"]
