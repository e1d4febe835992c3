"""Engine results -> OpenAI replies: the unary JSON body and the server-sent-event chunks.

The HTTP door's last half (server/openai_requests.py is its first): `Reply` says who answers
(the ids every reply and chunk carries), `Rendering` how the choices are shown (what the
request asked to see, each prompt for echo and usage, the hand-over text, the logprob
renderer of server/openai_logprobs.py). A batch of k prompts with n choices each gives k * n
choices, choice index = prompt index * n + i (OpenAI's order); usage counts each prompt once
and every choice's tokens. Chunks are written from prebuilt text around one json.dumps of
the choice, since a stream sends one per token. Hand-written: the shapes are OpenAI's
(docs/logprobs.md), the events kvserve's.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from server.generation import Completion, Prompt
from server.handover import NO_VERDICT, Verdict
from server.logprobs import TokenLogprob
from server.openai_logprobs import LogprobRenderer
from server.openai_requests import ApiError, Shown
from server.request import FinishReason, StreamEvent
from server.token_text import Offsets

FINISH = {FinishReason.STOP: "stop", FinishReason.LENGTH: "length"}
DONE = b"data: [DONE]\n\n"

Judge = Callable[[Sequence[int], Sequence[TokenLogprob]], Verdict]


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


@dataclass(frozen=True)
class Rendering:
    """How one request's choices are shown."""

    shown: Shown
    prompts: Sequence[Prompt]  # one per prompt; choice c answers prompts[c // n]
    n: int = 1  # choices per prompt
    handover_text: str = ""  # what a handed-over answer is replaced with
    renderer: LogprobRenderer | None = None  # None: no logprobs shown

    @property
    def choices(self) -> int:
        return len(self.prompts) * self.n

    def prompt_of(self, index: int) -> Prompt:
        return self.prompts[index // self.n]

    def usage(self, completion_tokens: Sequence[int]) -> dict:
        """Each prompt once (its n choices share it), every choice's generated tokens."""
        prompt_tokens = sum(len(prompt.token_ids) for prompt in self.prompts)
        return usage(prompt_tokens, sum(completion_tokens))

    def echoed(self, index: int, text: str) -> str:
        """A choice's text as shown: after its prompt when the request asked for echo."""
        return self.prompt_of(index).text + text if self.shown.echo else text

    def offsets(self, index: int) -> Offsets:
        """A choice's text_offset counter: from the prompt's start, as OpenAI counts (with
        echo the prompt's own tokens are counted in; without, the answer starts after it)."""
        assert self.renderer is not None
        start = 0 if self.shown.echo else len(self.prompt_of(index).text)
        return self.renderer.token_text.offsets(start_chars=start)

    def text_logprobs(
        self,
        index: int,
        offsets: Offsets,
        token_ids: Sequence[int],
        logprobs: Sequence[TokenLogprob],
        prompt_logprobs: Sequence[TokenLogprob | None] | None,
    ) -> dict:
        """A completions choice's `logprobs` for these tokens, its prompt's first when echo
        asked for them (`prompt_logprobs`: None when this part carries none)."""
        renderer = self.renderer
        assert renderer is not None
        prompt = []
        if self.shown.echo:
            prompt = renderer.prompt(self.prompt_of(index).token_ids, prompt_logprobs)
        return renderer.completion(prompt, renderer.scored(token_ids, logprobs), offsets)


# -- unary -----------------------------------------------------------------------------------
def whole(
    reply: Reply,
    rendering: Rendering,
    completions: Sequence[Completion],
    verdicts: Sequence[Verdict] = (),
) -> dict:
    """The unary reply (always with usage): one choice per completion, in choice order;
    `verdicts` (chat) in the same order."""
    if reply.chat:
        choices = [
            _chat_choice(rendering, i, c, verdicts[i] if verdicts else NO_VERDICT)
            for i, c in enumerate(completions)
        ]
    else:
        choices = [_text_choice(rendering, i, c) for i, c in enumerate(completions)]
    return {
        "id": reply.id,
        "object": "chat.completion" if reply.chat else "text_completion",
        "created": reply.created,
        "model": reply.model,
        "choices": choices,
        "usage": rendering.usage([c.completion_tokens for c in completions]),
    }


def _chat_choice(
    rendering: Rendering, index: int, completion: Completion, verdict: Verdict
) -> dict:
    logprobs = None
    if rendering.renderer is not None:
        renderer = rendering.renderer
        finish = completion.finish_reason
        logprobs = renderer.chat(
            renderer.chat_answer(completion.token_ids, completion.logprobs, finish)
        )
    content = rendering.handover_text if verdict.handed_over else completion.text
    return {
        "index": index,
        "message": {"role": "assistant", "content": content},
        "logprobs": logprobs,
        "finish_reason": FINISH.get(completion.finish_reason),
        "confidence": verdict.confidence,
        "handed_over": verdict.handed_over,
    }


def _text_choice(rendering: Rendering, index: int, completion: Completion) -> dict:
    logprobs = None
    if rendering.renderer is not None:
        logprobs = rendering.text_logprobs(
            index,
            rendering.offsets(index),
            completion.token_ids,
            completion.logprobs,
            completion.prompt_logprobs,
        )
    return {
        "index": index,
        "text": rendering.echoed(index, completion.text),
        "logprobs": logprobs,
        "finish_reason": FINISH.get(completion.finish_reason),
    }


# -- streams ---------------------------------------------------------------------------------
@dataclass
class _Choice:
    """One choice's progress through a stream."""

    offsets: Offsets | None  # completions with logprobs: text_offset runs on across chunks
    started: bool = False
    finished: bool = False
    completion_tokens: int = 0
    token_ids: list[int] = field(default_factory=list)  # kept for the verdict
    logprobs: list[TokenLogprob] = field(default_factory=list)


class ChunkWriter:
    """Server-sent events of one stream: a chunk per text piece of each choice (with its
    `index`; the choices interleave as their tokens come), each choice's finish, then usage
    (with stream_options.include_usage) once every choice has finished, and [DONE].

    A judged chat choice's last chunk carries `confidence`, `handed_over` and, when handed
    over, `handover_text`: the answer's text has already gone out, so the client replaces
    it with that text."""

    def __init__(
        self,
        reply: Reply,
        rendering: Rendering,
        include_usage: bool,
        judge: Judge | None = None,
    ) -> None:
        self.reply = reply
        self.rendering = rendering
        self.include_usage = include_usage
        self.judge = judge
        kind = "chat.completion.chunk" if reply.chat else "text_completion"
        head = {"id": reply.id, "object": kind, "created": reply.created, "model": reply.model}
        self._head = json.dumps(head, separators=(",", ":"))[:-1]  # without its closing brace
        self._tail = ',"usage":null}' if include_usage else "}"
        counts_offsets = rendering.renderer is not None and not reply.chat
        self._choices = [
            _Choice(rendering.offsets(i) if counts_offsets else None)
            for i in range(rendering.choices)
        ]

    def chunks(self, event: StreamEvent, index: int = 0) -> list[bytes]:
        """The events for one engine event of choice `index` (none for a piece held back,
        e.g. half a character or what may be the start of a stop string)."""
        choice = self._choices[index]
        first = not choice.started
        choice.started = True
        if self.judge is not None:
            choice.token_ids += event.token_ids
            choice.logprobs += event.logprobs
        if self.reply.chat:
            out = self._chat_chunks(choice, index, event, first)
        else:
            out = self._text_chunks(choice, index, event, first)
        if event.finish_reason is not None:
            choice.finished = True
            choice.completion_tokens = event.completion_tokens
            if self.include_usage and all(c.finished for c in self._choices):
                out.append(self._usage_chunk())
        return out

    def _chat_chunks(
        self, choice: _Choice, index: int, event: StreamEvent, first: bool
    ) -> list[bytes]:
        out = []
        if first:  # the first chunk names the role
            out.append(self._event(index, '"delta":{"role":"assistant","content":""}'))
        renderer = self.rendering.renderer
        scored = []
        if renderer is not None and event.logprobs:
            scored = renderer.chat_answer(event.token_ids, event.logprobs, event.finish_reason)
        if event.text or scored:
            logprobs = _compact(renderer.chat(scored)) if renderer and scored else "null"
            delta = f'"delta":{{"content":{json.dumps(event.text)}}}'
            out.append(self._event(index, delta, logprobs))
        if event.finish_reason is not None:
            finish = FINISH.get(event.finish_reason)
            out.append(self._event(index, '"delta":{}' + self._verdict(choice), "null", finish))
        return out

    def _text_chunks(
        self, choice: _Choice, index: int, event: StreamEvent, first: bool
    ) -> list[bytes]:
        text = self.rendering.echoed(index, event.text) if first else event.text
        done = event.finish_reason is not None
        logprobs, scored = "null", False
        if choice.offsets is not None:  # shown: an object in every chunk, maybe empty
            prompt_logprobs = event.prompt_logprobs if first else None
            rendered = self.rendering.text_logprobs(
                index, choice.offsets, event.token_ids, event.logprobs, prompt_logprobs
            )
            logprobs, scored = _compact(rendered), bool(rendered["tokens"])
        if not (text or done or scored):
            return []
        finish = FINISH.get(event.finish_reason) if done else None
        return [self._event(index, f'"text":{json.dumps(text)}', logprobs, finish)]

    def _usage_chunk(self) -> bytes:
        numbers = self.rendering.usage([c.completion_tokens for c in self._choices])
        return f'data: {self._head},"choices":[],"usage":{_compact(numbers)}}}\n\n'.encode()

    def _verdict(self, choice: _Choice) -> str:
        """A judged chat choice's closing fields, as JSON members (',"confidence":...')."""
        if self.judge is None:
            return ""
        verdict = self.judge(choice.token_ids, choice.logprobs)
        text = self.rendering.handover_text if verdict.handed_over else None
        fields = {
            "confidence": verdict.confidence,
            "handed_over": verdict.handed_over,
            "handover_text": text,
        }
        return "," + _compact(fields)[1:-1]

    def error(self, error: ApiError) -> bytes:
        """A failure after the 200 went out: one error event (vLLM does the same)."""
        return f"data: {json.dumps(error.body())}\n\n".encode()

    def _event(
        self, index: int, body: str, logprobs: str = "null", finish: str | None = None
    ) -> bytes:
        """One chunk from JSON pieces: a stream sends one per token, so the fixed head is
        prebuilt and only the text (and logprobs, when asked) are dumped."""
        reason = "null" if finish is None else f'"{finish}"'
        choice = f'{{"index":{index},{body},"logprobs":{logprobs},"finish_reason":{reason}}}'
        return f'data: {self._head},"choices":[{choice}]{self._tail}\n\n'.encode()


def _compact(value: object) -> str:
    return json.dumps(value, separators=(",", ":"))
