"""One wording for every scheduler argument error (schedulers/validation.py)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from schedulers.validation import (
    SchedulerArgumentError,
    check_at_most,
    check_bool,
    check_choice,
    check_int,
    check_name,
    check_number,
    check_optional_int,
    check_positive,
    check_reduction_factor,
)


@pytest.mark.parametrize(
    ("check", "message"),
    [
        (lambda: check_reduction_factor(1), "reduction_factor is 1, but must be >= 2"),
        (lambda: check_reduction_factor("3"), "reduction_factor is '3', but must be a number >= 2"),
        (lambda: check_reduction_factor(float("inf")),
         "reduction_factor is inf, but must be a number >= 2"),
        (lambda: check_positive("max_t", 0), "max_t is 0, but must be > 0"),
        (lambda: check_positive("max_t", True), "max_t is True, but must be a number > 0"),
        (lambda: check_number("q", 0.7, low=0, high=0.5), "q is 0.7, but must be in [0, 0.5]"),
        (lambda: check_number("q", float("nan")), "q is nan, but must be a finite number"),
        (lambda: check_int("n", 0, 1), "n is 0, but must be an integer >= 1"),
        (lambda: check_int("n", 1.0, 1), "n is 1.0, but must be an integer >= 1"),
        (lambda: check_int("brackets", 4, 1, 3), "brackets is 4, but must be an integer in 1..3"),
        (lambda: check_optional_int("g", 0, 1), "g is 0, but must be an integer >= 1 or null"),
        (lambda: check_bool("synch", 1), "synch is 1, but must be true or false"),
        (lambda: check_name("metric", ""), "metric is '', but must be a name"),
        (lambda: check_choice("mode", "avg", ("min", "max")), "mode is 'avg', but must be "
                                                               "'min' or 'max'"),
        (lambda: check_choice("x", "d", "abc"), "x is 'd', but must be one of 'a', 'b', 'c'"),
        (lambda: check_at_most("grace_period", 10, "max_t", 9),
         "grace_period is 10, but must be <= max_t (9)"),
    ],
)
def test_message_names_value_and_rule(check: Callable[[], Any], message: str) -> None:
    with pytest.raises(SchedulerArgumentError) as info:
        check()
    assert str(info.value) == message
    assert info.value.argument == message.split(" is ")[0]


def test_values_come_back_unchanged() -> None:
    assert check_reduction_factor(3) == 3 and isinstance(check_reduction_factor(3), int)
    assert check_number("x", 0.5, low=0, high=1) == 0.5
    assert check_optional_int("g", None, 1) is None
    assert check_int("n", 5, 1, 5) == 5
    assert check_choice("mode", "max", ("min", "max")) == "max"


def test_base_and_rungs_reexport_the_same_error() -> None:
    from schedulers import SchedulerArgumentError as public
    from schedulers._rungs import check_positive as old_home
    from schedulers.base import SchedulerArgumentError as base

    assert public is base is SchedulerArgumentError
    assert old_home is check_positive


# ------------------------------------------- one table: ARGUMENTS (the form's bounds too)
def _outside(rule: Any) -> Any:
    """A value just outside ``rule``."""
    from schedulers.validation import ArgumentRule

    assert isinstance(rule, ArgumentRule)
    if rule.kind in ("number", "int"):
        return rule.low if rule.low_open else (rule.low or 0) - 1
    return {"bool": "yes", "choice": "nope", "name": ""}[rule.kind]


#: Arguments each scheduler needs before any other is looked at.
_REQUIRED: dict[str, dict[str, Any]] = {
    "pbt": {"perturbation_interval": 1},
    "pbt_replay": {"policy": [[0, {"x": 0.5}]], "max_t": 4},
    "dyhpo": {"max_t": 4},
}


@pytest.mark.parametrize(
    "scheduler", ["random", "fifo", "hyperband", "asha", "pbt", "pbt_replay", "dyhpo"]
)
def test_schedulers_check_their_arguments_with_the_shared_table(scheduler: str) -> None:
    """Each scalar argument fails in the scheduler exactly as ARGUMENTS says.

    The run form's bounds are built from ARGUMENTS, so this is what keeps the
    form and the schedulers from drifting apart.
    """
    import inspect

    from schedulers import Budget, SearchSpace
    from schedulers.registry import scheduler_class
    from schedulers.validation import ARGUMENTS

    cls = scheduler_class(scheduler)
    params: dict[str, inspect.Parameter] = {}
    for klass in cls.__mro__:
        if "__init__" in klass.__dict__:
            for p in inspect.signature(klass.__dict__["__init__"]).parameters.values():
                params.setdefault(p.name, p)
    checked = [a for a in params if a in ARGUMENTS]
    assert checked, scheduler
    space = SearchSpace.parse({"x": {"type": "float", "low": 0.0, "high": 1.0}})
    for arg in checked:
        rule, bad = ARGUMENTS[arg], _outside(ARGUMENTS[arg])
        kwargs = {**_REQUIRED.get(scheduler, {}), arg: bad}
        with pytest.raises(SchedulerArgumentError) as info:
            cls(space=space, metric="loss", mode="min", seed=0, budget=Budget(8, None),
                **kwargs)
        assert info.value.argument == arg, (scheduler, arg, str(info.value))
        if arg == "brackets":  # its upper bound is known only at run time
            continue
        with pytest.raises(SchedulerArgumentError) as expected:
            rule.check(arg, bad, nullable=params[arg].default is None)
        assert str(info.value) == str(expected.value), (scheduler, arg)
