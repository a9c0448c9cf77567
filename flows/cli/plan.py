"""``rungflow plan``: show how HyperBand or ASHA will spend resource before a run.

``rungflow plan hyperband --max-t 81 --reduction-factor 3`` prints the paper's
Table 1: per bracket the rungs ``(n_i, r_i)`` and the resource spent (with
promoted trials resuming from their checkpoints, which is what
``budget.max_resource`` counts). ``--json`` prints
``{"brackets": [{"s": s, "rungs": [[n_i, r_i], ...], ...}, ...]}`` from
``s_max`` down to 0, plus totals. Rungs are what the trainable is asked to
train: whole epochs when ``--max-t`` is an int (Ray Tune's rounding).
``--max-resource`` (and/or ``--max-trials``) prints instead every bracket a
run with that budget opens, in order, including the cut-down last bracket
that spends the remainder, and what is left unspent.
"""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

# schedulers._rungs imports the scheduler stack (numpy, optuna): only the
# plan commands import it, so that `rungflow status` starts without it.
if TYPE_CHECKING:
    from schedulers._rungs import Number
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
    "max_resource": "--max-resource",
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


def hyperband_plan(
    max_t: Number,
    reduction_factor: Number,
    max_resource: Number | None = None,
    max_trials: int | None = None,
) -> dict[str, Any]:
    """The JSON plan of one HyperBand iteration, or of a whole run under a budget."""
    from schedulers._rungs import hyperband_brackets, hyperband_schedule

    if max_resource is None and max_trials is None:
        brackets = hyperband_brackets(max_t, reduction_factor)
        return _with_totals([b.to_json() for b in brackets])
    if max_resource is not None:
        check_positive("max_resource", max_resource)
    full = {b.s: b for b in hyperband_brackets(max_t, reduction_factor)}
    rows = [
        {**b.to_json(), "iteration": it, "partial": b.rungs[0][0] < full[b.s].rungs[0][0]}
        for it, b in hyperband_schedule(
            max_t, reduction_factor, max_resource=max_resource, max_trials=max_trials
        )
    ]
    plan = _with_totals(rows)
    if max_resource is not None:
        plan["max_resource"] = max_resource
        plan["unspent"] = max_resource - plan["total_resource"]
    return plan


def asha_plan(
    max_t: Number,
    grace_period: Number,
    reduction_factor: Number,
    brackets: int = 1,
    trials: int | None = None,
) -> dict[str, Any]:
    """The expected shape of ASHA once ``trials`` trials per bracket have finished.

    ASHA has no fixed bracket sizes; asymptotically rung ``i + 1`` of a bracket
    receives the fraction ``r_i / r_{i+1}`` of rung ``i``'s trials (``1/eta``
    between geometric rungs). ``probability`` is the chance that a new trial
    joins the bracket (``bracket_weights="budget"``). ``s`` is the number of
    promotions a trial of that bracket can get (as in HyperBand, so the most
    exploratory bracket has the largest ``s``); ``bracket`` is ASHA's index.
    Default ``trials`` gives exactly one trial at the top rung of bracket 0.
    """
    from schedulers._rungs import Bracket, asha_rungs, bracket_probabilities, promotion_fraction

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
        counts = [trials]
        for r_i, r_next in itertools.pairwise(resources):
            counts.append(math.floor(counts[-1] * promotion_fraction(r_i, r_next)))
        plan = Bracket(len(resources) - 1, tuple(zip(counts, resources, strict=True)))
        rows.append({**plan.to_json(), "bracket": b})
    for row, p in zip(rows, bracket_probabilities(brackets, reduction_factor, "budget"),
                      strict=True):
        row["probability"] = p
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
    schedule = bool(plan["brackets"]) and "iteration" in plan["brackets"][0]
    weighted = len(plan["brackets"]) > 1 and "probability" in plan["brackets"][0]
    columns = ["s", "rungs (n_i, r_i)", "trials", "resource"]
    if schedule:
        columns = ["iteration", *columns, "note"]
    if weighted:
        columns.append("probability")
    for column in columns:
        table.add_column(column, justify="left" if column.startswith("rungs") else "right")
    for row in plan["brackets"]:
        rungs = "  ".join(f"({n}, {_fmt(r)})" for n, r in row["rungs"])
        cells = [str(row["s"]), rungs, str(row["rungs"][0][0]), _fmt(row["resource"])]
        if schedule:
            cells = [str(row["iteration"]), *cells, "partial" if row["partial"] else ""]
        if weighted:
            cells.append(f"{row['probability']:.3f}")
        table.add_row(*cells)
    table.add_section()
    total = ["total", "", str(plan["total_trials"]), _fmt(plan["total_resource"])]
    if schedule:
        total = ["", *total, ""]
    if weighted:
        total.append("")
    table.add_row(*total)
    Console().print(table)
    if "unspent" in plan:
        typer.echo(f"unspent: {_fmt(plan['unspent'])} of max_resource {_fmt(plan['max_resource'])}")
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
    def plan_hyperband(
        max_t: MaxT,
        reduction_factor: Eta = "3",
        max_resource: Annotated[
            str | None,
            typer.Option("--max-resource", help="Budget: list every bracket the run opens."),
        ] = None,
        max_trials: Annotated[
            str | None, typer.Option("--max-trials", help="Budget: trials at most.")
        ] = None,
        as_json: AsJson = False,
    ) -> None:
        """One HyperBand iteration: brackets s_max .. 0 (Li et al. 2018, Table 1).

        With a budget, every bracket the run opens, the last one cut down.
        """
        with _plan_errors():
            plan = hyperband_plan(
                _number("--max-t", max_t),
                _number("--reduction-factor", reduction_factor),
                None if max_resource is None else _number("--max-resource", max_resource),
                None if max_trials is None else _integer(
                    "--max-trials", _number("--max-trials", max_trials), 1
                ),
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
