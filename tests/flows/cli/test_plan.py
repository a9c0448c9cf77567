"""``rungflow plan``: tables, exact JSON, and option errors (exit code 2)."""

from __future__ import annotations

import json

import pytest
import typer
from typer.testing import CliRunner

from flows.cli.plan import register

app = typer.Typer()


@app.callback()
def _root() -> None:
    """A local app standing in for ``rungflow``."""


register(app)
runner = CliRunner()


def test_hyperband_json_is_table_1() -> None:
    args = ["plan", "hyperband", "--max-t", "81", "--reduction-factor", "3", "--json"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    plan = json.loads(result.stdout)
    assert [{"s": b["s"], "rungs": b["rungs"]} for b in plan["brackets"]] == [
        {"s": 4, "rungs": [[81, 1], [27, 3], [9, 9], [3, 27], [1, 81]]},
        {"s": 3, "rungs": [[34, 3], [11, 9], [3, 27], [1, 81]]},
        {"s": 2, "rungs": [[15, 9], [5, 27], [1, 81]]},
        {"s": 1, "rungs": [[8, 27], [2, 81]]},
        {"s": 0, "rungs": [[5, 81]]},
    ]
    assert plan["total_trials"] == 143


def test_hyperband_table_with_floats() -> None:
    result = runner.invoke(app, ["plan", "hyperband", "--max-t", "1.0", "--reduction-factor", "2"])
    assert result.exit_code == 0, result.output
    assert "(1, 1)" in result.stdout and "total" in result.stdout


def test_asha_json_and_table() -> None:
    args = ["plan", "asha", "--max-t", "9", "--grace-period", "1", "--reduction-factor", "3"]
    result = runner.invoke(app, [*args, "--brackets", "2", "--json"])
    assert result.exit_code == 0, result.output
    plan = json.loads(result.stdout)
    assert [(b["s"], b["bracket"], b["rungs"]) for b in plan["brackets"]] == [
        (2, 0, [[9, 1], [3, 3], [1, 9]]),
        (1, 1, [[9, 3], [3, 9]]),
    ]
    table = runner.invoke(app, args)
    assert table.exit_code == 0 and "(9, 1)" in table.stdout


@pytest.mark.parametrize(
    ("args", "option"),
    [
        (["hyperband", "--max-t", "81", "--reduction-factor", "1"], "--reduction-factor"),
        (["hyperband", "--max-t", "ten"], "--max-t"),
        (["asha", "--max-t", "5", "--grace-period", "10"], "--grace-period"),
        (["asha", "--max-t", "9", "--grace-period", "0"], "--grace-period"),
        (["asha", "--max-t", "9", "--reduction-factor", "3", "--brackets", "7"], "--brackets"),
    ],
)
def test_bad_options_exit_2_naming_the_option(args: list[str], option: str) -> None:
    result = runner.invoke(app, ["plan", *args])
    assert result.exit_code == 2
    assert option in result.output


def test_hyperband_rungs_are_whole_epochs() -> None:
    result = runner.invoke(app, ["plan", "hyperband", "--max-t", "100", "--json"])
    plan = json.loads(result.stdout)
    assert [r for _, r in plan["brackets"][0]["rungs"]] == [1, 3, 11, 33, 100]


def test_hyperband_with_a_budget_lists_every_bracket_and_the_remainder() -> None:
    args = ["plan", "hyperband", "--max-t", "9", "--max-resource", "130", "--json"]
    plan = json.loads(runner.invoke(app, args).stdout)
    assert [(b["iteration"], b["s"], b["partial"]) for b in plan["brackets"]] == [
        (0, 2, False), (0, 1, False), (0, 0, False), (1, 2, False), (1, 1, False), (1, 0, True),
    ]
    assert plan["brackets"][-1]["rungs"] == [[2, 9]]
    assert (plan["total_resource"], plan["unspent"]) == (129, 1)
    table = runner.invoke(app, args[:-1])
    assert table.exit_code == 0 and "partial" in table.stdout and "unspent: 1" in table.stdout


def test_asha_counts_follow_the_rung_spacing() -> None:
    args = ["plan", "asha", "--max-t", "10", "--grace-period", "1", "--reduction-factor", "3"]
    plan = json.loads(runner.invoke(app, [*args, "--brackets", "2", "--json"]).stdout)
    assert plan["brackets"][0]["rungs"] == [[27, 1], [9, 3], [3, 9], [2, 10]]
    assert [round(b["probability"], 3) for b in plan["brackets"]] == [0.6, 0.4]
