"""Prometheus metrics, one registry per app (so several apps can live in one process)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info, generate_latest

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


class ServerMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("lmforge_requests", "HTTP requests by route and status", ["route", "status"], registry=r)
        self.latency = Histogram("lmforge_request_latency_seconds", "request latency by route", ["route"],
                                 buckets=LATENCY_BUCKETS, registry=r)
        self.batch_size = Histogram("lmforge_batch_size", "texts per forward pass", buckets=BATCH_BUCKETS, registry=r)
        self.batch_latency = Histogram("lmforge_batch_latency_seconds", "model time per forward pass",
                                       buckets=LATENCY_BUCKETS, registry=r)
        self.queue_depth = Gauge("lmforge_queue_depth", "texts waiting for the model", registry=r)
        self.texts = Counter("lmforge_predicted_texts", "texts predicted", registry=r)
        self.model = Info("lmforge_model", "the model being served", registry=r)
        self.swaps = Counter("lmforge_model_swaps", "production versions swapped in without a restart", registry=r)
        self.drift = Gauge("lmforge_monitor", "monitoring statistics of recent logged traffic against the version's reference "
                           "(label_psi, confidence_ks, length_ks, oov_rate, feedback_accuracy, warnings)", ["stat"], registry=r)
        self.log_dropped = Gauge("lmforge_prediction_log_dropped", "prediction log rows dropped (queue full or write error)", registry=r)

    def render(self) -> bytes:
        return generate_latest(self.registry)
