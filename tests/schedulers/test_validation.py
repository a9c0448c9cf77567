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
