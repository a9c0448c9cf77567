"""Settings read from ``RUNGFLOW_*`` variables, with pydantic only when a value needs it.

Every command reads settings (:class:`flows.settings.RungflowSettings`, and
:class:`flows.engine.leases.LeaseSettings` wherever liveness is judged),
yet ``pydantic-settings`` costs ~25 ms of CPU to import and to build its
models: a tenth of ``rungflow list``. An :class:`EnvSettings` subclass
declares its fields once, with :func:`setting`; constructing it reads the
environment as ``pydantic-settings`` would (prefix ``RUNGFLOW_``, names in any
case, unknown names ignored, keyword arguments first) and parses plain values
itself: a decimal number within the bounds, a boolean word, a string. Anything
else (a value that does not parse that simply, the same name set in two cases,
a ``./.env`` file) goes through a ``pydantic-settings`` model built from the
same declarations, so what is accepted, the values and the errors (a pydantic
``ValidationError``) are exactly pydantic's. ``tests/flows/test_envsettings.py``
checks both paths agree.
"""

from __future__ import annotations

import copy
import inspect
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Self

__all__ = ["PREFIX", "EnvSettings", "Setting", "setting"]

#: Prefix of every rungflow variable (matched in any case).
PREFIX = "RUNGFLOW_"

_INT = re.compile(r"0|[1-9][0-9]*")
_FLOAT = re.compile(r"(?:0|[1-9][0-9]*)(?:\.[0-9]+)?")
_TRUE = frozenset({"1", "on", "t", "true", "y", "yes"})
_FALSE = frozenset({"0", "off", "f", "false", "n", "no"})
#: The annotations a setting may have, and the type pydantic validates it as.
_KINDS: dict[str, Any] = {
    "str": str,
    "str | None": str | None,
    "int": int,
    "float": float,
    "bool": bool,
    "Path": Path,
}


class _Fallback(Exception):
    """A value the fast path does not parse: pydantic decides."""


@dataclass(frozen=True)
class Setting:
    """One field: its default and pydantic's ``Field`` constraints."""

    default: Any
    gt: float | None = None
    ge: float | None = None
    le: float | None = None
    min_length: int | None = None
    max_length: int | None = None

    def constraints(self) -> dict[str, Any]:
        return {k: v for k, v in vars(self).items() if k != "default" and v is not None}


def setting(default: Any, **constraints: Any) -> Any:
    """Declare a field of an :class:`EnvSettings` (constraints as pydantic's ``Field``)."""
    return Setting(default, **constraints)


