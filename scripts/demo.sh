#!/usr/bin/env bash
# The main job, end to end on the embedded defaults: install (once), then train a small intent
# classifier on the bundled Banking77 sample with the packaged MiniLM-L6 encoder, evaluate it on
# the held-out test file, predict and explain new texts, export it to ONNX int8 (with a parity
# check), register it in the model registry (SQLite + a local artefact store under runs/registry),
# promote it, run a continual update with two new intents (replay + gate report), and serve the
# production version over HTTP on 127.0.0.1 with prediction logging, feedback and monitoring.
# A few minutes on 2 CPU cores.
#
#   DEMO_SERVE=0 bash scripts/demo.sh   # stop after the self-test requests instead of serving on
#   DEMO_PORT=8001 bash scripts/demo.sh # another port
#   DEMO_STUDIO=1 bash scripts/demo.sh  # also start the studio (web page) on http://127.0.0.1:8080 (DEMO_STUDIO_PORT)
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

export LMFORGE_REGISTRY="$PWD/runs/registry"
rm -rf "$LMFORGE_REGISTRY" runs/intents-v2 runs/intents-v2-data   # the demo starts a fresh registry each time
set -x
lmforge registry add intents runs/intents
lmforge registry promote intents 1
lmforge update intents --data examples/data/new_intents.csv --output runs/intents-v2
set +x
if lmforge registry promote intents 2; then :; else echo "(the gate refused v2: v1 stays in production; see runs/intents-v2/gate.md)"; fi
lmforge registry list intents

lmforge serve registry:intents --log-texts --port "$port" --log-level warning &
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
p = post("/v1/predict", {"texts": ["my card never arrived", "can I top up with google pay?"]})
print("POST /v1/predict ->", p["model_version"], [(x["label"], round(x["score"], 3)) for x in p["predictions"]])
f = post("/v1/feedback", {"prediction_id": p["predictions"][0]["prediction_id"], "label": "card_arrival"})
print("POST /v1/feedback ->", f)
e = post("/v1/explain", {"text": "my card never arrived"})
print("POST /v1/explain ->", e["target"], round(e["probability"], 3), [(w["word"], round(w["score"], 3)) for w in e["words"]])
PY
# exit code 3 means a check warns (what a cron job or CI step acts on); two requests are "not enough data"
status=0; lmforge monitor intents --since 1h || status=$?
case $status in 0) ;; 3) echo "(monitor: a drift check warns - exit code 3)" ;; *) exit "$status" ;; esac
# which texts to label next (for the studio's Label page)
lmforge suggest runs/intents --pool examples/texts.txt -n 5 -o runs/to_label.jsonl
rm -f runs/to_label.labels.db runs/to_label.labelled.jsonl
echo "demo finished in $(( $(date +%s) - start )) s (after install); run folder: runs/intents, registry: runs/registry"
studio_port="${DEMO_STUDIO_PORT:-8080}"
echo "Look at all of it in the studio: .venv/bin/lmforge studio --runs runs --registry runs/registry --label runs/to_label.jsonl --label registry:intents --port $studio_port"
echo "  then open http://127.0.0.1:$studio_port   (DEMO_STUDIO=1 starts it here)"
if [ "${DEMO_STUDIO:-0}" = "1" ]; then
  lmforge studio --runs runs --registry runs/registry --label runs/to_label.jsonl --label registry:intents --port "$studio_port" &
  studio=$!
  trap 'status=$?; kill $server $studio 2>/dev/null || true; wait 2>/dev/null || true; exit $status' EXIT
fi
if [ "${DEMO_SERVE:-1}" = "0" ]; then
  if [ "${DEMO_STUDIO:-0}" = "1" ]; then wait $studio; fi
  exit 0
fi
cat <<MSG

Serving registry:intents (the production version) on http://127.0.0.1:$port  -  API docs: http://127.0.0.1:$port/docs
Try:  curl -s localhost:$port/v1/predict -d '{"texts": ["book a table for two", "what is my balance"]}'
      curl -s localhost:$port/v1/explain -d '{"text": "I lost my card yesterday"}'
      curl -s localhost:$port/v1/feedback -d '{"prediction_id": "<id from a predict answer>", "label": "card_arrival"}'
In another terminal (LMFORGE_REGISTRY=$LMFORGE_REGISTRY): lmforge registry rollback intents   (the server swaps without restart)
      lmforge monitor intents --html runs/monitor.html
Ctrl-C stops the server.
MSG
wait $server
