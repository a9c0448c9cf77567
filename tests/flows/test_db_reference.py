"""``--db env:VAR`` / ``block:NAME``: a database URL by reference, so no password is typed.

The block case uses a real Prefect ``Secret`` block on the session's test API.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from flows.settings import DatabaseReferenceError, get_settings, resolve_database_reference


def test_literal_urls_pass_through() -> None:
    assert resolve_database_reference("sqlite:///x.db") == "sqlite:///x.db"


def test_env_reference(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'r.db'}"
    monkeypatch.setenv("MY_RUNGFLOW_DB", url)
    monkeypatch.setenv("RUNGFLOW_DATABASE_URL", "env:MY_RUNGFLOW_DB")
    assert get_settings().resolved_database_url == url
    monkeypatch.delenv("MY_RUNGFLOW_DB")
    with pytest.raises(DatabaseReferenceError, match="'MY_RUNGFLOW_DB' is not set"):
        get_settings().resolved_database_url  # noqa: B018
    monkeypatch.setenv("MY_RUNGFLOW_DB", "env:OTHER")
    with pytest.raises(DatabaseReferenceError, match="another reference"):
        resolve_database_reference("env:MY_RUNGFLOW_DB")
    with pytest.raises(DatabaseReferenceError, match="not set"):
        resolve_database_reference("env:")


@pytest.mark.usefixtures("prefect_harness")
def test_block_reference(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from prefect.blocks.system import Secret

    url = f"sqlite:///{tmp_path / 'b.db'}"
    Secret(value=url).save("rungflow-test-db-ref", overwrite=True)
    monkeypatch.setenv("RUNGFLOW_DATABASE_URL", "block:rungflow-test-db-ref")
    assert get_settings().resolved_database_url == url
    with pytest.raises(DatabaseReferenceError, match="'rungflow-test-no-such-block'"):
        resolve_database_reference("block:rungflow-test-no-such-block")
