"""Every code block in docs/ runs.

One test per page; its blocks run in order in one fresh directory (so a page
can write a spec in one block and run it in the next), with ``RUNGFLOW_HOME``
in that directory and ``PREFECT_API_URL`` pointing at the session's real
Prefect server (so CLI calls do not each start an ephemeral API).

* ``python`` blocks run in a subprocess of this interpreter;
* ``bash`` blocks run with ``bash -euo pipefail`` and the venv's scripts
  (``rungflow``) first on PATH;
* ``yaml`` blocks are parsed; those that look like experiment specs (``name``
  and ``trainable``) are validated with :func:`flows.spec.load_spec`;
* ``toml`` blocks are parsed.

A block preceded by ``<!-- file: NAME -->`` is also written to ``NAME`` in the
page's directory. A block preceded by ``<!-- not-tested: reason -->`` is
skipped; there may be at most :data:`MAX_NOT_TESTED` such blocks in all the docs,
and every one must give a reason. A block in any other language fails the test,
so nothing slips through untested by accident.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
#: Blocks that cannot run in a test (e.g. ``prefect deploy``, a 15-minute benchmark).
MAX_NOT_TESTED = 5
_FENCE = re.compile(r"^```(\w*)\s*$")
_MARKER = re.compile(r"^<!--\s*(not-tested|file):\s*(.*?)\s*-->\s*$")


@dataclass
class Block:
    page: str
    line: int
    lang: str
    code: str
    not_tested: str | None = None
    file: str | None = None


def parse(path: Path) -> list[Block]:
    """Fenced code blocks of a markdown page with their markers."""
    blocks: list[Block] = []
    lines = path.read_text().splitlines()
    i = 0
    marker: tuple[str, str] | None = None
    while i < len(lines):
        m = _MARKER.match(lines[i])
        if m:
            marker = (m.group(1), m.group(2))
            i += 1
            continue
        f = _FENCE.match(lines[i])
        if f:
            start = i
            body = []
            i += 1
            while i < len(lines) and not lines[i].startswith("```"):
                body.append(lines[i])
                i += 1
            block = Block(path.name, start + 1, f.group(1), "\n".join(body) + "\n")
            if marker and marker[0] == "not-tested":
                block.not_tested = marker[1]
            elif marker:
                block.file = marker[1]
            blocks.append(block)
            marker = None
        elif lines[i].strip():
            marker = None  # a marker applies to the block right after it only
        i += 1
    return blocks


PAGES = sorted(DOCS.glob("*.md"))


def test_docs_exist_and_not_tested_blocks_are_few() -> None:
    assert PAGES, "docs/ has no pages"
    blocks = [b for page in PAGES for b in parse(page)]
    skipped = [b for b in blocks if b.not_tested is not None]
    for b in skipped:
        assert b.not_tested, f"{b.page}:{b.line}: not-tested needs a reason"
    assert len(skipped) <= MAX_NOT_TESTED, (
        f"{len(skipped)} blocks are not tested (at most {MAX_NOT_TESTED}): "
        + ", ".join(f"{b.page}:{b.line}" for b in skipped)
    )
    assert len(blocks) - len(skipped) >= 20, "the docs should show (tested) code"
    for b in blocks:
        assert b.lang in {"python", "bash", "yaml", "toml", "text"}, (
            f"{b.page}:{b.line}: code block language {b.lang!r} has no runner"
        )


def test_readme_links_the_docs() -> None:
    assert "docs/index.md" in (ROOT / "README.md").read_text()


def _env(workdir: Path, api_url: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        RUNGFLOW_HOME=str(workdir / ".rungflow"),
        PREFECT_API_URL=api_url,
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        PREFECT_LOGGING_LEVEL="WARNING",
        PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")])),
        PATH=os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")]),
    )
    for key in ("RUNGFLOW_DATABASE_URL", "RUNGFLOW_CHECKPOINTS", "RUNGFLOW_DATABASE_BLOCK"):
        env.pop(key, None)
    return env


def _run(block: Block, workdir: Path, env: dict[str, str]) -> None:
    where = f"{block.page}:{block.line}"
    if block.lang == "text":
        return  # output samples, not code
    if block.lang == "toml":
        tomllib.loads(block.code)
        return
    if block.lang == "yaml":
        data = yaml.safe_load(block.code)
        if isinstance(data, dict) and {"name", "trainable"} <= set(data):
            import examples.objectives
            import examples.pbt_numpy  # noqa: F401
            from flows.spec import load_spec

            load_spec(data)
        return
    if block.lang == "python":
        cmd = [sys.executable, "-c", block.code]
    else:
        cmd = ["bash", "-euo", "pipefail", "-c", block.code]
    proc = subprocess.run(cmd, cwd=workdir, env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, (
        f"{where} ({block.lang}) exited {proc.returncode}\n--- code\n{block.code}"
        f"--- stdout\n{proc.stdout[-3000:]}\n--- stderr\n{proc.stderr[-3000:]}"
    )


@pytest.mark.parametrize("page", PAGES, ids=[p.name for p in PAGES])
def test_page_code_runs(page: Path, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    blocks = [b for b in parse(page) if b.not_tested is None]
    needs_api = any(b.lang in ("python", "bash") for b in blocks)
    api_url = request.getfixturevalue("prefect_api_url") if needs_api else ""
    env = _env(tmp_path, api_url)
    for block in blocks:
        if block.file:
            (tmp_path / block.file).write_text(block.code)
        _run(block, tmp_path, env)
