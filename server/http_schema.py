"""The OpenAI HTTP API's request and response shapes, as pydantic models.

FastAPI reads request bodies into these and publishes them as the OpenAPI schema
(`/openapi.json`); responses are built as plain dicts in the shapes below (documented here,
checked against the schema by the schemathesis test) so no model is built per token.
kvserve's own knobs (`top_k`, `repetition_penalty`, `ignore_eos`) are extra fields, named as
vLLM names them. Unknown fields are refused (400 naming the field), never ignored; fields of
features kvserve does not have are declared so clients may send their neutral value (n=1,
logprobs null, ...) and anything else is refused by the door (server/http_openai.py).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

MAX_SEED = 2**64 - 1


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class StreamOptions(_Body):
    include_usage: bool = Field(
        False, description="send a last chunk with `usage` and no choices before [DONE]"
    )


class _Generation(_Body):
    """Fields both endpoints share."""

    model: str | None = Field(None, description="the served model's id (GET /v1/models)")
    max_tokens: int | None = Field(
        None, description="tokens to generate (default: the server's --default-max-new-tokens)"
    )
    temperature: float | None = Field(None, description="0 = greedy; default 1, as OpenAI")
    top_p: float | None = Field(None, gt=0, le=1, description="nucleus sampling (default 1 = off)")
    stop: str | list[str] | None = Field(None, description="text that ends the answer (not sent)")
    seed: int | None = Field(None, ge=0, le=MAX_SEED, description="same seed, same text")
    stream: bool = Field(False, description="server-sent events, then `data: [DONE]`")
    stream_options: StreamOptions | None = None
    user: str | None = Field(None, description="the end user, for the caller's own records")
    # kvserve's own knobs, as vLLM accepts them
    top_k: int = Field(0, ge=-1, description="top-k sampling; 0 or -1 = off (kvserve extension)")
    repetition_penalty: float | None = Field(None, gt=0, description="1 = off (kvserve extension)")
    ignore_eos: bool = Field(False, description="generate max_tokens tokens (kvserve extension)")
    # OpenAI features kvserve does not have: only their neutral values are accepted
    n: int = Field(1, description="choices per request; only 1")
    presence_penalty: float = Field(0.0, description="not supported: only 0")
    frequency_penalty: float = Field(0.0, description="not supported: only 0")
    logit_bias: dict[str, float] | None = Field(None, description="not supported: only empty")


class CompletionRequest(_Generation):
    prompt: str | list[Any] = Field(description="the text to continue (one string)")
    logprobs: int | None = Field(None, description="not supported: only null")
    echo: bool = Field(False, description="not supported: only false")
    best_of: int | None = Field(None, description="not supported: only 1")
    suffix: str | None = Field(None, description="not supported: only null")


class ContentPart(BaseModel):
    model_config = ConfigDict(extra="allow")  # other part types are refused by name, not shape

    type: str
    text: str | None = None


class ChatMessage(_Body):
    role: str = Field(description="system (the context), user (the question), or assistant")
    content: str | list[ContentPart] | None = None
    name: str | None = None


class ChatCompletionRequest(_Generation):
    messages: list[ChatMessage] = Field(
        description="the last user message is the question; system messages are the context"
    )
    max_completion_tokens: int | None = Field(None, description="the same as max_tokens")
    logprobs: bool | None = Field(None, description="not supported: only false")
    top_logprobs: int | None = Field(None, description="not supported: only null")
    tools: list[Any] | None = Field(None, description="not supported: only empty")
    tool_choice: str | dict[str, Any] | None = Field(None, description="not supported: none")
    parallel_tool_calls: bool | None = Field(None, description="not supported (no tools)")
    functions: list[Any] | None = Field(None, description="not supported: only empty")
    function_call: str | dict[str, Any] | None = Field(None, description="not supported: none")
    response_format: dict[str, Any] | None = Field(None, description='only {"type": "text"}')


# -- responses (documentation of the dicts the door sends) ----------------------------------
class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


FinishReason = Literal["stop", "length"]


class CompletionChoice(BaseModel):
    index: int
    text: str
    logprobs: None
    finish_reason: FinishReason | None


class Completion(BaseModel):
    id: str
    object: Literal["text_completion"]
    created: int
    model: str
    choices: list[CompletionChoice]
    usage: Usage


class AssistantMessage(BaseModel):
    role: Literal["assistant"]
    content: str


class ChatChoice(BaseModel):
    index: int
    message: AssistantMessage
    logprobs: None
    finish_reason: FinishReason | None


class ChatCompletion(BaseModel):
    id: str
    object: Literal["chat.completion"]
    created: int
    model: str
    choices: list[ChatChoice]
    usage: Usage


class ModelCard(BaseModel):
    id: str
    object: Literal["model"]
    created: int
    owned_by: str
    max_model_len: int


class ModelList(BaseModel):
    object: Literal["list"]
    data: list[ModelCard]


class Health(BaseModel):
    status: Literal["SERVING", "NOT_SERVING"]


class ErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None
    code: str | None


class ErrorBody(BaseModel):
    error: ErrorDetail
