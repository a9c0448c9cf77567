"""Settings read without pydantic give exactly what pydantic-settings gives (or its error)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from flows.engine.leases import LeaseSettings
from flows.envsettings import EnvSettings
from flows.settings import RungflowSettings

#: Environment values per field type: plain ones (the fast path) and odd ones (pydantic).
VALUES = {
    "float": ["10", "0", "0.5", "3600", "3601", "86400", "86401", "1.5", "1e1", " 5", "5 ",
              "abc", "", "-1", "10.", "007", "inf", "nan", "1_0"],
    "int": ["0", "1", "2", "007", "1000000", "1000001", "x", "1.0", "-3", " 4", ""],
    "bool": ["true", "False", "YES", "0", "1", "2", "", " on", "off", "t", "N"],
    "str": ["", "x", "sqlite:///a b.db", " spaced "],
    "str | None": ["", "x", "null", "None", "a" * 201],
    "Path": ["", "/a", "rel/dir", "~/x"],
}


def outcome(make: Any) -> Any:
    """What ``make()`` gives: its fields, or the first error pydantic reports."""
    try:
        settings = make()
    except ValidationError as exc:
        first = exc.errors()[0]
        return ("error", first["loc"], first["type"], first.get("input"))
    return {name: getattr(settings, name) for name in type_fields(settings)}


def type_fields(settings: Any) -> list[str]:
    cls = type(settings)
    return list(getattr(cls, "model_fields", None) or cls._settings)


@pytest.mark.parametrize("cls", [RungflowSettings, LeaseSettings])
def test_every_value_reads_as_pydantic_reads_it(
    cls: type[EnvSettings], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)  # no ./.env
    for name, (kind, _) in cls._settings.items():
        for value in VALUES[kind]:
            monkeypatch.setenv(f"RUNGFLOW_{name.upper()}", value)
            assert outcome(cls) == outcome(cls._pydantic()), (name, value)
        monkeypatch.delenv(f"RUNGFLOW_{name.upper()}")
    assert outcome(cls) == outcome(cls._pydantic())  # the defaults


def test_names_in_any_case_dotenv_and_keywords(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("rungflow_keep_last", "7")
    monkeypatch.setenv("RUNGFLOW_UNRELATED", "ignored")
    assert RungflowSettings().keep_last == 7
    monkeypatch.setenv("RUNGFLOW_KEEP_LAST", "8")  # the same name twice: pydantic decides
    assert outcome(RungflowSettings) == outcome(RungflowSettings._pydantic())
    monkeypatch.delenv("rungflow_keep_last")
    (tmp_path / ".env").write_text("RUNGFLOW_RETAIN_EVERY=4\n")
    assert RungflowSettings().retain_every == 4
    assert RungflowSettings().keep_last == 8  # the environment wins over ./.env
    for kwargs in ({"lease_timeout": 30, "poll_interval": 0.05}, {"lease_timeout": 0},
                   {"lease_timeout": "12"}, {"worker_host": ""}, {"worker_host": "h"}):
        assert outcome(lambda k=kwargs: LeaseSettings(**k)) == outcome(
            lambda k=kwargs: LeaseSettings._pydantic()(**k)
        ), kwargs


def test_settings_are_plain_mutable_copies() -> None:
    first = RungflowSettings()
    second = first.model_copy()
    assert second == first
    second.keep_last = 99
    assert first.keep_last == 2 and second != first
    assert "keep_last=2" in repr(first)
