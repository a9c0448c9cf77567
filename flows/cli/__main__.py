"""``python -m flows.cli`` is ``rungflow``."""

from flows.cli import app

app(prog_name="rungflow")
