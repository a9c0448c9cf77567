"""Experiment naming for deployments: resume one experiment, or start one per run.

A deployment passes the same ``spec`` to every run it creates. With
``experiment_suffix="none"`` every run works on the experiment ``spec.name``:
an unfinished experiment is resumed, a finished one is left as it is. The other
choices derive a new experiment per run from the flow run itself:

* ``"date"``: ``<name>-YYYYMMDD`` from the run's *scheduled* start (UTC), so a
  nightly cron run and its retries the next morning share one experiment.
* ``"datetime"``: ``<name>-YYYYMMDDTHHMM``, for schedules more often than daily.
* ``"flow_run"``: ``<name>-<flow run name>`` (e.g. ``digits-hb-crimson-tiger``).

All three are stable across retries of one flow run (the scheduled start time
and the run name never change), which is what makes a retried run resume the
experiment its first attempt created.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Literal

from flows.spec import NAME_PATTERN, ExperimentSpec, SpecError

__all__ = ["ExperimentSuffix", "experiment_name", "spec_for_run"]

#: How a run derives its experiment name from ``spec.name`` (see module docs).
ExperimentSuffix = Literal["none", "date", "datetime", "flow_run"]

_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")
_MAX_NAME = 100  # NAME_PATTERN's limit: names are checkpoint path components


def experiment_name(
    base: str,
    suffix: ExperimentSuffix,
    *,
    flow_run_name: str | None = None,
    scheduled_start: datetime | None = None,
) -> str:
    """The experiment name a run with ``suffix`` works on.

    Args:
        base: ``spec.name``.
        suffix: The naming rule.
        flow_run_name: Name of the current flow run (for ``"flow_run"``).
        scheduled_start: Scheduled start of the current flow run (for dates).

    Raises:
        SpecError: naming ``experiment_suffix`` when the run context lacks what
            the rule needs, or ``spec.name`` when the result is too long.
    """
    if suffix == "none":
        return base
    if suffix == "flow_run":
        if not flow_run_name:
            raise SpecError([("experiment_suffix", "is 'flow_run', but there is no flow run")])
        tail = _UNSAFE.sub("-", flow_run_name).strip("-.") or "run"
    else:
        if scheduled_start is None:
            raise SpecError([("experiment_suffix", f"is {suffix!r}, but there is no flow run")])
        if scheduled_start.tzinfo is not None:
            scheduled_start = scheduled_start.astimezone(UTC)
        fmt = "%Y%m%d" if suffix == "date" else "%Y%m%dT%H%M"
        tail = scheduled_start.strftime(fmt)
    name = f"{base}-{tail}"
    if len(name) > _MAX_NAME or not re.match(NAME_PATTERN, name):
        raise SpecError(
            [
                (
                    "spec.name",
                    f"is {base!r}; with experiment_suffix={suffix!r} it becomes {name!r}, "
                    f"but must match {NAME_PATTERN} (at most {_MAX_NAME} characters)",
                )
            ]
        )
    return name


def spec_for_run(spec: ExperimentSpec, suffix: ExperimentSuffix) -> ExperimentSpec:
    """``spec`` renamed for the current flow run (unchanged for ``"none"``).

    Reads the run's name and scheduled start from :mod:`prefect.runtime`.
    """
    if suffix == "none":
        return spec
    from prefect.runtime import flow_run

    scheduled = flow_run.scheduled_start_time if flow_run.id else None
    name = experiment_name(
        spec.name,
        suffix,
        flow_run_name=flow_run.name,
        scheduled_start=scheduled,
    )
    # Frozen model: copy with the new name (already checked against NAME_PATTERN).
    return spec.model_copy(update={"name": name})
