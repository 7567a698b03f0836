"""Request and response bodies. Unknown fields are rejected (422)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class PredictRequest(_Strict):
    texts: list[str | tuple[str, str]] = Field(..., description="texts, or [text, text_pair] pairs", min_length=1)


class PredictResponse(BaseModel):
    model_version: str
    predictions: list[dict[str, Any]]


class ExplainRequest(_Strict):
    text: str = Field(..., min_length=1)
    text_pair: str | None = None
    target: str | None = Field(None, description="classification: the label to explain (default: the predicted one)")
    entity: int | None = Field(None, ge=0, description="NER: index of the predicted entity to explain (default 0)")
    steps: int | None = Field(None, ge=1, description="integrated-gradients steps")
    baseline: str = Field("pad", pattern="^(pad|mask)$")


class GenerateRequest(_Strict):
    prompt: str = Field(..., min_length=1, description="the user message (wrapped in the chat template unless chat is false)")
    max_new_tokens: int = Field(128, ge=1, description="tokens to generate at most (the server caps it)")
    temperature: float = Field(0.0, ge=0.0, le=5.0, description="0: greedy; above 0: sampling")
    top_p: float = Field(1.0, gt=0.0, le=1.0, description="nucleus sampling mass")
    stop: list[str] = Field(default_factory=list, max_length=8, description="stop at the first of these strings")
    seed: int | None = Field(None, description="sampling seed, for reproducible samples")
    chat: bool = Field(True, description="wrap the prompt in the model's chat template")
    stream: bool = Field(False, description="send the text as server-sent events while it is generated")


class FeedbackRequest(_Strict):
    prediction_id: str = Field(..., min_length=1, max_length=64, description="the prediction_id a /v1/predict response gave")
    label: str = Field(..., min_length=1, max_length=200, description="the correct label (may be one the model does not know yet)")


class ErrorBody(BaseModel):
    code: str
    message: str
    limit: str | None = None
    value: int | float | None = None


class ErrorResponse(BaseModel):
    error: ErrorBody
