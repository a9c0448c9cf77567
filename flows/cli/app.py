"""The one Typer ``app``: every command is registered here, nowhere else."""

from __future__ import annotations

import typer

from flows.cli import export, optuna, pbt, plan, plot, retry, warm
from flows.cli.errors import OneLineErrors
from flows.cli.run import run
from flows.cli.status import list_, status

app = typer.Typer(
    name="rungflow",
    cls=OneLineErrors,
    help="Hyperparameter tuning on Prefect: HyperBand, ASHA, PBT, DyHPO with a crash-proof log.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
app.command()(run)
app.command()(status)
app.command("list")(list_)
for _module in (plan, pbt, export, optuna, plot, warm, retry):
    _module.register(app)


if __name__ == "__main__":  # pragma: no cover
    app()
