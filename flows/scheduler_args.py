"""The typed ``scheduler_args`` of a spec: one pydantic model per scheduler.

Each model is derived from its scheduler class, so nothing is written twice:

* the fields are the keyword arguments of the class's ``__init__`` (minus the
  ones the spec sets from its own fields, and those that take code);
* each field's description is the class docstring's ``Args:`` entry;
* each default is the signature's default;
* each bound or choice is the rule in :data:`schedulers.validation.ARGUMENTS`,
  the table the scheduler itself checks its arguments with (so a value the form
  accepts is one the scheduler accepts, with the same wording when it is not).

Together the models are a tagged union on ``scheduler`` (pydantic's
``Field(discriminator="scheduler")``). The spec keeps the flat layout
(``scheduler: asha`` beside ``scheduler_args: {max_t: 9}``); the run form
carries the tag inside ``scheduler_args``. See :func:`form_schema` for the JSON
schema shape the Prefect UI renders, and why.
"""

from __future__ import annotations

import inspect
import json
import re
from collections.abc import Mapping
from functools import cache, partial
from typing import Annotated, Any, Literal, Union

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    WithJsonSchema,
    create_model,
)

from schedulers.registry import scheduler_class
from schedulers.validation import ARGUMENTS, ArgumentRule, SchedulerArgumentError

__all__ = [
    "CODE_ARGUMENTS",
    "RESERVED",
    "SCHEDULER_NAMES",
    "TAG",
    "argument_models",
    "check_scheduler_args",
    "form_conditions",
    "form_schema",
    "keyword_arguments",
]

#: Schedulers a spec may name, in the order the form lists them.
SCHEDULER_NAMES = ("random", "fifo", "hyperband", "asha", "pbt", "pbt_replay", "dyhpo")
#: The discriminator: the key naming the scheduler inside the form's scheduler_args.
TAG = "scheduler"
#: Scheduler arguments that only the Python API may pass: they carry code.
CODE_ARGUMENTS = {"custom_explore_fn"}
#: Arguments the spec sets from its own fields, never from ``scheduler_args``.
RESERVED = {"space", "metric", "mode", "seed", "budget"}


def _keyword_parameters(cls: type) -> tuple[dict[str, inspect.Parameter], bool]:
    """``__init__``'s keyword parameters across the MRO, in order; and whether it takes any."""
    params: dict[str, inspect.Parameter] = {}
    for klass in cls.__mro__:
        init = klass.__dict__.get("__init__")
        if init is None:
            continue
        signature = inspect.signature(init).parameters.values()
        for p in signature:
            if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD) and p.name != "self":
                params.setdefault(p.name, p)
        if not any(p.kind is p.VAR_KEYWORD for p in signature):
            return params, False
    return params, True


def keyword_arguments(cls: type) -> set[str] | None:
    """Names ``cls.__init__`` accepts across the MRO (None if it takes anything)."""
    params, open_ended = _keyword_parameters(cls)
    return None if open_ended else set(params)


_ARG_LINE = re.compile(r"^(\s+)(\w+)(?: \([^)]*\))?: (.*)$")


def _argument_docs(cls: type) -> dict[str, str]:
    """``name -> text`` from the ``Args:`` sections of ``cls`` and its bases (nearest first)."""
    docs: dict[str, str] = {}
    for klass in cls.__mro__:
        lines = ((klass.__doc__ and inspect.cleandoc(klass.__doc__)) or "").splitlines()
        current: str | None = None
        indent = -1
        in_args = False
        for line in lines:
            if line.strip() == "Args:":
                in_args, current = True, None
                continue
            if not in_args:
                continue
            if line.strip() and not line.startswith(" "):
                in_args = False  # the next section
                continue
            match = _ARG_LINE.match(line)
            if match and (indent < 0 or len(match.group(1)) == indent):
                indent = len(match.group(1))
                current = match.group(2)
                docs.setdefault(current, "")
                if not docs[current]:
                    docs[current] = match.group(3).strip()
                else:
                    current = None  # documented by a nearer class already
            elif match or (line.strip() and len(line) - len(line.lstrip()) <= indent):
                current = None  # "**kwargs: ..." or another item: not ours
            elif current is not None and line.strip():
                docs[current] += " " + line.strip()
    return {k: _plain(v) for k, v in docs.items()}


def _plain(text: str) -> str:
    """Docstring markup as plain words: no ``code`` quotes, no :class: roles."""
    return re.sub(r":(?:class|func|meth|attr|mod|data):", "", re.sub(r"``?([^`]+)``?", r"\1", text))


