"""The HTTP API: FastAPI app, dynamic micro-batching, limits, auth and Prometheus metrics."""
