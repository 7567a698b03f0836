#!/usr/bin/env bash
# The main job, end to end on the embedded defaults: install (once), then train a small intent
# classifier on the bundled Banking77 sample with the packaged MiniLM-L6 encoder, evaluate it on
# the held-out test file, predict and explain new texts, export it to ONNX int8 (with a parity
# check), and serve it over HTTP on 127.0.0.1. A few minutes on 2 CPU cores.
#
#   DEMO_SERVE=0 bash scripts/demo.sh   # stop after the self-test requests instead of serving on
#   DEMO_PORT=8001 bash scripts/demo.sh # another port
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export PATH="$PWD/.venv/bin:$PATH"
port="${DEMO_PORT:-8000}"
start=$(date +%s)
set -x
lmforge validate configs/intents.yaml
lmforge train configs/intents.yaml --overwrite
lmforge evaluate runs/intents --data examples/data/test.csv
lmforge predict runs/intents examples/texts.txt -o runs/intents/predictions.jsonl
lmforge explain runs/intents --text "my new card still has not arrived, how long does delivery take?" --html runs/intents/explanation.html
lmforge export runs/intents --format onnx --quantize int8
set +x
head -n 3 runs/intents/predictions.jsonl

lmforge serve runs/intents --backend onnx --port "$port" --log-level warning &
server=$!
trap 'status=$?; kill $server 2>/dev/null || true; wait $server 2>/dev/null || true; exit $status' EXIT
for _ in $(seq 1 120); do
  python -c 'import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=2)' "http://127.0.0.1:$port/ready" 2>/dev/null && break
  kill -0 $server 2>/dev/null || { echo "the server did not start" >&2; exit 1; }
  sleep 0.5
done
python - "$port" <<'PY'
import json, sys, urllib.request
base = f"http://127.0.0.1:{sys.argv[1]}"
def post(path, body):
    req = urllib.request.Request(base + path, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=60) as r:
        return json.loads(r.read())
print("POST /v1/predict ->", json.dumps(post("/v1/predict", {"texts": ["my card never arrived", "I was charged twice for the same purchase"]}))[:300])
e = post("/v1/explain", {"text": "my card never arrived"})
print("POST /v1/explain ->", e["target"], round(e["probability"], 3), [(w["word"], round(w["score"], 3)) for w in e["words"]])
PY
echo "demo finished in $(( $(date +%s) - start )) s (after install); run folder: runs/intents"
if [ "${DEMO_SERVE:-1}" = "0" ]; then exit 0; fi
cat <<MSG

Serving runs/intents (ONNX int8) on http://127.0.0.1:$port  -  API docs: http://127.0.0.1:$port/docs
Try:  curl -s localhost:$port/v1/predict -d '{"texts": ["book a table for two", "what is my balance"]}'
      curl -s localhost:$port/v1/explain -d '{"text": "I lost my card yesterday"}'
Ctrl-C stops the server.
MSG
wait $server
