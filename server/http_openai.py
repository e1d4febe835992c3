"""OpenAI request bodies -> door-neutral Asks, and engine events -> OpenAI replies.

The HTTP door's conversions, kept apart from its wiring (server/http_app.py): what each
OpenAI field means for kvserve, which features it refuses (400 naming the field), how a
chat turns into the artifact's prompt (the last user message is the question, system
messages are the context: the `Answer` RPC's prompt), and the JSON of replies and of
server-sent-event chunks. Chunks are written from prebuilt text around one json.dumps of
the piece, since a stream sends one per token.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from server.generation import Ask, Completion, Generator, Knobs
from server.http_schema import ChatCompletionRequest, ChatMessage, CompletionRequest
from server.request import FinishReason, StreamEvent

OPENAI_DEFAULT_TEMPERATURE = 1.0  # OpenAI's default; kvserve's gRPC default is greedy
CONTEXT_ROLES = ("system", "developer")
FINISH = {FinishReason.STOP: "stop", FinishReason.LENGTH: "length"}
DONE = b"data: [DONE]\n\n"


class ApiError(Exception):
    """An error reply: HTTP status, OpenAI error type, and the field to blame (if one)."""

    TYPES = {
        400: "invalid_request_error",
        401: "authentication_error",
        404: "not_found_error",
        405: "invalid_request_error",
        429: "rate_limit_error",
        500: "server_error",
        503: "service_unavailable",
        504: "timeout",
    }
    CODES = {
        400: "INVALID_ARGUMENT",
        401: "UNAUTHENTICATED",
        404: "NOT_FOUND",
        405: "UNIMPLEMENTED",
        429: "RESOURCE_EXHAUSTED",
        499: "CANCELLED",
        500: "INTERNAL",
        503: "UNAVAILABLE",
        504: "DEADLINE_EXCEEDED",
    }

    def __init__(self, status: int, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param

    @property
    def code(self) -> str:
        """The gRPC status name of the same outcome: one vocabulary for both doors' metrics."""
        return self.CODES.get(self.status, "INTERNAL")

    def body(self) -> dict:
        kind = self.TYPES.get(self.status, "server_error")
        return {
            "error": {"message": self.message, "type": kind, "param": self.param, "code": self.code}
        }


def refused(param: str, problem: str) -> ApiError:
    return ApiError(400, f"{param}: {problem}", param)


# OpenAI features kvserve does not have; the schema takes only their neutral value, and a
# request with any other says which feature it asked for
NOT_SUPPORTED = {
    "n": "kvserve answers one choice per request (only 1)",
    "best_of": "kvserve answers one choice per request (only 1)",
    "presence_penalty": "not supported by kvserve (only 0; repetition_penalty is)",
    "frequency_penalty": "not supported by kvserve (only 0; repetition_penalty is)",
    "logit_bias": "not supported by kvserve (only empty)",
    "logprobs": "not supported by kvserve (only null or false)",
    "top_logprobs": "not supported by kvserve",
    "echo": "not supported by kvserve (only false)",
    "suffix": "not supported by kvserve (only empty)",
    "tools": "tools are not supported by kvserve",
    "functions": "tools are not supported by kvserve",
    "tool_choice": "tools are not supported by kvserve (only none)",
    "function_call": "tools are not supported by kvserve (only none)",
    "response_format": 'only {"type": "text"}',
}


# -- requests --------------------------------------------------------------------------------
@dataclass(frozen=True)
class Converted:
    """An Ask, and the request's own names for the knobs the Ask names otherwise."""

    ask: Ask
    names: dict[str, str]  # door-neutral field -> this request's field

    def param(self, field: str) -> str:
        return self.names.get(field, field)


def completion_ask(body: CompletionRequest, request_id: str) -> Converted:
    prompt = body.prompt if isinstance(body.prompt, str) else body.prompt[0]
    ask = Ask(prompt, "prompt", knobs_of(body, body.max_tokens), request_id)
    return Converted(ask, {"max_new_tokens": "max_tokens", "request_id": "x-request-id"})


def chat_ask(body: ChatCompletionRequest, generator: Generator, request_id: str) -> Converted:
    if body.max_tokens is not None and body.max_completion_tokens is not None:
        raise refused("max_completion_tokens", "give max_tokens or max_completion_tokens, not both")
    max_name = "max_tokens" if body.max_completion_tokens is None else "max_completion_tokens"
    question, context, question_field, context_field = chat_turn(body.messages)
    prompt, field = generator.answer(question, context, question_field, context_field)
    limit = body.max_tokens if body.max_completion_tokens is None else body.max_completion_tokens
    ask = Ask(prompt, field, knobs_of(body, limit), request_id)
    return Converted(ask, {"max_new_tokens": max_name, "request_id": "x-request-id"})


