#!/usr/bin/env bash
# The main job, end to end on the embedded defaults: install (once), then train a small intent
# classifier on the bundled Banking77 sample with the packaged MiniLM-L6 encoder, evaluate it on
# the held-out test file, and predict a few new texts. A few minutes on 2 CPU cores.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export PATH="$PWD/.venv/bin:$PATH"
start=$(date +%s)
set -x
lmforge validate configs/intents.yaml
lmforge train configs/intents.yaml --overwrite
lmforge evaluate runs/intents --data examples/data/test.csv
lmforge predict runs/intents examples/texts.txt -o runs/intents/predictions.jsonl
set +x
head -n 3 runs/intents/predictions.jsonl
echo "demo finished in $(( $(date +%s) - start )) s (after install); run folder: runs/intents"
