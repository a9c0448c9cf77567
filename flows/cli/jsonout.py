"""The JSON the CLI prints: one row per line, encoded at C speed.

``json.dumps(data, indent=2)`` runs Python's pure-Python encoder (the C
encoder only serves ``indent=None``): at 10,000 trials and 100,000 segments
that is seconds of ``rungflow status --json`` or ``rungflow export``, and
the text is ~60% longer. The layout here keeps the output readable and
greppable: the top-level object's keys (or the top-level list's elements)
one per line, each list of objects or lists one element per line (a trial
row, an exported record), and every element compact on its line. Each piece
is encoded by the C encoder, so the whole is valid JSON equal, once parsed,
to ``json.dumps(data)``. A row's :class:`~flows.engine.rawjson.RawJSON`
values (the segments of ``status``) are written as they are.
"""

from __future__ import annotations

import json
from typing import Any

from flows.engine import rawjson

__all__ = ["dumps"]


def dumps(data: Any) -> str:
    """``data`` as JSON text, one row per line (see the module docstring), newline-ended."""
    if isinstance(data, dict):
        items = [f"  {_key(k)}: {_value(v)}" for k, v in data.items()]
        return "{\n" + ",\n".join(items) + "\n}\n" if items else "{}\n"
    if isinstance(data, list):
        return _rows(data, "") + "\n"
    return json.dumps(data) + "\n"


def _key(key: Any) -> str:
    """An object key as ``json.dumps`` writes it (1 -> "1", True -> "true")."""
    return json.dumps(key if isinstance(key, str) else json.dumps(key))


def _value(value: Any) -> str:
    """A top-level value: a list of containers one element per line, else compact."""
    if isinstance(value, list) and value and all(isinstance(v, (dict, list)) for v in value):
        return _rows(value, "  ")
    return json.dumps(value)


def _rows(values: list[Any], indent: str) -> str:
    if not values:
        return "[]"
    inner = indent + "  "
    # A status trial row's segments arrive as JSON text (every row's, so the
    # first row tells; json.dumps refuses a RawJSON it would meet anyway).
    encode = rawjson.dumps if rawjson.has_raw(values[0]) else json.dumps
    return "[\n" + ",\n".join(inner + encode(v) for v in values) + f"\n{indent}]"
