"""The baseline for bench/serve_load.py: a model endpoint written the way most tutorials write it —
a FastAPI route that calls a `transformers.pipeline` for each request. Same request and response
shape as lmforge's /v1/predict, so the load generator treats both alike.

    python bench/naive_server.py --model runs/<name>/model --port 8100
"""

from __future__ import annotations

import argparse
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import uvicorn
from fastapi import FastAPI
from pydantic import BaseModel
from transformers import pipeline


class PredictRequest(BaseModel):
    texts: list[str]


def build(model_dir: str) -> FastAPI:
    classifier = pipeline("text-classification", model=model_dir, tokenizer=model_dir, device=-1)
    app = FastAPI()

    @app.get("/ready")
    def ready():
        return {"status": "ready"}

    @app.post("/v1/predict")
    def predict(request: PredictRequest):
        return {"predictions": classifier(request.texts)}

    return app


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", required=True)
    parser.add_argument("--port", type=int, default=8100)
    args = parser.parse_args()
    uvicorn.run(build(args.model), host="127.0.0.1", port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