def chat_turn(messages: list[ChatMessage]) -> tuple[str, str, str, str]:
    """(question, context, question's field, context's field) of a chat.

    The artifact's template is one question with an optional context, as the model was
    trained: the last message (the user's) is the question and the system messages are the
    context; earlier user and assistant turns are not part of the prompt."""
    if not messages:
        raise refused("messages", "must not be empty")
    contexts, fields = [], []
    for i, message in enumerate(messages):
        if message.role in CONTEXT_ROLES:
            contexts.append(_text_of(message, i))
            fields.append(f"messages[{i}].content")
    last = len(messages) - 1
    if messages[last].role != "user":
        raise refused(f"messages[{last}].role", "the last message must be the user's question")
    question = _text_of(messages[last], last)
    context_field = fields[0] if len(fields) == 1 else "messages"
    return question, "\n".join(contexts), f"messages[{last}].content", context_field


def _text_of(message: ChatMessage, index: int) -> str:
    if message.content is None:
        return ""
    if isinstance(message.content, str):
        return message.content
    texts = []
    for j, part in enumerate(message.content):
        if part.type != "text" or part.text is None:
            raise refused(f"messages[{index}].content[{j}].type", "only text parts are supported")
        texts.append(part.text)
    return "".join(texts)


def knobs_of(body: CompletionRequest | ChatCompletionRequest, max_tokens: int | None) -> Knobs:
    temperature = OPENAI_DEFAULT_TEMPERATURE if body.temperature is None else body.temperature
    stop = (body.stop,) if isinstance(body.stop, str) else tuple(body.stop or ())
    return Knobs(
        max_new_tokens=max_tokens,
        temperature=temperature,
        top_k=max(body.top_k, 0),  # vLLM's -1 = off
        top_p=body.top_p,
        repetition_penalty=body.repetition_penalty,
        stop=stop,
        seed=body.seed,
        ignore_eos=body.ignore_eos,
    )


# -- replies ---------------------------------------------------------------------------------
def usage(prompt_tokens: int, completion_tokens: int) -> dict:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


@dataclass(frozen=True)
class Reply:
    """Who answers: the ids and names every reply and chunk of one request carries."""

    request_id: str
    model: str
    created: int
    chat: bool

    @property
    def id(self) -> str:
        return f"{'chatcmpl' if self.chat else 'cmpl'}-{self.request_id}"

    def whole(self, completion: Completion) -> dict:
        """The unary reply (always with usage)."""
        finish = FINISH.get(completion.finish_reason)
        if self.chat:
            message = {"role": "assistant", "content": completion.text}
            choice = {"index": 0, "message": message, "logprobs": None, "finish_reason": finish}
        else:
            choice = {
                "index": 0,
                "text": completion.text,
                "logprobs": None,
                "finish_reason": finish,
            }
        return {
            "id": self.id,
            "object": "chat.completion" if self.chat else "text_completion",
            "created": self.created,
            "model": self.model,
            "choices": [choice],
            "usage": usage(completion.prompt_tokens, completion.completion_tokens),
        }


class ChunkWriter:
    """Server-sent events of one stream: a chunk per text piece, the finish, then usage
    (with stream_options.include_usage) and [DONE]."""

    def __init__(self, reply: Reply, include_usage: bool) -> None:
        self.reply = reply
        self.include_usage = include_usage
        kind = "chat.completion.chunk" if reply.chat else "text_completion"
        head = {"id": reply.id, "object": kind, "created": reply.created, "model": reply.model}
        self._head = json.dumps(head, separators=(",", ":"))[:-1]  # without its closing brace
        self._tail = ',"usage":null}' if include_usage else "}"
        self._started = False

    def chunks(self, event: StreamEvent) -> list[bytes]:
        """The events for one engine event (none for a piece held back, e.g. half a
        character or what may be the start of a stop string)."""
        out = []
        if self.reply.chat and not self._started:  # the first chunk names the role
            out.append(self._event('"delta":{"role":"assistant","content":""}', None))
        self._started = True
        done = event.finish_reason is not None
        finish = FINISH.get(event.finish_reason) if done else None
        if self.reply.chat:
            if event.text:
                out.append(self._event(f'"delta":{{"content":{json.dumps(event.text)}}}', None))
            if done:
                out.append(self._event('"delta":{}', finish))
        elif event.text or done:
            out.append(self._event(f'"text":{json.dumps(event.text)}', finish))
        if done and self.include_usage:
            numbers = json.dumps(
                usage(event.prompt_tokens, event.completion_tokens), separators=(",", ":")
            )
            out.append(f'data: {self._head},"choices":[],"usage":{numbers}}}\n\n'.encode())
        return out

    def error(self, error: ApiError) -> bytes:
        """A failure after the 200 went out: one error event (vLLM does the same)."""
        return f"data: {json.dumps(error.body())}\n\n".encode()

    def _event(self, choice: str, finish: str | None) -> bytes:
        reason = "null" if finish is None else f'"{finish}"'
        body = (
            f'{self._head},"choices":[{{"index":0,{choice},"logprobs":null,'
            f'"finish_reason":{reason}}}]{self._tail}'
        )
        return f"data: {body}\n\n".encode()
