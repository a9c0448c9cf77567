"""Experiment specs: the edge where untrusted input (YAML, CLI, Prefect UI) stops.

An :class:`ExperimentSpec` is a pydantic model with ``extra="forbid"``. Every
bound is checked and every error names the field and the allowed range. Only
validated specs reach the event log, so a bad spec writes nothing.
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from schedulers import (
    Budget,
    Event,
    ExperimentCreated,
    SchedulerArgumentError,
    SearchSpace,
    SpaceError,
)
from schedulers.base import Scheduler
from schedulers.registry import SCHEDULERS, scheduler_class

__all__ = [
    "NAME_PATTERN",
    "BudgetSpec",
    "ExperimentSpec",
    "SpecError",
    "load_spec",
    "spec_differences",
    "stored_spec",
]

#: Experiment and trainable names double as path components in the checkpoint
#: store, so they are restricted to a safe alphabet (no '/', no '..').
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$"

SchedulerName = Literal["random", "fifo", "hyperband", "asha", "pbt", "pbt_replay", "dyhpo"]

#: Scheduler arguments that only the Python API may pass: they carry code.
_CODE_ARGUMENTS = {"custom_explore_fn"}
#: Arguments the spec sets from its own fields, never from ``scheduler_args``.
_RESERVED = {"space", "metric", "mode", "seed", "budget"}


class SpecError(ValueError):
    """An invalid spec; ``errors`` lists ``(field, message)`` pairs."""

    def __init__(self, errors: list[tuple[str, str]]):
        self.errors = errors
        lines = "\n".join(f"  {f}: {m}" for f, m in errors)
        super().__init__(f"invalid experiment spec:\n{lines}")

    @classmethod
    def from_validation(cls, exc: ValidationError) -> SpecError:
        errors = []
        for err in exc.errors():
            loc = ".".join(str(p) for p in err["loc"]) or "spec"
            msg = err["msg"]
            if msg.startswith("Value error, "):
                msg = msg[len("Value error, ") :]
            errors.append((loc, msg))
        return cls(errors)


class BudgetSpec(BaseModel):
    """How much the whole experiment may spend."""

    model_config = ConfigDict(extra="forbid")

    max_trials: Annotated[
        int | None, Field(ge=1, le=1_000_000, description="Most trials (configurations) created.")
    ] = None
    max_resource: Annotated[
        float | None,
        Field(gt=0, le=1e12, description="Most total resource (e.g. epochs) over all segments."),
    ] = None

    def to_budget(self) -> Budget:
        return Budget(self.max_trials, self.max_resource)


def _ui_schema(schema: dict[str, Any]) -> None:
    """Shape the JSON schema for the Prefect UI's run form.

    The form shows a model's description above its fields: use the docstring's
    first line, not the doctest. List each scheduler's arguments under
    ``scheduler_args``, which is free-form because it depends on ``scheduler``.
    """
    schema["description"] = "Everything that defines an experiment."
    lines = []
    for name in SchedulerName.__args__:  # type: ignore[attr-defined]
        accepted = _keyword_arguments(scheduler_class(name)) or set()
        lines.append(f"{name}: {', '.join(sorted(accepted - _RESERVED - _CODE_ARGUMENTS))}")
    args = schema["properties"]["scheduler_args"]
    args["description"] = "Arguments of the chosen scheduler. " + "; ".join(lines)
    args["examples"] = [{"max_t": 9, "reduction_factor": 3}]


class ExperimentSpec(BaseModel):
    """Everything that defines an experiment.

    Example:
        >>> spec = ExperimentSpec(
        ...     name="digits-hb", trainable="digits", metric="error", mode="min",
        ...     space={"lr": {"type": "float", "low": 1e-4, "high": 1e-1, "log": True}},
        ...     scheduler="random", scheduler_args={"max_t": 3}, budget={"max_trials": 4})
        >>> spec.max_concurrency
        2
    """

    model_config = ConfigDict(extra="forbid", frozen=True, json_schema_extra=_ui_schema)

    name: Annotated[
        str,
        Field(pattern=NAME_PATTERN, description="Experiment name; running it again resumes it."),
    ]
    trainable: Annotated[
        str, Field(pattern=NAME_PATTERN, description="Registered trainable name (see `list`).")
    ]
    metric: Annotated[
        str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_.\-]{0,63}$", description="Metric to optimise.")
    ]
    mode: Annotated[
        Literal["min", "max"], Field(description="Minimise or maximise the metric.")
    ] = "min"
    space: dict[str, Any] = Field(
        description="Search space: name -> distribution ({type: float|int|categorical, "
        "low, high, log, step, choices}).",
        examples=[{"lr": {"type": "float", "low": 0.0001, "high": 0.1, "log": True}}],
    )
    scheduler: Annotated[
        SchedulerName, Field(description="Which scheduler decides what runs next.")
    ] = "random"
    scheduler_args: dict[str, Any] = Field(
        default_factory=dict, description="Arguments of the chosen scheduler."
    )
    budget: BudgetSpec = Field(
        default_factory=BudgetSpec, description="Limits on trials and total resource."
    )
    max_concurrency: Annotated[int, Field(ge=1, le=256, description="Segments in flight.")] = 2
    seed: Annotated[
        int, Field(ge=0, le=2**32 - 1, description="Root seed; same seed, same decisions.")
    ] = 0
    segment_retries: Annotated[
        int, Field(ge=0, le=10, description="Task retries of a failing segment.")
    ] = 0
    task_runner: Annotated[
        Literal["thread", "process", "dask", "ray"],
        Field(
            description="Run segments in threads, in a local process pool, on Dask or on Ray "
            "(cluster addresses come from RUNGFLOW_DASK_ADDRESS and RUNGFLOW_RAY_ADDRESS, "
            "never from the spec)."
        ),
    ] = "thread"
    num_cpus: Annotated[
        float | None,
        Field(
            ge=0, le=1024,
            description="CPUs Ray reserves for each segment (task_runner ray only; "
            "default 1). Above 1, a whole number.",
        ),
    ] = None
    num_gpus: Annotated[
        float | None,
        Field(
            ge=0, le=64,
            description="GPUs Ray reserves for each segment (task_runner ray only; "
            "default 0). Above 1, a whole number.",
        ),
    ] = None
    trainable_args: dict[str, Any] = Field(
        default_factory=dict, description="Fixed keyword arguments passed to the trainable."
    )

    @field_validator("trainable")
    @classmethod
    def _registered(cls, value: str, info: ValidationInfo) -> str:
        # Stored specs are re-validated by read-only commands (status) in
        # processes that may not have imported the user's trainable module.
        if info.context and info.context.get("check_trainable") is False:
            return value
        from flows.trainable import TrainableNotFoundError, get_trainable

        try:
            get_trainable(value)
        except TrainableNotFoundError as exc:
            raise ValueError(str(exc)) from exc
        return value

    @field_validator("space", mode="before")
    @classmethod
    def _parse_space(cls, value: Any) -> dict[str, Any]:
        if isinstance(value, SearchSpace):
            return value.to_json()
        if not isinstance(value, Mapping):
            raise ValueError(f"space is {type(value).__name__}, but must be a mapping")
        try:
            space = SearchSpace.parse(value)
        except SpaceError as exc:
            raise ValueError(str(exc)) from exc
        return space.to_json()

    @field_validator("trainable_args", "scheduler_args")
    @classmethod
    def _json_only(cls, value: dict[str, Any]) -> dict[str, Any]:
        try:
            json.dumps(value, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"must be plain JSON (numbers, strings, lists, maps): {exc}") from exc
        return value

    @field_validator("num_cpus", "num_gpus")
    @classmethod
    def _ray_quantity(cls, value: float | None, info: ValidationInfo) -> float | None:
        # Ray's rule: fractions of one device, or whole devices.
        if value is not None and value > 1 and value != int(value):
            raise ValueError(
                f"{info.field_name} is {value:g}, but must be in [0, 1] or a whole number "
                f"up to {1024 if info.field_name == 'num_cpus' else 64}"
            )
        return value

    @model_validator(mode="after")
    def _check_resources(self) -> ExperimentSpec:
        for name in ("num_cpus", "num_gpus"):
            if getattr(self, name) is not None and self.task_runner != "ray":
                raise ValueError(
                    f"{name} is set, but only task_runner 'ray' reserves resources per "
                    f"segment (task_runner is {self.task_runner!r}); remove {name} or use ray"
                )
        return self

    @model_validator(mode="after")
    def _check_scheduler(self) -> ExperimentSpec:
        if self.budget.max_trials is None and self.budget.max_resource is None:
            needs_budget = self.scheduler in ("random", "hyperband", "asha", "dyhpo")
            bounded = self.scheduler_args.get("max_generations") is not None
            if needs_budget and not bounded:
                raise ValueError(
                    f"budget is empty, but scheduler {self.scheduler!r} needs "
                    "budget.max_trials or budget.max_resource to end"
                )
        self.build_scheduler()
        return self

    @property
    def search_space(self) -> SearchSpace:
        return SearchSpace.from_json(self.space)

    def build_scheduler(self) -> Scheduler:
        """Construct the scheduler, turning argument errors into field errors."""
        cls = scheduler_class(self.scheduler)
        accepted = _keyword_arguments(cls)
        for key in self.scheduler_args:
            if key in _RESERVED:
                raise ValueError(
                    f"scheduler_args.{key} is set by the spec's own field {key!r}; remove it"
                )
            if key in _CODE_ARGUMENTS:
                raise ValueError(
                    f"scheduler_args.{key} takes Python code and is only available from the "
                    "Python API, not from a spec"
                )
            if accepted is not None and key not in accepted:
                raise ValueError(
                    f"scheduler_args.{key} is not an argument of {self.scheduler!r}; "
                    f"allowed: {sorted(accepted - _RESERVED - _CODE_ARGUMENTS)}"
                )
        try:
            return cls(
                space=self.search_space,
                metric=self.metric,
                mode=self.mode,
                seed=self.seed,
                budget=self.budget.to_budget(),
                **self.scheduler_args,
            )
        except SchedulerArgumentError as exc:
            raise ValueError(f"scheduler_args.{exc.argument}: {exc}") from exc
        except TypeError as exc:
            raise ValueError(f"scheduler_args: {exc}") from exc

    def to_json(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


def _keyword_arguments(cls: type) -> set[str] | None:
    """Names ``cls.__init__`` accepts across the MRO (None if it takes anything)."""
    names: set[str] = set()
    for klass in cls.__mro__:
        init = klass.__dict__.get("__init__")
        if init is None:
            continue
        params = inspect.signature(init).parameters.values()
        names.update(p.name for p in params if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD))
        if not any(p.kind is p.VAR_KEYWORD for p in params):
            break
    names.discard("self")
    return names


def load_spec(source: str | Path | Mapping[str, Any], **overrides: Any) -> ExperimentSpec:
    """Validate a spec from a YAML/JSON file path or a mapping.

    Raises:
        SpecError: with one ``(field, message)`` per problem.
    """
    if isinstance(source, Mapping):
        data: Any = dict(source)
    else:
        path = Path(source)
        try:
            text = path.read_text()
        except OSError as exc:
            raise SpecError([("spec", f"cannot read {path}: {exc.strerror}")]) from exc
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise SpecError([("spec", f"{path} is not valid YAML/JSON: {exc}")]) from exc
        if not isinstance(data, Mapping):
            raise SpecError([("spec", f"{path} must contain a mapping at the top level")])
        data = dict(data)
    data.update({k: v for k, v in overrides.items() if v is not None})
    try:
        return ExperimentSpec.model_validate(data)
    except ValidationError as exc:
        raise SpecError.from_validation(exc) from None



def stored_spec(created: Event) -> ExperimentSpec:
    """The spec recorded by an experiment's first event, its ``ExperimentCreated``.

    Re-validated without importing the user's trainable.
    """
    assert isinstance(created, ExperimentCreated)
    return ExperimentSpec.model_validate(created.spec, context={"check_trainable": False})

#: Fields that may change when an experiment is resumed: they do not change
#: what has been decided, only how fast the rest runs.
RESUMABLE_CHANGES = {
    "max_concurrency", "segment_retries", "task_runner", "budget", "num_cpus", "num_gpus",
}


def spec_differences(stored: Mapping[str, Any], new: ExperimentSpec) -> list[str]:
    """Why ``new`` may not resume the experiment stored as ``stored`` (empty = it may)."""
    out: list[str] = []
    new_json = new.to_json()
    stored_space = SearchSpace.from_json(stored.get("space", {}))
    out.extend(f"space: {d}" for d in stored_space.differences(new.search_space))
    for key in sorted(set(stored) | set(new_json)):
        if key in RESUMABLE_CHANGES or key == "space":
            continue
        if stored.get(key) != new_json.get(key):
            out.append(f"{key}: stored {stored.get(key)!r}, given {new_json.get(key)!r}")
    return out


assert set(SCHEDULERS) >= set(SchedulerName.__args__)  # type: ignore[attr-defined]
