#!/usr/bin/env bash
# SetFit for bench/fewshot.py, apart from lmforge's environment.
#
#     bash bench/setfit_env.sh            # SETFIT_VERSION=1.2.0 by default
#
# SetFit and the packages it needs that lmforge's venv lacks (datasets, evaluate, pyarrow, pandas,
# aiohttp, ...) go into bench/.setfit-env/site-packages (gitignored) with `pip install --target --no-deps`.
# torch, transformers, sentence-transformers, scikit-learn, numpy, accelerate, huggingface_hub are NOT
# installed there: bench/setfit_child.py runs on lmforge's own interpreter with
# PYTHONPATH=bench/.setfit-env/site-packages, so SetFit trains on exactly the same torch / transformers /
# sentence-transformers builds as lmforge, and nothing in .venv is added, upgraded or downgraded.
#
# The set to install is what pip would add to .venv for setfit (`pip install --dry-run --report`,
# resolved against the packages .venv already has); if that resolution wants to CHANGE a package
# .venv already has, this script stops and says which: SetFit would then not run on lmforge's pins.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="${PY:-$ROOT/.venv/bin/python}"
SETFIT_VERSION="${SETFIT_VERSION:-1.2.0}"
ENV_DIR="$ROOT/bench/.setfit-env"
# the folder name matters: datasets fingerprints data with dill, which pickles a module whose file is
# neither under sys.prefix nor in a "site-packages" path by value (pyarrow then fails: "Can't pickle
# <class 'MonthDayNano'>"); named site-packages, pyarrow & co. are pickled by reference
SITE="$ENV_DIR/site-packages"

mkdir -p "$ENV_DIR"
REPORT="$ENV_DIR/resolve-report.json"
echo "resolving setfit==$SETFIT_VERSION against $PY's installed packages (dry run, nothing installed)"
"$PY" -m pip install --dry-run --quiet --report "$REPORT" "setfit==$SETFIT_VERSION"

# new packages only: refuse if the resolution would replace anything lmforge's venv already has
"$PY" - "$REPORT" > "$ENV_DIR/requirements.txt" <<'EOF'
import json, sys
from importlib import metadata
report = json.load(open(sys.argv[1]))
clash = []
for item in report["install"]:
    name, version = item["metadata"]["name"], item["metadata"]["version"]
    try:
        have = metadata.version(name)
    except metadata.PackageNotFoundError:
        print(f"{name}=={version}")
        continue
    clash.append(f"{name}: .venv has {have}, setfit's resolution wants {version}")
if clash:
    sys.exit("setfit would change lmforge's pins:\n  " + "\n  ".join(clash))
EOF
echo "installing into $SITE (--no-deps):"
sed 's/^/  /' "$ENV_DIR/requirements.txt"
rm -rf "$SITE"
"$PY" -m pip install --quiet --no-deps --target "$SITE" -r "$ENV_DIR/requirements.txt"

# the check that matters: setfit imports on lmforge's torch/transformers/sentence-transformers
PYTHONPATH="$SITE" "$PY" - <<'EOF'
import setfit, sentence_transformers, torch, transformers, datasets
print(f"ok: setfit {setfit.__version__} (from {setfit.__file__})")
print(f"    torch {torch.__version__}, transformers {transformers.__version__}, "
      f"sentence-transformers {sentence_transformers.__version__}, datasets {datasets.__version__}")
for mod in (torch, transformers, sentence_transformers):
    assert ".setfit-env" not in mod.__file__, mod.__file__
EOF
