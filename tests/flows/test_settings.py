"""Settings are read as the environment is now, even when read again unchanged."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from flows.engine.leases import LeaseSettings
from flows.settings import get_settings, read_settings


def test_settings_follow_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RUNGFLOW_KEEP_LAST", "3")
    assert get_settings().keep_last == 3
    assert get_settings().keep_last == 3
    monkeypatch.setenv("RUNGFLOW_KEEP_LAST", "5")
    assert get_settings().keep_last == 5
    monkeypatch.delenv("RUNGFLOW_KEEP_LAST")
    assert get_settings().keep_last == 2
    monkeypatch.setenv("rungflow_keep_last", "7")  # pydantic-settings ignores the case
    assert get_settings().keep_last == 7


def test_settings_follow_the_dotenv_file_and_the_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("RUNGFLOW_LEASE_TIMEOUT", raising=False)
    monkeypatch.chdir(tmp_path)
    assert read_settings(LeaseSettings).lease_timeout == 30.0
    (tmp_path / ".env").write_text("RUNGFLOW_LEASE_TIMEOUT=12\n")
    assert read_settings(LeaseSettings).lease_timeout == 12.0
    (tmp_path / ".env").write_text("RUNGFLOW_LEASE_TIMEOUT=9.5\n")
    assert read_settings(LeaseSettings).lease_timeout == 9.5
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert read_settings(LeaseSettings).lease_timeout == 30.0
    assert os.getcwd() == str(elsewhere)


def test_each_reader_gets_its_own_copy() -> None:
    first = get_settings()
    first.keep_last = 99
    assert get_settings().keep_last != 99
