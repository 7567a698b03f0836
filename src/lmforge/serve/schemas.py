"""Request and response bodies.

Requests are validated strictly, each problem a 422 naming the field: unknown fields, text that is
not valid Unicode, and numbers of the wrong kind (`true`, `2.0` or `"2"` where an integer belongs).
Response models document what every route returns; their fields are declared in the order the
server has always sent them, so typing the responses changed no client's bytes.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import (BaseModel, BeforeValidator, ConfigDict, Field, StrictBool, StrictInt, ValidationError, WrapValidator,
                      field_validator)
from pydantic_core import PydanticCustomError

MAX_SEED = 2**63 - 1  # torch.manual_seed's range
MIN_TEMPERATURE = 1e-4  # logits divided by a smaller one can overflow to inf, and sampling then fails


def unicode_problem(value: Any) -> str | None:
    """Why `value` (a string, or a list of strings) cannot be UTF-8 encoded, else None. JSON may
    carry lone UTF-16 surrogates (`"\\ud800"`, or the raw bytes ED A0 80, which Python's JSON
    decoder lets through); no tokenizer can encode them."""
    parts = value if isinstance(value, (list, tuple)) else [value]
    for n, part in enumerate(parts):
        if not isinstance(part, str):
            continue
        try:
            part.encode("utf-8")
        except UnicodeEncodeError as err:
            where = f"part {n + 1} " if isinstance(value, (list, tuple)) else ""
            return (f"{where}contains a lone surrogate (U+{ord(part[err.start]):04X}) at character {err.start}, "
                    "which is not valid Unicode; send UTF-8 text")
    return None


def _valid_unicode(value: Any) -> Any:
    problem = unicode_problem(value)
    if problem:
        raise PydanticCustomError("invalid_unicode", problem)
    return value


def _text_or_pair(value: Any, handler) -> Any:
    _valid_unicode(value)
    try:
        return handler(value)
    except ValidationError:  # one message instead of one per union branch
        raise PydanticCustomError("text_item", "give a string, or a [text, text_pair] pair of strings") from None


# Checked before pydantic's own string checks, so every field reports bad Unicode the same way.
Text = Annotated[str, BeforeValidator(_valid_unicode)]
TextItem = Annotated[str | tuple[str, str], WrapValidator(_text_or_pair)]
Number = Annotated[float, Field(strict=True, allow_inf_nan=False)]  # strict floats still accept integers


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


# -- requests ------------------------------------------------------------------------------------
class PredictRequest(_Strict):
    model_config = ConfigDict(json_schema_extra={"examples": [{"texts": ["book a table for two", "what is my balance"]}]})

    texts: list[TextItem] = Field(..., description="texts, or [text, text_pair] pairs", min_length=1)


class ExplainRequest(_Strict):
    model_config = ConfigDict(json_schema_extra={"examples": [{"text": "my card never arrived", "steps": 50}]})

    text: Text = Field(..., min_length=1)
    text_pair: Text | None = None
    target: Text | None = Field(None, description="classification: the label to explain (default: the predicted one)")
    entity: StrictInt | None = Field(None, ge=0, description="NER: index of the predicted entity to explain (default 0)")
    steps: StrictInt | None = Field(None, ge=2, description="integrated-gradients steps (at least 2; the server caps it)")
    baseline: str = Field("pad", pattern="^(pad|mask)$")


class GenerateRequest(_Strict):
    model_config = ConfigDict(json_schema_extra={"examples": [{"prompt": "Say hello.", "max_new_tokens": 32}]})

    prompt: Text = Field(..., min_length=1, description="the user message (wrapped in the chat template unless chat is false)")
    max_new_tokens: StrictInt = Field(128, ge=1, description="tokens to generate at most (the server caps it)")
    temperature: Number = Field(0.0, ge=0.0, le=5.0, description=f"0: greedy; from {MIN_TEMPERATURE:g}: sampling")
    top_p: Number = Field(1.0, gt=0.0, le=1.0, description="nucleus sampling mass")
    stop: list[Annotated[Text, Field(min_length=1)]] = Field(default_factory=list, max_length=8,
                                                           description="stop at the first of these strings")
    seed: StrictInt | None = Field(None, ge=0, le=MAX_SEED, description="sampling seed, for reproducible samples")
    chat: StrictBool = Field(True, description="wrap the prompt in the model's chat template")
    stream: StrictBool = Field(False, description="send the text as server-sent events while it is generated")

    @field_validator("temperature")
    @classmethod
    def _greedy_or_sampling(cls, value: float) -> float:
        if 0 < value < MIN_TEMPERATURE:
            raise PydanticCustomError("temperature_too_small", f"give 0 for greedy decoding, or at least {MIN_TEMPERATURE:g} to sample")
        return value


class FeedbackRequest(_Strict):
    prediction_id: Text = Field(..., min_length=1, max_length=64, description="the prediction_id a /v1/predict response gave")
    label: Text = Field(..., min_length=1, max_length=200, description="the correct label (may be one the model does not know yet)")


# -- responses -----------------------------------------------------------------------------------
class _Response(BaseModel):
    # keys the model code adds later are passed on to clients, after the declared ones, not dropped
    model_config = ConfigDict(extra="allow")


class ClassPrediction(_Response):
    """Single-label classification."""

    label: str = Field(..., description="the most probable label")
    score: float = Field(..., description="its probability")
    probabilities: dict[str, float] = Field(..., description="every label's probability")
    prediction_id: str | None = Field(None, description="registry:NAME serving: the id /v1/feedback takes (logged predictions only)")


class MultiLabelPrediction(_Response):
    """Multi-label classification: every label whose probability reaches the threshold."""

    labels: list[str]
    probabilities: dict[str, float]
    prediction_id: str | None = Field(None, description="registry:NAME serving: the id /v1/feedback takes (logged predictions only)")


class Entity(_Response):
    type: str = Field(..., description="entity type, e.g. PER")
    text: str = Field(..., description="the entity's text, text[start:end]")
    start: int = Field(..., description="character offset where it starts")
    end: int = Field(..., description="character offset where it ends (exclusive)")
    score: float = Field(..., description="mean probability of its tags")


class EntityPrediction(_Response):
    """Token classification (NER)."""

    tags: list[str] | None = Field(None, description="/v1/explain only: the predicted tag of every word")
    entities: list[Entity]


Prediction = ClassPrediction | MultiLabelPrediction | EntityPrediction


class PredictResponse(_Response):
    model_config = ConfigDict(json_schema_extra={"examples": [
        {"model_version": "intents-3f2a9c1b7d40", "predictions": [
            {"label": "book_table", "score": 0.97, "probabilities": {"book_table": 0.97, "balance": 0.03}}]},
        {"model_version": "ner-8b1d2e6f0a93", "predictions": [
            {"entities": [{"type": "PER", "text": "alice", "start": 0, "end": 5, "score": 0.98}]}]},
    ]})

    model_version: str
    predictions: list[Prediction] = Field(..., description="one per text, in order")


class TokenScore(_Response):
    token: str
    start: int
    end: int
    score: float
    segment: int | None = Field(None, description="pair classifiers: 0 for text, 1 for text_pair")


class WordScore(_Response):
    word: str
    start: int
    end: int
    segment: int | None = Field(None, description="pair classifiers: 0 for text, 1 for text_pair")
    score: float


class ExplainedEntity(Entity):
    index: int = Field(..., description="its position among the predicted entities")


class ExplainResponse(_Response):
    model_version: str
    target: str | ExplainedEntity = Field(..., description="the explained label (classification) or entity (NER)")
    probability: float
    prediction: Prediction
    tokens: list[TokenScore]
    words: list[WordScore]
    delta: float | None = Field(..., description="integrated gradients' convergence delta")
    f_x: float | None
    f_baseline: float | None
    steps: int
    method: str
    baseline: str
    truncated: bool
    text: str
    text_pair: str | None


class GenerateResponse(_Response):
    model_version: str
    text: str
    tokens: int | None = Field(None, description="tokens generated")
    finish_reason: str | None = Field(None, description="stop (end token or stop string) or length (max_new_tokens)")


class StreamPiece(_Response):
    text: str = Field(..., description="the next piece of generated text")


class StreamDone(_Response):
    done: bool
    pieces: int
    model_version: str


class StreamError(_Response):
    error: str = Field(..., description="why generation stopped early")


# One server-sent event of a streamed /v1/generate, as OpenAPI 3.1 describes an event: its `data` is
# JSON holding one of the three kinds.
STREAM_EVENT = {
    "type": "object", "required": ["data"],
    "properties": {"event": {"type": "string"}, "data": {
        "type": "string", "contentMediaType": "application/json",
        "contentSchema": {"oneOf": [m.model_json_schema() for m in (StreamPiece, StreamDone, StreamError)]}}},
}


class FeedbackResponse(_Response):
    prediction_id: str
    predicted: str | None
    label: str
    version: int | None
    model_version: str | None
    stored: bool
    new_label: bool = Field(..., description="the label is not one the served model knows")


class ModelInfo(_Response):
    name: str
    version: str
    task: str
    labels: list[str]
    multi_label: bool
    threshold: float | None = Field(None, description="multi-label: a label is predicted when its probability is at least this")
    text_pairs: bool
    base_model: str
    method: str
    backend: str
    max_length: int
    trained: Any = Field(None, description="when training finished")
    metrics: dict[str, Any]


class GeneratorInfo(_Response):
    version: str
    task: str
    source: str
    chat_template: bool | None
    limits: dict[str, int]


class Health(_Response):
    status: str


class Ready(_Response):
    status: str
    model_version: str


class ErrorBody(_Response):
    code: str = Field(..., description="machine-readable kind, e.g. invalid_request, limit_exceeded, body_timeout")
    message: str = Field(..., description="what was wrong, naming the field or limit, and what to do")
    limit: str | None = Field(None, description="the server setting that was exceeded")
    value: int | float | None = Field(None, description="that setting's value")
    request_id: str | None = Field(None, description="500 only: look for this id in the server log")


class ErrorResponse(_Response):
    model_config = ConfigDict(json_schema_extra={"examples": [
        {"error": {"code": "limit_exceeded", "message": "texts[0] has 2400 characters; at most 2000 are allowed",
                   "limit": "max_chars", "value": 2000}}]})

    error: ErrorBody


ERROR_DESCRIPTIONS: dict[int, str] = {
    401: "missing or wrong API key (when the server has one)",
    408: "the request body did not arrive within body_timeout_s",
    413: "a limit was exceeded; the error names it and its value",
    422: "the body is not valid JSON or does not match the schema; the error names the field",
    500: "unexpected failure; the cause is in the server log under request_id",
    503: "too many texts waiting (max_queue), or the model is not ready yet",
}


def error_doc(description: str) -> dict[str, Any]:
    """One error status in a route's OpenAPI `responses`: an `ErrorResponse` body."""
    return {"model": ErrorResponse, "description": description}


def error_responses(*codes: int, plain_route: bool = False) -> dict[int | str, dict[str, Any]]:
    """A route's OpenAPI `responses` for these error statuses, each with its usual description.
    FastAPI files a `model` under the route's own media type; a `plain_route` (one whose 200 is not
    JSON, like /metrics) names the JSON error body by reference instead (every app's other routes
    put `ErrorResponse` in the document's schemas)."""
    if plain_route:
        content = {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorResponse"}}}
        return {code: {"description": ERROR_DESCRIPTIONS[code], "content": content} for code in codes}
    return {code: error_doc(ERROR_DESCRIPTIONS[code]) for code in codes}


# what a route that reads a JSON body can answer besides 200
ERROR_RESPONSES = error_responses(401, 408, 413, 422, 500, 503)
