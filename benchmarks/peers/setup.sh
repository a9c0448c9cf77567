#!/usr/bin/env bash
# Create the peer-benchmark venv (never the project's runtime venv): rungflow
# itself plus Ray Tune, Syne Tune, Optuna and matplotlib. Peers that fail to
# install are reported and skipped by run.py, not fatal.
#
# Usage: bash benchmarks/peers/setup.sh [VENV_DIR]   (default .bench-venv
# or $RUNGFLOW_BENCH_VENV)
set -uo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
VENV="${1:-${RUNGFLOW_BENCH_VENV:-.bench-venv}}"
PY="${PYTHON:-python3.11}"
command -v "$PY" >/dev/null 2>&1 || PY=python3
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
"$VENV/bin/python" -m pip install --quiet --upgrade pip
# rungflow with its 'bench' extra (optuna, matplotlib, scikit-learn).
"$VENV/bin/python" -m pip install --quiet -e "$ROOT[bench]" || exit 1
# Each peer on its own line so that one failure does not hide the others.
for peer in 'ray[tune]' 'syne-tune'; do
  if ! "$VENV/bin/python" -m pip install --quiet "$peer"; then
    echo "setup.sh: could not install $peer; run.py will skip it" >&2
  fi
done
"$VENV/bin/python" - <<'PY'
import importlib
for name in ("optuna", "ray.tune", "syne_tune", "matplotlib", "sklearn", "flows"):
    try:
        mod = importlib.import_module(name)
        print(f"{name:12} {getattr(mod, '__version__', 'ok')}")
    except Exception as exc:  # report, do not fail: run.py skips missing peers
        print(f"{name:12} MISSING ({type(exc).__name__}: {exc})")
PY
