"""Experiment specs: the edge where untrusted input (YAML, CLI, Prefect UI) stops.

An :class:`ExperimentSpec` is a pydantic model with ``extra="forbid"``. Every
bound is checked and every error names the field and the allowed range. Only
validated specs reach the event log, so a bad spec writes nothing.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    GetJsonSchemaHandler,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from flows.scheduler_args import (
    CODE_ARGUMENTS,
    RESERVED,
    TAG,
    check_scheduler_args,
    form_conditions,
    form_schema,
)
from schedulers import (
    Budget,
    Done,
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

_CODE_ARGUMENTS = CODE_ARGUMENTS
_RESERVED = RESERVED
#: "scheduler_args.<field>: <rule>", as the scheduler checks word their errors.
_FIELD_MESSAGE = re.compile(r"^(scheduler_args\.[\w.\[\]]+): (.*)$")


class SpecError(ValueError):
    """An invalid spec; ``errors`` lists ``(field, message)`` pairs."""

    def __init__(self, errors: list[tuple[str, str]]):
        self.errors = errors
        if len(errors) == 1:  # the common case: one line, "error: invalid ... field: rule"
            super().__init__(f"invalid experiment spec: {errors[0][0]}: {errors[0][1]}")
            return
        lines = "\n".join(f"  {f}: {m}" for f, m in errors)
        super().__init__(f"invalid experiment spec:\n{lines}")

    @classmethod
    def from_validation(cls, exc: ValidationError) -> SpecError:
        errors: list[tuple[str, str]] = []
        for err in exc.errors():
            loc = ".".join(str(p) for p in err["loc"])
            msg = err["msg"].removeprefix("Value error, ")
            if loc:
                errors.append((loc, msg))
                continue
            # A check across fields (a model validator): its clauses name their fields.
            for clause in re.split(r"; (?=scheduler_args\.)", msg):
                match = _FIELD_MESSAGE.match(clause)
                errors.append((match[1], match[2]) if match else ("spec", clause))
        return cls(errors)


_BOUNDS = ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum")


def _hoist_bounds(schema: dict[str, Any]) -> None:
    """Move the bounds of optional numbers out of their ``anyOf`` (for the form's errors).

    Pydantic writes ``int | None`` with ``ge=1`` as ``anyOf: [{integer, minimum:
    1}, {null}]``; a negative value then fails both branches and the Prefect
    API can only say "-1 is not valid under any of the given schemas". With the
    bounds beside the ``anyOf`` (they apply to numbers only, so null still
    passes) the API says "-1 is less than the minimum of 1" for that field.
    """
    for prop in schema.get("properties", {}).values():
        branches = prop.get("anyOf")
        if not isinstance(branches, list):
            continue
        for branch in branches:
            if branch.get("type") in ("integer", "number"):
                for key in _BOUNDS:
                    if key in branch:
                        prop[key] = branch.pop(key)


def _refuse_bool(value: Any, info: ValidationInfo) -> Any:
    # YAML reads "seed: yes"/"true" as a bool, and pydantic would take it as 1.
    if isinstance(value, bool):
        raise ValueError(
            f"{info.field_name} is {str(value).lower()}, but must be a number (true/false "
            "is not a number)"
        )
    return value


class BudgetSpec(BaseModel):
    """How much the whole experiment may spend."""

    model_config = ConfigDict(extra="forbid", json_schema_extra=_hoist_bounds)

    max_trials: Annotated[
        int | None, Field(ge=1, le=1_000_000, description="Most trials (configurations) created.")
    ] = None
    max_resource: Annotated[
        float | None,
        Field(gt=0, le=1e12, description="Most total resource (e.g. epochs) over all segments."),
    ] = None

    @field_validator("max_trials", "max_resource", mode="before")
    @classmethod
    def _no_bool(cls, value: Any, info: ValidationInfo) -> Any:
        return _refuse_bool(value, info)

    def to_budget(self) -> Budget:
        return Budget(self.max_trials, self.max_resource)


def _ui_schema(schema: dict[str, Any]) -> None:
    """Shape the JSON schema for the Prefect UI's run form.

    The form shows a model's description above its fields: use the docstring's
    first line, not the doctest. ``scheduler_args`` is a typed form per
    scheduler (see :func:`flows.scheduler_args.form_schema`) whose toggle
    chooses the scheduler, so the flat ``scheduler`` field is left out of the
    form: it moves to ``patternProperties``, where the API still accepts and
    checks it (YAML specs and older deployments send it) but the UI, which
    renders ``properties`` only, does not show a second scheduler chooser.
    """
    schema["description"] = "Everything that defines an experiment."
    # A drop-down of the trainables registered where the schema is built (the
    # deployment's process, at deploy time); validation still checks the name.
    from flows.trainable import available_trainables

    names = available_trainables()
    if names:
        schema["properties"]["trainable"]["enum"] = names
    scheduler = schema["properties"].pop("scheduler")
    schema.setdefault("patternProperties", {})[f"^{TAG}$"] = scheduler
    schema.update(form_conditions())


@dataclass(frozen=True)
class _FormSchema:
    """``WithJsonSchema(form_schema())`` for ``scheduler_args``, built only when
    a JSON schema is asked for: building it imports every scheduler."""

    def __get_pydantic_json_schema__(
        self, core_schema: Any, handler: GetJsonSchemaHandler
    ) -> dict[str, Any]:
        return form_schema()


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
        str,
        Field(
            pattern=NAME_PATTERN,
            description="Registered trainable (`@trainable` or the rungflow.trainables "
            "entry points); the form lists those the deployment's process knows.",
        ),
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
    scheduler_args: Annotated[dict[str, Any], _FormSchema()] = Field(
        default_factory=dict,
        description="Choose the scheduler, then set its arguments; an empty field takes "
        "the default its description gives. Async PBT and ASHA (and any scheduler with "
        "max_concurrency > 1) decide in completion order: only max_concurrency 1 repeats "
        "a run exactly.",
    )
    budget: BudgetSpec = Field(
        default_factory=BudgetSpec, description="Limits on trials and total resource."
    )
    max_concurrency: Annotated[
        int,
        Field(
            ge=1,
            le=256,
            description="Segments in flight. 1 is the reproducible mode: with more, results "
            "arrive in completion order and async PBT, ASHA and DyHPO decide on that order.",
        ),
    ] = 2
    seed: Annotated[
        int,
        Field(
            ge=0,
            le=2**32 - 1,
            description="Root seed. Same seed and max_concurrency 1: the same decisions; "
            "with more segments in flight, decisions follow completion order.",
        ),
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

    @model_validator(mode="before")
    @classmethod
    def _form_layout(cls, data: Any) -> Any:
        """The run form's layout: the scheduler named inside ``scheduler_args``.

        ``{scheduler_args: {scheduler: asha, max_t: 9}}`` becomes the flat
        ``{scheduler: asha, scheduler_args: {max_t: 9}}`` every spec is stored
        as; a ``scheduler`` given in both places must agree.
        """
        if not isinstance(data, Mapping):
            return data
        args = data.get("scheduler_args")
        if not isinstance(args, Mapping) or TAG not in args:
            return data
        args = dict(args)
        tag = args.pop(TAG)
        top = data.get("scheduler")
        if top is not None and top != tag:
            raise ValueError(
                f"scheduler is {top!r}, but scheduler_args are for {tag!r}; name one "
                "scheduler (in a deployment, drop spec.scheduler from its parameters: the "
                "run form chooses it in scheduler_args)"
            )
        return {**data, "scheduler": tag, "scheduler_args": args}

    @field_validator("seed", "max_concurrency", "segment_retries", mode="before")
    @classmethod
    def _no_bool(cls, value: Any, info: ValidationInfo) -> Any:
        return _refuse_bool(value, info)

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
        first = self.build_scheduler().ask(1)[0]
        if isinstance(first, Done):
            # A budget smaller than the first segment would "finish" with 0 trials.
            limits = ", ".join(
                f"budget.{k} is {v:g}" for k, v in self.budget.model_dump().items() if v is not None
            )
            max_t = self.scheduler_args.get("max_t")
            reach = f" (max_t is {max_t:g})" if isinstance(max_t, (int, float)) else ""
            raise ValueError(
                f"{limits}, but scheduler {self.scheduler!r} cannot start a single segment "
                f"within it{reach}: it would finish with 0 trials ({first.reason}); raise the "
                "budget or lower max_t"
            )
        return self

    @property
    def search_space(self) -> SearchSpace:
        return SearchSpace.from_json(self.space)

    def build_scheduler(self) -> Scheduler:
        """Construct the scheduler, turning argument errors into field errors."""
        cls = scheduler_class(self.scheduler)
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
        # Each argument's type, bounds and choices (the form's rules); then the
        # constructor checks what spans arguments (grace_period <= max_t, ...).
        check_scheduler_args(self.scheduler, self.scheduler_args)
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


#: Largest spec file read; a spec is a few hundred bytes, a big one a few KiB.
MAX_SPEC_BYTES = 1 << 20
#: Deepest nesting of lists and mappings in a spec file (a spec needs about 4).
MAX_SPEC_DEPTH = 64
#: Most values a spec file may hold once its aliases are expanded. Checked on
#: the parser's events, before any alias is expanded: a 2.6 KB "billion laughs"
#: file would otherwise expand to hundreds of millions of values.
MAX_SPEC_NODES = 100_000

_Loader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _SpecLoader(_Loader):
    """Safe YAML loading that refuses duplicate keys (YAML keeps the last one silently)."""

    def construct_mapping(self, node: Any, deep: bool = False) -> Any:
        if isinstance(node, yaml.MappingNode):
            seen: set[Any] = set()
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue  # "<<: *defaults" entries may be overridden on purpose
                key = self.construct_object(key_node, deep=True)
                try:
                    duplicate = key in seen
                except TypeError:
                    continue  # unhashable: the base class reports it
                if duplicate:
                    raise yaml.constructor.ConstructorError(
                        "while constructing a mapping", node.start_mark,
                        f"found duplicate key {key!r}; each key may appear once",
                        key_node.start_mark,
                    )
                seen.add(key)
        return super().construct_mapping(node, deep=deep)


def _check_yaml_shape(text: str, path: Path) -> None:
    """Refuse deep nesting and alias bombs on the event stream, before composing.

    The parser is a state machine (no recursion, no expansion); only the
    composer and constructor recurse and share aliased nodes, and everything
    after them (validation, JSON) walks the expanded tree.
    """
    frames: list[list[Any]] = []  # [expanded size so far, anchor]
    sizes: dict[str, int] = {}
    open_anchors: set[str] = set()

    def add(n: int) -> None:
        if frames:
            frames[-1][0] += n
            if frames[-1][0] > MAX_SPEC_NODES:
                raise SpecError([("spec", (
                    f"{path} expands to more than {MAX_SPEC_NODES} values (YAML aliases "
                    "repeating aliases?); write the spec out plainly")
                )])

    for ev in yaml.parse(text, Loader=_Loader):
        if isinstance(ev, (yaml.MappingStartEvent, yaml.SequenceStartEvent)):
            if len(frames) >= MAX_SPEC_DEPTH:
                raise SpecError([("spec", (
                    f"{path} nests lists/mappings deeper than {MAX_SPEC_DEPTH} levels "
                    f"({_line(ev)}); a spec needs a handful")
                )])
            frames.append([0, ev.anchor])
            if ev.anchor:
                open_anchors.add(ev.anchor)
        elif isinstance(ev, (yaml.MappingEndEvent, yaml.SequenceEndEvent)):
            size, anchor = frames.pop()
            if anchor:
                sizes[anchor] = size + 1
                open_anchors.discard(anchor)
            add(size + 1)
        elif isinstance(ev, yaml.ScalarEvent):
            if ev.anchor:
                sizes[ev.anchor] = 1
            add(1)
        elif isinstance(ev, yaml.AliasEvent):
            if ev.anchor in open_anchors:
                raise SpecError([("spec", (
                    f"{path} has a recursive alias *{ev.anchor} ({_line(ev)}); "
                    "a spec cannot contain itself")
                )])
            add(sizes.get(ev.anchor or "", 1))


def _line(event: Any) -> str:
    mark = event.start_mark
    return "line ?" if mark is None else f"line {mark.line + 1}"


def _read_spec_file(path: Path) -> Any:
    """Parse a YAML/JSON spec file with every bound checked before anything expands."""
    try:
        with path.open("rb") as fh:
            raw = fh.read(MAX_SPEC_BYTES + 1)
    except OSError as exc:
        raise SpecError([("spec", f"cannot read {path}: {exc.strerror}")]) from exc
    if len(raw) > MAX_SPEC_BYTES:
        raise SpecError([("spec", (
            f"{path} is larger than {MAX_SPEC_BYTES // 1024} KiB, but a spec is a few KiB at "
            "most; is it the right file?")
        )])
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise SpecError([("spec", (
            f"{path} is not UTF-8 text (byte 0x{raw[exc.start]:02x} at offset {exc.start}); "
            "save it as UTF-8")
        )]) from None
    try:
        _check_yaml_shape(text, path)
        return yaml.load(text, Loader=_SpecLoader)
    except yaml.YAMLError as exc:
        problem = _yaml_problem(exc)
        raise SpecError([("spec", f"{path} is not valid YAML/JSON: {problem}")]) from None


def _yaml_problem(exc: yaml.YAMLError) -> str:
    """PyYAML's multi-line message as one line: where, then what."""
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
    return f"{where}{problem}"


def load_spec(source: str | Path | Mapping[str, Any], **overrides: Any) -> ExperimentSpec:
    """Validate a spec from a YAML/JSON file path or a mapping.

    A file is refused before it is expanded when it is larger than
    :data:`MAX_SPEC_BYTES`, not UTF-8, nested deeper than
    :data:`MAX_SPEC_DEPTH` or would expand (through YAML aliases) to more than
    :data:`MAX_SPEC_NODES` values; a key given twice is an error.

    Raises:
        SpecError: with one ``(field, message)`` per problem.
    """
    if isinstance(source, Mapping):
        data: Any = dict(source)
    else:
        path = Path(source)
        data = _read_spec_file(path)
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