class EnvSettings:
    """Base of rungflow's settings classes (see the module docstring).

    Subclasses annotate each field with one of ``str``, ``str | None``,
    ``int``, ``float``, ``bool`` or ``Path`` and give it ``= setting(...)``.
    ``Cls(**values)`` reads the environment, ``values`` winning over it;
    invalid input raises ``pydantic.ValidationError``.
    """

    _settings: ClassVar[dict[str, tuple[str, Setting]]] = {}
    _model: ClassVar[type[Any] | None] = None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        fields = dict(cls._settings)
        for name, annotation in inspect.get_annotations(cls).items():
            declared = cls.__dict__.get(name)
            if isinstance(declared, Setting):
                # A string under `from __future__ import annotations`, else a type.
                kind = annotation if isinstance(annotation, str) else getattr(
                    annotation, "__name__", str(annotation))
                if kind not in _KINDS:
                    raise TypeError(f"{cls.__name__}.{name}: unsupported type {kind}")
                fields[name] = (kind, declared)
        cls._settings = fields
        cls._model = None

    def __init__(self, **values: Any) -> None:
        try:
            parsed = self._fast(values)
        except _Fallback:
            model = type(self)._pydantic()(**values)
            parsed = {name: getattr(model, name) for name in self._settings}
        vars(self).update(parsed)

    def model_copy(self) -> Self:
        """A copy (the name pydantic gives it; :func:`flows.settings.read_settings` uses it)."""
        return copy.copy(self)

    def __repr__(self) -> str:
        shown = ", ".join(f"{name}={getattr(self, name)!r}" for name in self._settings)
        return f"{type(self).__name__}({shown})"

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and vars(other) == vars(self)

    __hash__ = None  # type: ignore[assignment]  # mutable, like a pydantic model

    # ------------------------------------------------------------ fast path
    def _fast(self, values: Mapping[str, Any]) -> dict[str, Any]:
        """Every field parsed without pydantic, or :class:`_Fallback`."""
        if os.path.exists(".env"):  # pydantic-settings reads ./.env: leave it to it
            raise _Fallback
        env: dict[str, str] = {}
        for key, value in os.environ.items():
            if key[: len(PREFIX)].upper() == PREFIX:
                name = key[len(PREFIX) :].lower()
                if name in env:  # one name in two cases: which wins is pydantic's call
                    raise _Fallback
                env[name] = value
        parsed = {}
        for name, (kind, spec) in self._settings.items():
            if name in values:
                value = _python_value(kind, values[name])
            elif name in env:
                value = _env_value(kind, env[name])
            else:
                parsed[name] = copy.copy(spec.default)
                continue
            _check(value, spec)
            parsed[name] = value
        if set(values) - set(self._settings):
            raise _Fallback  # pydantic ignores or refuses them: its call
        return parsed

    @classmethod
    def _pydantic(cls) -> type[Any]:
        """The ``pydantic-settings`` model of the same fields (built once per class)."""
        if cls._model is None:
            from pydantic import Field
            from pydantic_settings import BaseSettings, SettingsConfigDict

            namespace: dict[str, Any] = {
                "__annotations__": {name: _KINDS[kind] for name, (kind, _) in
                                    cls._settings.items()},
                "__module__": cls.__module__,
                "model_config": SettingsConfigDict(
                    env_prefix=PREFIX, env_file=".env", extra="ignore"
                ),
            }
            for name, (_, spec) in cls._settings.items():
                namespace[name] = Field(default=spec.default, **spec.constraints())
            cls._model = type(cls.__name__, (BaseSettings,), namespace)
        return cls._model


def _env_value(kind: str, text: str) -> Any:
    """``text`` (from the environment) as ``kind``, if it is plainly one."""
    if kind in ("str", "str | None"):
        return text
    if kind == "Path":
        if not text:
            raise _Fallback
        return Path(text)
    if kind == "bool":
        word = text.lower()
        if word in _TRUE:
            return True
        if word in _FALSE:
            return False
        raise _Fallback
    if kind == "int" and _INT.fullmatch(text):
        return int(text)
    if kind == "float" and _FLOAT.fullmatch(text):
        return float(text)
    raise _Fallback


def _python_value(kind: str, value: Any) -> Any:
    """A keyword argument as ``kind``, if it plainly is one."""
    if kind == "str | None" and value is None:
        return None
    if kind in ("str", "str | None") and isinstance(value, str):
        return value
    if kind == "Path" and isinstance(value, Path):
        return value
    if kind == "bool" and isinstance(value, bool):
        return value
    if kind == "int" and type(value) is int:
        return value
    if kind == "float" and type(value) in (int, float) and value == value:  # not NaN
        return float(value)
    raise _Fallback


def _check(value: Any, spec: Setting) -> None:
    """Within ``spec``'s bounds, or :class:`_Fallback` (pydantic words the error)."""
    if value is None:
        return
    if isinstance(value, str):
        if (spec.min_length is not None and len(value) < spec.min_length) or (
            spec.max_length is not None and len(value) > spec.max_length
        ):
            raise _Fallback
        return
    if isinstance(value, (int, float)) and (
        (spec.gt is not None and not value > spec.gt)
        or (spec.ge is not None and not value >= spec.ge)
        or (spec.le is not None and not value <= spec.le)
    ):
        raise _Fallback
