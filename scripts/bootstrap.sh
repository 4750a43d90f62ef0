#!/usr/bin/env bash
# Creates .venv with Patrol installed (editable) and its test tools, once per pyproject change.
set -euo pipefail
PY=${PYTHON:-python3}
VENV=${VENV:-.venv}

"$PY" -c 'import sys; sys.exit(sys.version_info < (3, 11))' || {
    echo "bootstrap: Patrol needs Python >= 3.11 ($PY is $("$PY" --version 2>&1))" >&2; exit 1; }

if ! "$PY" -m venv --help >/dev/null 2>&1 || ! "$PY" -c 'import ensurepip' 2>/dev/null; then
    echo "bootstrap: installing python3-venv" >&2
    if [ "$(id -u)" -eq 0 ]; then apt-get update -qq && apt-get install -y -qq python3-venv
    else sudo apt-get update -qq && sudo apt-get install -y -qq python3-venv; fi
fi
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --disable-pip-version-check --upgrade pip
"$VENV/bin/python" -m pip install -q --disable-pip-version-check -e ".[dev]"
