"""Server settings: every limit the API enforces, with its default. `lmforge serve` takes its
options' defaults and help from these fields, so each default is written here only."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class ServeSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    host: str = Field("127.0.0.1", description="interface to bind (loopback by default)")
    port: int = Field(8000, ge=0, le=65535, description="TCP port")
    max_batch_size: int = Field(32, ge=1, description="texts gathered into one forward pass")
    max_wait_ms: float = Field(5.0, ge=0, description="milliseconds the first request of a batch waits for others to batch with")
    max_queue: int = Field(1024, ge=1, description="texts waiting for the model before requests get 503")
    max_texts: int = Field(64, ge=1, description="texts per /v1/predict request")
    max_chars: int = Field(2000, ge=1, description="characters per text")
    max_body_bytes: int = Field(1_000_000, ge=1, description="request body size")
    max_prompt_chars: int = Field(8000, ge=1, description="characters per /v1/generate prompt")
    max_new_tokens: int = Field(512, ge=1, description="the most tokens one /v1/generate request may ask for")
    continuous_rows: int = Field(16, ge=0, le=256, description="decoders: greedy /v1/generate requests decoding together in one continuous batch, a finished one replaced by the next at once; 0: greedy streams arriving together decode as one static batch")
    explain_steps: int = Field(50, ge=2, description="integrated-gradients steps when a request names none")
    max_explain_steps: int = Field(300, ge=2)
    api_key: str | None = Field(None, repr=False, description="when set, /v1/* and /metrics need 'Authorization: Bearer <key>'")
    graceful_timeout_s: float = Field(30.0, ge=0, description="on shutdown, how long in-flight requests may take")
    body_timeout_s: float = Field(10.0, gt=0, description="seconds a request body may take to arrive; then 408 and the connection is closed")
    header_timeout_s: float = Field(10.0, gt=0, description="seconds a connection may take to send a request line and headers; then it is closed")
