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

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

MAX_SEED = 2**64 - 1


class _Body(BaseModel):
    # strict: JSON true is not 1.0, "5" is not 5 (lax mode would accept a schema-breaking body)
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, strict=True)


StopText = Annotated[str, Field(min_length=1, max_length=64)]
Prompt = Annotated[str, Field(min_length=1, max_length=64_000, pattern=r"\S")]


class StreamOptions(_Body):
    include_usage: bool = Field(
        False, description="send a last chunk with `usage` and no choices before [DONE]"
    )


class ResponseFormat(_Body):
    type: Literal["text"]


class _Generation(_Body):
    """Fields both endpoints share. Limits that depend on the server (max_tokens' maximum,
    top_k's, the model's id) are added to the published schema at run time."""

    model: str | None = Field(None, description="the served model's id (GET /v1/models)")
    max_tokens: int | None = Field(
        None,
        ge=1,
        description="tokens to generate (default: the server's --default-max-new-tokens)",
    )
    temperature: float | None = Field(None, ge=0, description="0 = greedy; default 1, as OpenAI")
    top_p: float | None = Field(None, gt=0, le=1, description="nucleus sampling (default 1 = off)")
    stop: StopText | list[StopText] | None = Field(
        None, max_length=8, description="text that ends the answer (not sent)"
    )
    seed: int | None = Field(None, ge=0, le=MAX_SEED, description="same seed, same text")
    stream: bool = Field(False, description="server-sent events, then `data: [DONE]`")
    stream_options: StreamOptions | None = None
    user: str | None = Field(None, description="the end user, for the caller's own records")
    # kvserve's own knobs, as vLLM accepts them
    top_k: int = Field(0, ge=-1, description="top-k sampling; 0 or -1 = off (kvserve extension)")
    repetition_penalty: float | None = Field(None, gt=0, description="1 = off (kvserve extension)")
    ignore_eos: bool = Field(False, description="generate max_tokens tokens (kvserve extension)")
    # OpenAI features kvserve does not have: only their neutral values are accepted
    n: int = Field(1, ge=1, le=1, description="choices per request: only 1")
    presence_penalty: float = Field(0.0, ge=0, le=0, description="not supported: only 0")
    frequency_penalty: float = Field(0.0, ge=0, le=0, description="not supported: only 0")
    logit_bias: dict[str, float] | None = Field(
        None, max_length=0, description="not supported: only empty"
    )


class CompletionRequest(_Generation):
    prompt: Prompt | Annotated[list[Prompt], Field(min_length=1, max_length=1)] = Field(
        description="the text to continue: one string (or a list of one)"
    )
    logprobs: None = Field(None, description="not supported: only null")
    echo: Literal[False] = Field(False, description="not supported: only false")
    best_of: int | None = Field(None, ge=1, le=1, description="not supported: only 1")
    suffix: str | None = Field(None, max_length=0, description="not supported: only empty")


class ContentPart(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)  # other part types: refused by name

    type: str
    text: str | None = None


class ChatMessage(_Body):
    role: Literal["system", "developer", "user", "assistant"] = Field(
        description="system/developer: the context; user: the question; assistant: history"
    )
    content: str | list[ContentPart] | None = None
    name: str | None = None


class ChatCompletionRequest(_Generation):
    messages: list[ChatMessage] = Field(
        min_length=1,
        description="the last one, the user's, is the question; system messages the context",
    )
    max_completion_tokens: int | None = Field(None, ge=1, description="the same as max_tokens")
    logprobs: Literal[False] | None = Field(None, description="not supported: only false")
    top_logprobs: int | None = Field(None, ge=0, le=0, description="not supported")
    tools: list[Any] | None = Field(None, max_length=0, description="not supported: only empty")
    tool_choice: Literal["none", "auto"] | None = Field(None, description="no tools: none")
    parallel_tool_calls: bool | None = Field(None, description="no tools: no effect")
    functions: list[Any] | None = Field(None, max_length=0, description="not supported")
    function_call: Literal["none", "auto"] | None = Field(None, description="no tools: none")
    response_format: ResponseFormat | None = Field(None, description='only {"type": "text"}')


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


class CompletionChunkChoice(BaseModel):
    index: int
    text: str
    logprobs: None
    finish_reason: FinishReason | None


class CompletionChunk(BaseModel):
    """One server-sent event of a streamed completion; with stream_options.include_usage a
    last one has no choices and the usage."""

    id: str
    object: Literal["text_completion"]
    created: int
    model: str
    choices: list[CompletionChunkChoice]
    usage: Usage | None = None


class Delta(BaseModel):
    model_config = ConfigDict(extra="forbid")

    role: Literal["assistant"] | None = None
    content: str | None = None


class ChatChunkChoice(BaseModel):
    index: int
    delta: Delta
    logprobs: None
    finish_reason: FinishReason | None


class ChatCompletionChunk(BaseModel):
    """One server-sent event of a streamed chat answer: the first names the role, the last
    of the choices has the finish_reason and an empty delta."""

    id: str
    object: Literal["chat.completion.chunk"]
    created: int
    model: str
    choices: list[ChatChunkChoice]
    usage: Usage | None = None


STREAMED = (CompletionChunk, ChatCompletionChunk)


def event_stream(chunk: type[BaseModel]) -> dict:
    """The OpenAPI media type of a stream: each event's data is a chunk (JSON), an error
    body (a failure after the 200), or the closing `[DONE]`."""
    refs = [{"$ref": f"#/components/schemas/{m.__name__}"} for m in (chunk, ErrorBody)]
    data = {
        "anyOf": [
            {"const": "[DONE]"},
            {
                "type": "string",
                "contentMediaType": "application/json",
                "contentSchema": {"anyOf": refs},
            },
        ]
    }
    event = {"type": "object", "required": ["data"], "properties": {"data": data}}
    return {"text/event-stream": {"schema": event}}


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
