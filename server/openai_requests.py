"""OpenAI request bodies -> door-neutral Asks: what each OpenAI field means for kvserve.

The HTTP door's first half (server/http_app.py wires it; server/openai_replies.py writes the
replies): which features kvserve refuses (400 naming the field), how a completions prompt
(a string, token ids, or a batch of either) becomes Asks, and how a chat turns into the
artifact's prompt (the last user message is the question, system messages are the context:
the `Answer` RPC's prompt). What each logprob, echo and `n` field does: docs/logprobs.md.
Hand-written: the mapping is kvserve's own; the shapes are pydantic's (server/http_schema.py).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from server.generation import Ask, Generator, Knobs
from server.http_schema import ChatCompletionRequest, ChatMessage, CompletionRequest

OPENAI_DEFAULT_TEMPERATURE = 1.0  # OpenAI's default; kvserve's gRPC default is greedy
CONTEXT_ROLES = ("system", "developer")


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
    "best_of": "kvserve answers with its n choices, no server-side best-of (only 1)",
    "presence_penalty": "not supported by kvserve (only 0; repetition_penalty is)",
    "frequency_penalty": "not supported by kvserve (only 0; repetition_penalty is)",
    "logit_bias": "not supported by kvserve (only empty)",
    "suffix": "not supported by kvserve (only empty)",
    "tools": "tools are not supported by kvserve",
    "functions": "tools are not supported by kvserve",
    "tool_choice": "tools are not supported by kvserve (only none)",
    "function_call": "tools are not supported by kvserve (only none)",
    "response_format": 'only {"type": "text"}',
}


@dataclass(frozen=True)
class Shown:
    """What the reply shows beyond the text, as the request asked (the engine may be asked
    for more: a chat's logprobs for its hand-over verdict are not shown unless asked)."""

    logprobs: int | None = None  # alternatives per token shown; None = no logprobs
    echo: bool = False  # completions: the prompt, and its tokens' logprobs, first
    judged: bool = False  # chat: each choice carries its confidence and hand-over
    handover_threshold: float | None = None  # the request's own; None = the server's


@dataclass(frozen=True)
class Converted:
    """A request's Asks (one per prompt of a batch), and its own names for the knobs the
    Asks name otherwise."""

    asks: tuple[Ask, ...]
    names: dict[str, str]  # door-neutral field -> this request's field
    chat: bool
    n: int = 1  # choices per prompt
    shown: Shown = Shown()
    # False: echo with max_tokens 0 and no logprobs, the prompt is the whole answer and the
    # door gives it without asking the engine (an artifact that cannot score prompts too)
    generates: bool = True


def completion_ask(body: CompletionRequest, request_id: str) -> Converted:
    """A completions request: one Ask per prompt (a batch: several). `logprobs` N asks the
    engine for N alternatives per token; `echo` with logprobs also for the prompt's
    (prompt_logprobs), and `max_tokens: 0` with echo and logprobs scores the prompt without
    generating. Token-id prompts are checked (and decoded for echo) by the Generator."""
    if body.max_tokens == 0 and not body.echo:
        raise refused("max_tokens", "must be >= 1 (0 only with echo: score the prompt)")
    generates = not (body.echo and body.max_tokens == 0 and body.logprobs is None)
    prompt_logprobs = body.logprobs if body.echo else None
    # nothing to generate: the other knobs are still checked, the default length unused
    max_tokens = body.max_tokens if generates else None
    knobs = replace(
        knobs_of(body, max_tokens), logprobs=body.logprobs, prompt_logprobs=prompt_logprobs
    )
    prompts = _prompts_of(body.prompt)
    asks = tuple(
        Ask(text, "prompt" if len(prompts) == 1 else f"prompt[{j}]", knobs, request_id, None, ids)
        for j, (text, ids) in enumerate(prompts)
    )
    names = {
        "max_new_tokens": "max_tokens",
        "request_id": "x-request-id",
        "prompt_logprobs": "echo",
    }
    shown = Shown(logprobs=body.logprobs, echo=body.echo)
    return Converted(asks, names, False, body.n, shown, generates)


def _prompts_of(
    prompt: str | list[str] | list[int] | list[list[int]],
) -> list[tuple[str, tuple[int, ...] | None]]:
    """(text, token ids or None) of each prompt of a completions request: a string, token
    ids, or a batch (a list) of either."""
    if isinstance(prompt, str):
        return [(prompt, None)]
    if isinstance(prompt[0], int):
        return [("", tuple(prompt))]  # type: ignore[arg-type]
    return [(p, None) if isinstance(p, str) else ("", tuple(p)) for p in prompt]  # type: ignore[union-attr]


def chat_ask(body: ChatCompletionRequest, generator: Generator, request_id: str) -> Converted:
    """A chat request: `logprobs: true` (+ `top_logprobs` N) shows each answer token's
    logprob; the engine is asked for them anyway when answers are judged (hand-over)."""
    if body.max_tokens is not None and body.max_completion_tokens is not None:
        raise refused("max_completion_tokens", "give max_tokens or max_completion_tokens, not both")
    if body.top_logprobs is not None and not body.logprobs:
        raise refused("top_logprobs", "needs logprobs: true")
    max_name = "max_tokens" if body.max_completion_tokens is None else "max_completion_tokens"
    question, context, question_field, context_field = chat_turn(body.messages)
    prompt, field = generator.answer(question, context, question_field, context_field)
    limit = body.max_tokens if body.max_completion_tokens is None else body.max_completion_tokens
    shown_logprobs = (body.top_logprobs or 0) if body.logprobs else None
    knobs = generator.answer_knobs(replace(knobs_of(body, limit), logprobs=shown_logprobs))
    names = {"max_new_tokens": max_name, "request_id": "x-request-id", "logprobs": "top_logprobs"}
    shown = Shown(logprobs=shown_logprobs, judged=True, handover_threshold=body.handover_threshold)
    return Converted((Ask(prompt, field, knobs, request_id),), names, True, body.n, shown)


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
