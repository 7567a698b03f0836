"""What a served classifier records for the lifecycle: each sampled prediction queued for the
prediction log (never blocking the response), and the monitoring statistics of recent logged
traffic as Prometheus gauges."""

from __future__ import annotations

import time
import uuid


def log_predictions(prediction_log, loaded, texts: list, results: list[dict], latency_ms: float) -> list[dict]:
    """Queue the sampled predictions of one request (never blocks) and give each logged one its id."""
    from ..lifecycle.examples import oov_rate, words
    from ..lifecycle.reference import label_and_confidence

    out = []
    for text, result in zip(texts, results):
        label, confidence = label_and_confidence(result)
        if label is None or not prediction_log.sampled():
            out.append(result)
            continue
        first = text if isinstance(text, str) else text[0]
        whole = text if isinstance(text, str) else "\n".join(text)
        tokens = words(first)
        prediction_id = uuid.uuid4().hex
        logged = prediction_log.record({"id": prediction_id, "version": loaded.registry_version, "version_tag": loaded.version_tag,
                                        "label": label, "confidence": confidence, "latency_ms": round(latency_ms, 3),
                                        "length": len(tokens), "oov": round(oov_rate(tokens, loaded.vocab), 4) if loaded.vocab else None,
                                        "text": whole})
        out.append({**result, "prediction_id": prediction_id} if logged else result)
    return out


class DriftGauges:
    """Monitoring statistics of recent logged traffic as Prometheus gauges, recomputed at most every
    `every_s` seconds when /metrics is scraped (off the event loop)."""

    def __init__(self, prediction_log, slot, *, every_s: float = 30.0, window_s: float = 24 * 3600, limit: int = 5000):
        self.log, self.slot, self.every_s, self.window_s, self.limit = prediction_log, slot, every_s, window_s, limit
        self.metrics = None
        self._at = float("-inf")

    async def refresh(self) -> None:
        if self.metrics is None or time.monotonic() - self._at < self.every_s:
            return
        self._at = time.monotonic()
        from starlette.concurrency import run_in_threadpool

        values = await run_in_threadpool(self.compute)
        for key, value in values.items():
            self.metrics.drift.labels(key).set(value)
        self.metrics.log_dropped.set(self.log.dropped)

    def compute(self) -> dict[str, float]:
        from ..lifecycle.predlog import feedback_since, predictions_since
        from ..lifecycle import build_report
        from ..lifecycle.drift import gauges

        loaded = self.slot.current
        if loaded.reference is None:
            return {}
        since = time.time() - self.window_s
        rows = predictions_since(self.log.db_path, self.log.model, since, version=loaded.registry_version, limit=self.limit)
        feedback = feedback_since(self.log.db_path, self.log.model, since, version=loaded.registry_version)
        return gauges(build_report(loaded.reference, rows, feedback, model=self.log.model, version=loaded.version_tag))
