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


class ErrorBody(BaseModel):
    code: str
    message: str
    limit: str | None = None
    value: int | float | None = None


class ErrorResponse(BaseModel):
    error: ErrorBody