def _rule_schema(rule: ArgumentRule) -> dict[str, Any]:
    if rule.kind == "number":
        out: dict[str, Any] = {"type": "number"}
        if rule.low is not None:
            out["exclusiveMinimum" if rule.low_open else "minimum"] = rule.low
        if rule.high is not None:
            out["maximum"] = rule.high
        return out
    if rule.kind == "int":
        out = {"type": "integer", "minimum": int(rule.low or 0)}
        if rule.high is not None:
            out["maximum"] = int(rule.high)
        return out
    if rule.kind == "bool":
        return {"type": "boolean"}
    if rule.kind == "choice":
        return {"type": "string", "enum": list(rule.choices)}
    return {"type": "string", "minLength": 1}


_BOUNDS = ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum")


def _field_schema(
    name: str, rule: ArgumentRule | None, param: inspect.Parameter, doc: str
) -> dict[str, Any]:
    """JSON schema of one argument: type and bounds from ``rule``, words from ``doc``."""
    required = param.default is inspect.Parameter.empty
    nullable = param.default is None
    words = [doc.rstrip(".") + "." if doc else f"{name}."]
    if rule is not None:
        allowed = rule.describe() + (", or null" if nullable else "")
        words.append(f"Allowed: {allowed}.")
    if required:
        words.append("Required.")
    elif rule is not None and rule.kind == "bool":
        # The UI draws an unset switch as off, whatever the default.
        words.append(f"Default: {json.dumps(param.default)} (a switch left untouched sends "
                     "nothing, so the default applies).")
    else:
        words.append(f"Default: {json.dumps(param.default)}.")
    schema: dict[str, Any] = {"title": name, "description": " ".join(words)}
    if rule is None:
        return schema  # a list or a mapping: any JSON (the scheduler checks it)
    typed = _rule_schema(rule)
    if nullable:
        # Bounds beside the anyOf (they only apply to numbers), as for
        # BudgetSpec: the API then says "-1 is less than the minimum of 1".
        schema.update({k: typed.pop(k) for k in _BOUNDS if k in typed})
        schema["anyOf"] = [typed, {"type": "null"}]
    else:
        schema.update(typed)
    # No "default" keyword: the UI would copy every default into the payload,
    # and the stored spec must hold only what was given (resume compares it).
    return schema


def _check(name: str, rule: ArgumentRule, nullable: bool, value: Any) -> Any:
    try:
        return rule.check(name, value, nullable=nullable)
    except SchedulerArgumentError as exc:
        raise ValueError(str(exc)) from None


@cache
def _model(name: str) -> type[BaseModel]:
    """The pydantic model of ``name``'s arguments, tagged ``scheduler: name``.

    Built on first use, each when its scheduler is named: building one
    imports its scheduler's module, and reading a stored spec (status,
    resume) must not pay for every scheduler's numerical stack (DyHPO's scipy).
    """
    cls = scheduler_class(name)
    params, _ = _keyword_parameters(cls)
    docs = _argument_docs(cls)
    fields: dict[str, Any] = {
        TAG: (
            Annotated[
                Literal[name],
                WithJsonSchema(
                    {
                        "title": TAG,
                        "type": "string",
                        "enum": [name],
                        "default": name,
                        "description": f"Set by the buttons above: {name}.",
                    }
                ),
            ],
            name,
        )
    }
    for arg, param in params.items():
        if arg in RESERVED or arg in CODE_ARGUMENTS:
            continue
        rule = ARGUMENTS.get(arg)
        schema = _field_schema(arg, rule, param, docs.get(arg, ""))
        metadata: list[Any] = [WithJsonSchema(schema)]
        if rule is not None:
            metadata.append(BeforeValidator(partial(_check, arg, rule, param.default is None)))
        required = param.default is inspect.Parameter.empty
        fields[arg] = (Annotated[Any, *metadata], ... if required else None)
    summary = (inspect.getdoc(cls) or name).split("\n\n")[0].replace("\n", " ")
    summary = _plain(summary)
    model: type[BaseModel] = create_model(
        f"{cls.__name__}Arguments",
        __config__=ConfigDict(
            extra="forbid", title=name, json_schema_extra={"description": summary}
        ),
        **fields,
    )
    return model


@cache
def argument_models() -> tuple[type[BaseModel], ...]:
    """One model per scheduler, in :data:`SCHEDULER_NAMES` order."""
    return tuple(_model(n) for n in SCHEDULER_NAMES)


@cache
def _adapter() -> TypeAdapter[Any]:
    """The tagged union itself: ``scheduler`` picks the model."""
    union: Any = Annotated[Union[argument_models()], Field(discriminator=TAG)]  # noqa: UP007
    return TypeAdapter(union)


