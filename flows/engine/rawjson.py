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

__all__ = ["RawJSON", "dumps", "has_raw"]


class RawJSON:
    """JSON text equal to ``json.dumps`` of its parse (default separators).

    Only :func:`dumps` knows it; ``json.dumps`` refuses it (TypeError)
    rather than write it as a string, so a document holding one can only be
    written right or not at all.
    """

    __slots__ = ("text",)

    def __init__(self, text: str) -> None:
        self.text = text

    def __repr__(self) -> str:
        return f"RawJSON({self.text[:40]!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, RawJSON) and other.text == self.text

    def __hash__(self) -> int:
        return hash(self.text)


#: What a RawJSON value is encoded as first, then replaced by its text: a
#: string no JSON text of ours holds (checked: a row that holds it anyway
#: takes the slow path).
_MARK = "\x00rawjson\x00"
_MARK_TEXT = json.dumps(_MARK)


def has_raw(value: Any) -> bool:
    """Whether ``value`` is a dict with a :class:`RawJSON` value (see :func:`dumps`)."""
    return type(value) is dict and any(type(v) is RawJSON for v in value.values())


def dumps(value: Any) -> str:
    """``json.dumps(value)``, with each :class:`RawJSON` value of a dict spliced in.

    Only a dict's own values are looked at (the status document's trial
    rows). The row is encoded by one ``json.dumps`` call with a marker in
    place of each raw value, and the markers replaced by the texts, so the
    result is exactly what ``json.dumps`` writes for the parsed document.
    """
    if type(value) is not dict:
        return json.dumps(value)
    raws = [item for item in value.values() if type(item) is RawJSON]
    if not raws:
        return json.dumps(value)
    text = json.dumps({k: _MARK if type(v) is RawJSON else v for k, v in value.items()})
    pieces = text.split(_MARK_TEXT)
    if len(pieces) != len(raws) + 1:  # the marker in the row itself: item by item
        return _dumps_items(value)
    out = [pieces[0]]
    for raw, piece in zip(raws, pieces[1:], strict=True):
        out.append(raw.text)
        out.append(piece)
    return "".join(out)


def _dumps_items(value: dict[Any, Any]) -> str:
    """:func:`dumps` without the marker: runs of plain items encoded together."""
    parts: list[str] = []
    run: dict[Any, Any] = {}
    for key, item in value.items():
        if type(item) is RawJSON:
            if run:
                parts.append(json.dumps(run)[1:-1])
                run = {}
            parts.append(f"{json.dumps(key if isinstance(key, str) else json.dumps(key))}: "
                         f"{item.text}")
        else:
            run[key] = item
    if run:
        parts.append(json.dumps(run)[1:-1])
    return "{" + ", ".join(parts) + "}"
