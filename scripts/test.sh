#!/usr/bin/env bash
# The test suite: install (once), then every unit and integration test, offline.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# the studio's browser tests drive Debian's Chromium (Playwright's own browser download cannot be reached)
if ! command -v chromium >/dev/null 2>&1 && [ "${LMFORGE_NO_BROWSER:-}" != "1" ]; then
  echo "installing Chromium from the Debian packages for the studio's browser tests ..." >&2
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
  $SUDO apt-get install -y -q chromium >/dev/null 2>&1 || { $SUDO apt-get update -q >/dev/null && $SUDO apt-get install -y -q chromium >/dev/null; }
fi
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
exec .venv/bin/python -m pytest -q "$@"