def check_scheduler_args(scheduler: str, args: Mapping[str, Any]) -> None:
    """Validate ``args`` as ``scheduler``'s arguments (types, bounds, choices, names).

    A known scheduler's arguments are checked by its model alone (the branch
    the tagged union would pick), an unknown name by the union.

    Raises:
        ValueError: one ``scheduler_args.<field>: <rule>`` clause per bad field,
            joined with "; " (one line).
    """
    known = scheduler in SCHEDULER_NAMES
    try:
        if known:
            _model(scheduler).model_validate({**args, TAG: scheduler})
        else:
            _adapter().validate_python({**args, TAG: scheduler})
    except ValidationError as exc:
        allowed = sorted(keyword_arguments(scheduler_class(scheduler)) or set())
        allowed = [a for a in allowed if a not in RESERVED and a not in CODE_ARGUMENTS]
        clauses = []
        for err in exc.errors():
            # The union's locations start with the branch's tag.
            loc = err["loc"] if known else err["loc"][1:]
            field = ".".join(str(p) for p in loc) or "scheduler_args"
            if err["type"] == "extra_forbidden":
                clauses.append(
                    f"scheduler_args.{field}: is not an argument of {scheduler!r}; "
                    f"allowed: {allowed}"
                )
                continue
            msg = err["msg"].removeprefix("Value error, ")
            if err["type"] == "missing":
                rule = ARGUMENTS.get(field)
                msg = f"is required by {scheduler!r}" + (f" ({rule.describe()})" if rule else "")
            clauses.append(f"scheduler_args.{field}: {msg}")
        raise ValueError("; ".join(clauses)) from None


def _strict(model: type[BaseModel]) -> dict[str, Any]:
    """The JSON schema of one model as the API checks it: bounds, choices, no extras."""
    schema = model.model_json_schema()
    for name, prop in schema["properties"].items():
        if name != TAG:
            prop.pop("default", None)  # pydantic's None; see _field_schema
    schema["required"] = [r for r in schema.get("required", []) if r != TAG]
    if not schema["required"]:
        del schema["required"]
    return schema


_LOOSE_DROP = ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "minLength")
# (choices stay: the UI shows them as a drop-down; a wrong one passes the other branches)


def form_schema() -> dict[str, Any]:
    """JSON schema of the form's ``scheduler_args``: one object per scheduler.

    What the Prefect 3.8 UI (the React UI, its default) does with it: an
    ``anyOf``/``oneOf`` becomes a row of toggle buttons labelled with each
    branch's ``title``, with the chosen branch's fields below; it ignores
    ``discriminator`` and pre-selects the branch sharing the most keys with the
    current value. A field with a ``default`` is filled in with it, so only the
    tag has one (it is always sent, and names the scheduler); the other
    defaults are in the descriptions, and the payload holds what was typed.

    The branches only shape the form (types, choices, words): the API's check
    of an ``anyOf`` that no branch passes says only "is not valid under any of
    the given schemas". The bounds are checked by :func:`form_conditions`,
    which picks the one branch that applies, so an error names the field and
    its range. ``anyOf``, not ``oneOf``: a flat ``scheduler_args`` (no tag:
    YAML specs, deployments written before the form) fits several branches.
    """
    branches = []
    for model in argument_models():
        schema = _strict(model)
        schema.pop("required", None)
        schema.pop("additionalProperties", None)
        for prop in schema["properties"].values():
            for key in _LOOSE_DROP:
                prop.pop(key, None)
        # The tag without its enum: with it, a bad value in the chosen branch fails
        # every branch and the API says "not valid under any of the given schemas"
        # instead of naming the field. Its default still fills it in.
        del schema["properties"][TAG]["enum"]
        branches.append(schema)
    return {"anyOf": branches}


def form_conditions(scheduler_property: str = "scheduler") -> dict[str, Any]:
    """An ``if``/``then``/``else`` chain checking ``scheduler_args`` against its scheduler.

    Put on the spec's object schema: when ``spec.scheduler`` or
    ``spec.scheduler_args.scheduler`` is X, ``scheduler_args`` must follow X's
    strict schema (bounds, choices, required, no unknown keys). The Prefect UI
    ignores these keywords; the API's check reports the failing field itself
    ("spec.scheduler_args.max_t: -1 is less than or equal to the minimum of 0").
    """
    # Neither names a scheduler: the spec's default, random.
    models = argument_models()
    chain: dict[str, Any] = {"properties": {"scheduler_args": _strict(models[0])}}
    for name, model in reversed(list(zip(SCHEDULER_NAMES, models, strict=True))):
        named = {"const": name}
        condition = {
            "anyOf": [
                {"properties": {scheduler_property: named}, "required": [scheduler_property]},
                {
                    "properties": {
                        "scheduler_args": {"properties": {TAG: named}, "required": [TAG]}
                    },
                    "required": ["scheduler_args"],
                },
            ]
        }
        link: dict[str, Any] = {
            "if": condition,
            "then": {"properties": {"scheduler_args": _strict(model)}},
        }
        link["else"] = chain
        chain = link
    return chain
