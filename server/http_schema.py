"""The OpenAI HTTP API's request and response shapes, as pydantic models.

FastAPI reads request bodies into these and publishes them as the OpenAPI schema
(`/openapi.json`); responses are built as plain dicts in the shapes below (documented here,
checked against the schema by the schemathesis test) so no model is built per token.
kvserve's own knobs (`top_k`, `repetition_penalty`, `ignore_eos`) are extra fields, named as
vLLM names them; the hand-over's (`handover_threshold` in, `confidence`, `handed_over`,
`handover_text` out: docs/logprobs.md) are kvserve's own. Unknown fields are refused (400
naming the field), never ignored; fields of features kvserve does not have are declared so
clients may send their neutral value (best_of 1, no tools, ...) and anything else is refused
by the door (server/openai_requests.py).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

MAX_SEED = 2**64 - 1
MAX_PROMPTS = 16  # a completions batch: prompts per request (each with its n choices)


class _Body(BaseModel):
    # strict: JSON true is not 1.0, "5" is not 5 (lax mode would accept a schema-breaking body)
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, strict=True)


StopText = Annotated[str, Field(min_length=1, max_length=64)]
Prompt = Annotated[str, Field(min_length=1, max_length=64_000, pattern=r"\S")]
# a prompt already tokenized (lm-evaluation-harness sends these): the model's token ids
TokenIds = Annotated[list[Annotated[int, Field(ge=0)]], Field(min_length=1, max_length=8192)]


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
    n: int = Field(
        1,
        ge=1,
        le=8,
        description="choices: each its own sampling; with a seed, choice i uses "
        "(seed + i * 0x9E3779B97F4A7C15) mod 2**64 (choice 0: the seed itself)",
    )
    # OpenAI features kvserve does not have: only their neutral values are accepted
    presence_penalty: float = Field(0.0, ge=0, le=0, description="not supported: only 0")
    frequency_penalty: float = Field(0.0, ge=0, le=0, description="not supported: only 0")
    logit_bias: dict[str, float] | None = Field(
        None, max_length=0, description="not supported: only empty"
    )


class CompletionRequest(_Generation):
    prompt: (
        Prompt
        | Annotated[list[Prompt], Field(min_length=1, max_length=MAX_PROMPTS)]
        | TokenIds
        | Annotated[list[TokenIds], Field(min_length=1, max_length=MAX_PROMPTS)]
    ) = Field(
        description="the text to continue: a string or an array of token ids, or a batch (a "
        f"list of up to {MAX_PROMPTS} of either): k prompts give k * n choices, choice "
        "prompt_index * n + i"
    )
    max_tokens: int | None = Field(
        None,
        ge=0,
        description="tokens to generate (default: the server's --default-max-new-tokens); "
        "0 with echo: score the prompt only",
    )
    logprobs: int | None = Field(
        None,
        ge=0,
        le=5,
        description="each token's logprob and the N likeliest tokens at its position "
        "(log-softmax of the raw logits, whatever the sampling knobs)",
    )
    echo: bool = Field(
        False, description="the prompt before the answer (with logprobs: its tokens' too)"
    )
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
    logprobs: bool | None = Field(
        None, description="each answer token's logprob (log-softmax of the raw logits)"
    )
    top_logprobs: int | None = Field(
        None, ge=0, le=20, description="the N likeliest tokens at each position (with logprobs)"
    )
    handover_threshold: float | None = Field(
        None,
        ge=0,
        le=1,
        description="hand the question over below this confidence (0 = never, 1 = always; "
        "default: the server's) (kvserve extension)",
    )
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


class CompletionLogprobs(BaseModel):
    """Per token (the echoed prompt's, then every generated one, the eos that ended the
    answer included): its text, logprob (null for the prompt's first token), the likeliest
    tokens at its position with the chosen one (null for the prompt's first), and its
    first character's offset, counted from the start of the prompt."""

    tokens: list[str]
    token_logprobs: list[float | None]
    top_logprobs: list[dict[str, float] | None]
    text_offset: list[int]


class CompletionChoice(BaseModel):
    index: int
    text: str
    logprobs: CompletionLogprobs | None
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


class ChatTopLogprob(BaseModel):
    token: str  # an incomplete UTF-8 character shows as U+FFFD; `bytes` has the real ones
    logprob: float
    bytes: list[int] | None  # the token's UTF-8 bytes; null for a special token


class ChatTokenLogprob(ChatTopLogprob):
    top_logprobs: list[ChatTopLogprob]


class ChatLogprobs(BaseModel):
    content: list[ChatTokenLogprob] | None
    refusal: None = None


class ChatChoice(BaseModel):
    index: int
    message: AssistantMessage  # the hand-over text when handed_over
    logprobs: ChatLogprobs | None  # the model's own answer's tokens, also when handed over
    finish_reason: FinishReason | None
    confidence: float | None = Field(
        description="P(the answer is right) from the artifact's calibration; null without "
        "one (kvserve extension)"
    )
    handed_over: bool = Field(
        description="true: the confidence was below the threshold and the content is the "
        "server's hand-over text (kvserve extension)"
    )


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
    logprobs: CompletionLogprobs | None
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
    """A choice's last chunk (the one with finish_reason) also carries its verdict: the
    text has gone out already, so when handed over the client shows `handover_text` instead."""

    index: int
    delta: Delta
    logprobs: ChatLogprobs | None
    finish_reason: FinishReason | None
    confidence: float | None = None
    handed_over: bool | None = None
    handover_text: str | None = None


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
