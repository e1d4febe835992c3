"""One generation, door-neutral: the part both front doors (gRPC, HTTP) share.

A door converts its wire request into an `Ask` (prompt text + `Knobs`), then
`Generator.submit` checks it, tokenizes, builds the engine's Request (here and nowhere
else) and queues it; refusals are typed (InvalidArgument, QueueFull, Draining) and raised
before any reply is sent, so each door can answer them with its own status. The returned
`Generation` relays the engine's events until the last one, or collects them into a
`Completion`; a failed finish raises GenerationFailed. Whoever ends early (a client gone,
a deadline) calls `cancel()`, and the engine drops the request at its next step.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

from tokenizers import Tokenizer

from artifact import Manifest
from server import logs
from server.engine import Engine
from server.request import FinishReason, Request, StreamEvent, Timing
from server.scheduler import QueueFull
from server.validation import (
    InvalidArgument,
    Knobs,
    Limits,
    check_prompt_tokens,
    check_request_id,
    check_text,
    sampling_params_of,
)

__all__ = [
    "Ask",
    "Completion",
    "Draining",
    "Generation",
    "GenerationFailed",
    "Generator",
    "InvalidArgument",
    "Knobs",
    "QueueFull",
]

FAILED = (FinishReason.CANCELLED, FinishReason.DEADLINE, FinishReason.ERROR)


class Draining(Exception):
    """The server is shutting down and takes no new requests."""


class GenerationFailed(Exception):
    """The request ended without an answer: cancelled, past its deadline, or an engine error."""

    def __init__(self, event: StreamEvent) -> None:
        super().__init__(event.error or event.finish_reason.value)
        self.reason: FinishReason = event.finish_reason


@dataclass(frozen=True)
class Ask:
    """What a front door asks for, already off its wire format."""

    prompt: str
    field: str  # the request field a bad prompt is blamed on ("prompt", "messages[1].content")
    knobs: Knobs = Knobs()
    request_id: str = ""  # "" = make one
    deadline: float | None = None  # time.monotonic() value


@dataclass(frozen=True)
class Completion:
    """A whole answer: every event's text and tokens joined, and the last event's totals."""

    text: str
    token_ids: list[int]
    finish_reason: FinishReason
    prompt_tokens: int
    completion_tokens: int
    timing: Timing | None
    request_id: str


class Generation:
    """One accepted request on its way through the engine."""

    def __init__(self, request: Request, queue: asyncio.Queue[StreamEvent]) -> None:
        self._request = request
        self._queue = queue

    @property
    def request_id(self) -> str:
        return self._request.request_id

    @property
    def prompt_tokens(self) -> int:
        return len(self._request.prompt_ids)

    def cancel(self) -> None:
        """Idempotent: the engine drops a cancelled request at its next step; a finished one
        is already gone."""
        self._request.cancelled = True

    async def events(self) -> AsyncIterator[StreamEvent]:
        """The engine's events for this request, the last one with its finish_reason."""
        async for batch in self.batches():
            for event in batch:
                yield event

    async def batches(self) -> AsyncIterator[list[StreamEvent]]:
        """The events as they come: each batch is every event already waiting, so a door
        that fell behind catches up with one write instead of one per token.

        A failed finish raises GenerationFailed once the events before it are out; leaving
        early (the consumer closed or was cancelled) cancels the request."""
        finished = False
        try:
            while not finished:
                batch = [await self._queue.get()]
                while batch[-1].finish_reason is None and not self._queue.empty():
                    batch.append(self._queue.get_nowait())
                for event in batch:
                    logs.on_event(event)
                last = batch[-1]
                finished = last.finish_reason is not None
                if last.finish_reason in FAILED:
                    if batch[:-1]:
                        yield batch[:-1]
                    raise GenerationFailed(last)
                yield batch
        finally:
            if not finished:
                self.cancel()

    async def collect(self) -> Completion:
        texts: list[str] = []
        token_ids: list[int] = []
        last: StreamEvent | None = None
        async for event in self.events():
            texts.append(event.text)
            token_ids += event.token_ids
            last = event
        assert last is not None and last.finish_reason is not None  # events() ends on a finish
        return Completion(
            text="".join(texts),
            token_ids=token_ids,
            finish_reason=last.finish_reason,
            prompt_tokens=last.prompt_tokens,
            completion_tokens=last.completion_tokens,
            timing=last.timing,
            request_id=last.request_id,
        )


class Generator:
    """The engine as the front doors see it: the same checks, limits and queue for both."""

    def __init__(
        self, engine: Engine, tokenizer: Tokenizer, manifest: Manifest, limits: Limits
    ) -> None:
        self.engine = engine
        self.tokenizer = tokenizer
        self.manifest = manifest
        self.limits = limits
        self.draining = False  # set once by the drain; both doors refuse new work then
        self.last_arrival = 0.0  # time.monotonic() of the latest submit (the drain waits on it)

    def answer(
        self,
        question: str,
        context: str = "",
        question_field: str = "question",
        context_field: str = "context",
    ) -> tuple[str, str]:
        """(prompt, field to blame) for a question: the artifact's own prompt template, the
        one training used, so every door asks the model the way it learned."""
        check_text(question, question_field, self.limits)
        prompt = self.manifest.prompt_template.format(question, context)
        return prompt, context_field if context.strip() else question_field

    def submit(self, ask: Ask) -> Generation:
        """Check, tokenize and queue one request (InvalidArgument, QueueFull or Draining when
        it is refused). Call from the event loop that will read its events."""
        self.last_arrival = time.monotonic()
        if self.draining:
            raise Draining("server is draining; retry on another replica")
        request_id = check_request_id(ask.request_id)  # first: a bad request's lines carry it
        logs.annotate(request_id=request_id)
        params = sampling_params_of(ask.knobs, self.limits)
        prompt_ids = self.tokenizer.encode(check_text(ask.prompt, ask.field, self.limits)).ids
        check_prompt_tokens(len(prompt_ids), ask.field, self.manifest.architecture.max_positions)
        logs.annotate(prompt_tokens=len(prompt_ids))
        queue: asyncio.Queue[StreamEvent] = asyncio.Queue()
        loop = asyncio.get_running_loop()
        request = Request(
            request_id=request_id,
            prompt_ids=prompt_ids,
            params=params,
            emit=lambda event: loop.call_soon_threadsafe(queue.put_nowait, event),
            deadline=ask.deadline,
        )
        self.engine.submit(request)
        return Generation(request, queue)


def deadline_in(seconds: float | None) -> float | None:
    """A time.monotonic() deadline `seconds` from now (None stays None)."""
    return None if seconds is None else time.monotonic() + seconds
