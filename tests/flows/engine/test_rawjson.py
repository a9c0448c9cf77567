"""flows.engine.rawjson: spliced text == ``json.dumps`` of the parsed document."""

from __future__ import annotations

import json
from typing import Any

import pytest

from flows.engine.rawjson import RawJSON, dumps


def _raw(value: Any) -> RawJSON:
    return RawJSON(json.dumps(value))


ROWS: list[dict[Any, Any]] = [
    {"trial_id": "t0", "segments": [{"start": 0, "stop": 1.0}], "started_at": "x"},
    {"segments": [], "a": 1},
    {"a": {"b": [1, 2]}, "segments": [{"m": -0.0, "e": 1e-05}]},
    {"only": [1e+16]},
    {1: [1], "k": "\u00e9", None: {"z": None}, 2.5: True},
    {"a": "\x00rawjson\x00", "segments": [1], "b": ["\x00rawjson\x00"]},  # the marker
]


@pytest.mark.parametrize("row", ROWS)
@pytest.mark.parametrize("raw_keys", [(), ("segments",), "all"])
def test_spliced_text_is_what_json_dumps_writes(row: dict[Any, Any], raw_keys: Any) -> None:
    keys = list(row) if raw_keys == "all" else [k for k in raw_keys if k in row]
    spliced = {k: _raw(v) if k in keys else v for k, v in row.items()}
    assert dumps(spliced) == json.dumps(row)


def test_other_values_are_encoded_as_usual() -> None:
    assert dumps([1, {"a": 2}]) == json.dumps([1, {"a": 2}])
    assert dumps({}) == "{}"


def test_the_standard_encoder_refuses_raw_text() -> None:
    """Never written as a quoted string by an encoder that does not know it."""
    with pytest.raises(TypeError):
        json.dumps({"segments": RawJSON("[]")})
