"""``rungflow plan``: show how HyperBand or ASHA will spend resource before a run.

``rungflow plan hyperband --max-t 81 --reduction-factor 3`` prints the paper's
Table 1: per bracket the rungs ``(n_i, r_i)`` and the resource spent (with
promoted trials resuming from their checkpoints, which is what
``budget.max_resource`` counts). ``--json`` prints
``{"brackets": [{"s": s, "rungs": [[n_i, r_i], ...], ...}, ...]}`` from
``s_max`` down to 0, plus totals.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from schedulers._rungs import Bracket, Number, asha_rungs, hyperband_brackets
from schedulers.validation import (
    SchedulerArgumentError,
    check_grace_period,
    check_int,
    check_positive,
    check_reduction_factor,
)

__all__ = ["asha_plan", "hyperband_plan", "register"]

_OPTION = {
    "max_t": "--max-t",
    "reduction_factor": "--reduction-factor",
    "grace_period": "--grace-period",
    "brackets": "--brackets",
    "trials": "--trials",
}


class _PlanError(ValueError):
    def __init__(self, option: str, message: str) -> None:
        super().__init__(message)
        self.option = option


def _number(option: str, text: str) -> Number:
    """Parse ``text`` as an int when it is written as one (so resources stay ints)."""
    try:
        return int(text)
    except ValueError:
        pass
    try:
        value = float(text)
    except ValueError:
        raise _PlanError(option, f"{option} is {text!r}, but must be a number") from None
    if not math.isfinite(value):
        raise _PlanError(option, f"{option} is {text!r}, but must be finite")
    return value


def _integer(option: str, value: Number, low: int) -> int:
    if not isinstance(value, int) or value < low:
        raise _PlanError(option, f"{option} is {value!r}, but must be an integer >= {low}")
    return value


def hyperband_plan(max_t: Number, reduction_factor: Number) -> dict[str, Any]:
    """The JSON plan of one HyperBand iteration."""
    brackets = hyperband_brackets(max_t, reduction_factor)
    return _with_totals([b.to_json() for b in brackets])


def asha_plan(
    max_t: Number,
    grace_period: Number,
    reduction_factor: Number,
    brackets: int = 1,
    trials: int | None = None,
) -> dict[str, Any]:
    """The expected shape of ASHA once ``trials`` trials per bracket have finished.

    ASHA has no fixed bracket sizes; asymptotically rung ``i`` of a bracket
    receives ``floor(trials / eta**i)`` trials. ``s`` is the number of
    promotions a trial of that bracket can get (as in HyperBand, so the most
    exploratory bracket has the largest ``s``); ``bracket`` is ASHA's index.
    Default ``trials`` gives exactly one trial at the top rung of bracket 0.
    """
    check_positive("max_t", max_t)
    check_positive("grace_period", grace_period)
    check_reduction_factor(reduction_factor)
    check_grace_period(grace_period, max_t)
    rungs0 = asha_rungs(grace_period, max_t, reduction_factor)
    check_int("brackets", brackets, 1, len(rungs0))
    if trials is None:
        trials = math.ceil(reduction_factor ** (len(rungs0) - 1) - 1e-9)
    rows = []
    for b in range(brackets):
        resources = asha_rungs(grace_period, max_t, reduction_factor, b)
        counts = [math.floor(trials / reduction_factor**i + 1e-9) for i in range(len(resources))]
        plan = Bracket(len(resources) - 1, tuple(zip(counts, resources, strict=True)))
        rows.append({**plan.to_json(), "bracket": b})
    return _with_totals(rows)


def _with_totals(rows: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "brackets": rows,
        "total_trials": sum(r["rungs"][0][0] for r in rows),
        "total_resource": sum(r["resource"] for r in rows),
    }


def _fmt(value: Number) -> str:
    return str(value) if isinstance(value, int) else f"{value:.6g}"


def _print(plan: dict[str, Any], title: str) -> None:
    table = Table(title=title)
    for column in ("s", "rungs (n_i, r_i)", "trials", "resource"):
        table.add_column(column, justify="left" if column.startswith("rungs") else "right")
    for row in plan["brackets"]:
        rungs = "  ".join(f"({n}, {_fmt(r)})" for n, r in row["rungs"])
        table.add_row(str(row["s"]), rungs, str(row["rungs"][0][0]), _fmt(row["resource"]))
    table.add_section()
    table.add_row("total", "", str(plan["total_trials"]), _fmt(plan["total_resource"]))
    Console().print(table)
    typer.echo(
        "resource: promoted trials resume from their checkpoints "
        "(what budget.max_resource counts)"
    )


def _fail(message: str) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(2)


@contextmanager
def _plan_errors() -> Iterator[None]:
    """Turn a bad option into ``error: ...`` on stderr and exit code 2."""
    try:
        yield
    except _PlanError as exc:
        raise _fail(str(exc)) from None
    except SchedulerArgumentError as exc:
        option = _OPTION.get(exc.argument, exc.argument)
        raise _fail(f"{option}: {exc}") from None


def _show(plan: dict[str, Any], as_json: bool, title: str) -> None:
    if as_json:
        typer.echo(json.dumps(plan))
    else:
        _print(plan, title)


MaxT = Annotated[str, typer.Option("--max-t", help="R: resource of the last rung (int or float).")]
Eta = Annotated[str, typer.Option("--reduction-factor", help="eta (>= 2).")]
AsJson = Annotated[bool, typer.Option("--json", help="Print the plan as JSON.")]


def register(app: typer.Typer) -> None:
    """Add the ``plan`` command group to ``app``."""
    plan_app = typer.Typer(
        help="Show the brackets HyperBand/ASHA will run and the resource they spend.",
        no_args_is_help=True,
    )

    @plan_app.command("hyperband")
    def plan_hyperband(max_t: MaxT, reduction_factor: Eta = "3", as_json: AsJson = False) -> None:
        """One HyperBand iteration: brackets s_max .. 0 (Li et al. 2018, Table 1)."""
        with _plan_errors():
            plan = hyperband_plan(
                _number("--max-t", max_t), _number("--reduction-factor", reduction_factor)
            )
        _show(plan, as_json, f"HyperBand R={max_t} eta={reduction_factor}")

    @plan_app.command("asha")
    def plan_asha(
        max_t: MaxT,
        grace_period: Annotated[
            str, typer.Option("--grace-period", help="r: resource of the bottom rung.")
        ] = "1",
        reduction_factor: Eta = "4",
        brackets: Annotated[str, typer.Option("--brackets", help="Number of brackets.")] = "1",
        trials: Annotated[
            str | None,
            typer.Option("--trials", help="Trials per bracket (default: one reaches max_t)."),
        ] = None,
        as_json: AsJson = False,
    ) -> None:
        """ASHA's rungs and the expected trials per rung for a number of trials."""
        with _plan_errors():
            n_brackets = _integer("--brackets", _number("--brackets", brackets), 1)
            n_trials = None if trials is None else _integer(
                "--trials", _number("--trials", trials), 1
            )
            plan = asha_plan(
                _number("--max-t", max_t),
                _number("--grace-period", grace_period),
                _number("--reduction-factor", reduction_factor),
                n_brackets,
                n_trials,
            )
        _show(plan, as_json, f"ASHA R={max_t} r={grace_period} eta={reduction_factor}")

    app.add_typer(plan_app, name="plan")
