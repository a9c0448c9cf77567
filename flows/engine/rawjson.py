"""JSON text that an encoder writes as it is, and the encoder that does.

``rungflow status --json`` at 100k results prints 100k segment documents.
SQL puts each together as JSON text already in ``json.dumps``'s layout (see
:func:`storage.projections.read_status_view`); decoding them into dicts only
for ``json.dumps`` to encode them again was most of the command's time. A
:class:`RawJSON` value carries such text through the status document, and
:func:`dumps` splices it in where ``json.dumps`` would have written its parse.
"""

from __future__ import annotations

import json
from typing import Any

__all__ = ["RawJSON", "dumps"]


class RawJSON(str):
    """JSON text equal to ``json.dumps`` of its parse (default separators).

    Only :func:`dumps` knows it: ``json.dumps`` would quote it as a string,
    so it never leaves the code that asked for it.
    """

    __slots__ = ()


def dumps(value: Any) -> str:
    """``json.dumps(value)``, with each :class:`RawJSON` value of a dict spliced in.

    Only a dict's own values are looked at (the status document's trial
    rows); the runs of other items between them are encoded by one
    ``json.dumps`` call each, so the text is exactly what ``json.dumps``
    writes for the parsed document.
    """
    if not isinstance(value, dict) or not any(type(v) is RawJSON for v in value.values()):
        return json.dumps(value)
    parts: list[str] = []
    run: dict[Any, Any] = {}
    for key, item in value.items():
        if type(item) is RawJSON:
            if run:
                parts.append(json.dumps(run)[1:-1])
                run = {}
            parts.append(f"{json.dumps(key if isinstance(key, str) else json.dumps(key))}: "
                         f"{item}")
        else:
            run[key] = item
    if run:
        parts.append(json.dumps(run)[1:-1])
    return "{" + ", ".join(parts) + "}"
