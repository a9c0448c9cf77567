"""The CLI's JSON layout: valid JSON, equal once parsed, one row per line."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest

from flows.cli.jsonout import dumps

DOCUMENTS: list[Any] = [
    {},
    [],
    {"a": 1, "rows": [], "n": None},
    {
        "experiment": "x",
        "trials": [
            {"trial_id": "t0000", "segments": [{"start": 0, "stop": 1.0}]},
            {"trial_id": "t0001", "segments": []},
        ],
        "counts": {"paused": 2},
        "best": None,
        "mixed": [1, {"a": 2}],
        "flat": [1, 2.5, "s"],
    },
    [{"trial_id": "t0000", "metrics": {"loss": 0.5}}, {"trial_id": "t0001", "metrics": {}}],
    {3: "int key", True: "bool key", None: "null key", 2.5: "float key"},
    "a string",
    {"nan": math.nan, "inf": math.inf, "unicode": "é✓"},
]


@pytest.mark.parametrize("data", DOCUMENTS)
def test_output_parses_to_what_the_standard_encoder_writes(data: Any) -> None:
    text = dumps(data)
    assert text.endswith("\n")
    assert json.loads(text, parse_constant=str) == json.loads(json.dumps(data), parse_constant=str)


def test_one_row_per_line() -> None:
    rows = [{"trial_id": f"t{i:04d}", "config": {"x": i / 3}} for i in range(5)]
    lines = dumps({"experiment": "x", "trials": rows, "counts": {"paused": 5}}).splitlines()
    assert lines[0] == "{" and lines[-1] == "}"
    assert lines[1] == '  "experiment": "x",'
    assert lines[2] == '  "trials": ['
    assert [json.loads(line.rstrip(",")) for line in lines[3:8]] == rows
    assert lines[8:10] == ["  ],", '  "counts": {"paused": 5}']
    exported = dumps(rows).splitlines()
    assert len(exported) == len(rows) + 2
