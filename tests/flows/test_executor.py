"""PrefectExecutor on a thread pool: a completed segment's value is read in memory."""

from __future__ import annotations

from typing import Any

import pytest
from prefect import flow, task
from prefect.cache_policies import NO_CACHE

from flows.interrupts import ThreadRunner
from flows.tune import PrefectExecutor, _completed_value


@task(cache_policy=NO_CACHE, persist_result=False)
def _echo(value: dict[str, Any]) -> dict[str, Any]:
    return value


@task(cache_policy=NO_CACHE, persist_result=False)
def _boom() -> None:
    raise KeyError("width")


def test_a_completed_value_is_read_without_prefects_bridge_and_failures_still_raise() -> None:
    @flow(persist_result=False)
    def run() -> tuple[Any, Any, Any]:
        with ThreadRunner(max_workers=2) as runner:
            executor = PrefectExecutor(runner, retries=0)
            ok = runner.submit(_echo, {"value": {"loss": 0.5}})
            bad = runner.submit(_boom, {})
            executor.wait_first([ok])
            executor.wait_first([bad])
            fast = _completed_value(ok)
            with pytest.raises(KeyError):
                executor.result(bad)
            return fast, _completed_value(bad), executor.result(ok)

    fast, failed, value = run()
    assert fast == ({"loss": 0.5},)
    assert failed is None  # a failure goes through future.result(), which raises it
    assert value == {"loss": 0.5}
