"""One generation, door-neutral: the part both front doors (gRPC, HTTP) share.

A door converts its wire request into an `Ask` (prompt text + `Knobs`), then
`Generator.submit` checks it, tokenizes, builds the engine's Request (here and nowhere
else) and queues it; refusals are typed (InvalidArgument, QueueFull, Draining) and raised
before any reply is sent, so each door can answer them with its own status. The returned
`Generation` relays the engine's events until the last one, or collects them into a
`Completion`; a failed finish raises GenerationFailed. Whoever ends early (a client gone,
a deadline) calls `cancel()`, and the engine drops the request at its next step.

Several choices for one ask (OpenAI's `n`), and several asks answered together (a batch of
prompts), are `submit_all`: every ask checked and tokenized once, one engine request per
choice, each choice with its own seed (`choice_seed`), all queued or none. `prepare` is its
first half (the checks, nothing queued), for a door that answers without the engine.
`judge_answer` gives an answer's hand-over verdict (server/handover.py) and reports it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import aclosing
from dataclasses import dataclass, field, replace

from tokenizers import Tokenizer

from artifact import Manifest
from server import logs
from server.engine import Engine
from server.event_inbox import EventInbox
from server.handover import NO_VERDICT, HandOver, Verdict, answer_logprobs
from server.logprobs import TokenLogprob
from server.request import FinishReason, Request, StreamEvent, Timing
from server.sampling import SamplingParams
from server.scheduler import QueueFull
from server.token_text import TokenText
from server.validation import (
    MAX_REQUEST_ID_CHARS,
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
    "choice_seed",
    "collect_all",
    "interleave",
    "Knobs",
    "Prepared",
    "Prompt",
    "QueueFull",
    "Verdict",
]

FAILED = (FinishReason.CANCELLED, FinishReason.DEADLINE, FinishReason.ERROR)
MAX_CHOICES = 8  # OpenAI's `n` here: engine requests per ask at most
SEED_STEP = 0x9E3779B97F4A7C15  # 2**64 / golden ratio: consecutive choices' seeds far apart


def choice_seed(seed: int | None, index: int) -> int | None:
    """Choice `index`'s seed for a request seeded `seed`: choice 0 keeps the seed itself (so
    n=1 and the first of n choices are the same answer), choice i gets
    (seed + i * 0x9E3779B97F4A7C15) mod 2**64. Same request and seed -> the same choices.
    No seed: None, each choice drawn from fresh entropy."""
    if seed is None:
        return None
    return (seed + index * SEED_STEP) % 2**64


def child_id(request_id: str, index: int) -> str:
    """Choice `index`'s request id, `<request id>-<index>`, the request id cut short when
    the whole would pass the request id's bound (so a choice's id is a valid one too)."""
    suffix = f"-{index}"
    return request_id[: MAX_REQUEST_ID_CHARS - len(suffix)] + suffix


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
    # a prompt sent as token ids (then `prompt` is unused: the text is what they decode to)
    prompt_ids: tuple[int, ...] | None = None


@dataclass(frozen=True)
class Prompt:
    """A checked prompt: its text (for one sent as token ids, what they decode to, special
    tokens shown by name) and its tokens."""

    text: str
    token_ids: list[int]


@dataclass(frozen=True)
class Prepared:
    """One engine request, checked and tokenized, not queued yet."""

    request_id: str
    prompt: Prompt
    params: SamplingParams
    deadline: float | None


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
    # one per token id when the request asked (eos included when it ended the answer)
    logprobs: list[TokenLogprob] = field(default_factory=list)
    # one per prompt token when the request asked, the first None (nothing before it)
    prompt_logprobs: list[TokenLogprob | None] | None = None
    prompt_ids: list[int] = field(default_factory=list)  # the prompt's tokens


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

    @property
    def prompt_ids(self) -> list[int]:
        return self._request.prompt_ids

    def cancel(self) -> None:
        """Idempotent: the engine drops a cancelled request at its next step; a finished one
        is already gone."""
        self._request.cancelled = True

    async def events(self) -> AsyncIterator[StreamEvent]:
        """The engine's events for this request, the last one with its finish_reason."""
        async with aclosing(self.batches()) as batches:
            async for batch in batches:
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
        logprobs: list[TokenLogprob] = []
        prompt_logprobs: list[TokenLogprob | None] | None = None
        last: StreamEvent | None = None
        async for event in self.events():
            texts.append(event.text)
            token_ids += event.token_ids
            logprobs += event.logprobs
            if event.prompt_logprobs is not None:  # the first event's, when asked
                prompt_logprobs = list(event.prompt_logprobs)
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
            logprobs=logprobs,
            prompt_logprobs=prompt_logprobs,
            prompt_ids=self._request.prompt_ids,
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
        self.token_text = TokenText(tokenizer)
        # the artifact's own calibration and threshold; server/app.py puts the serve
        # options' HandOver here
        self.handover = HandOver(manifest.confidence)
        self._inbox: EventInbox | None = None  # on the running loop, made at the first submit

    @property
    def scores_prompts(self) -> bool:
        """Whether the served artifact can give prompt logprobs (echo, prompt_logprobs)."""
        return self.engine.scores_prompts

    @property
    def judges_answers(self) -> bool:
        """Whether answers get a confidence (the artifact has a calibration): then the doors
        that answer questions ask the engine for each token's logprob."""
        return self.handover.enabled

    def answer_knobs(self, knobs: Knobs) -> Knobs:
        """The knobs of a question's answer: each token's logprob asked for when answers are
        judged and the client did not ask (the verdict needs them; the door shows them only
        when asked)."""
        if self.judges_answers and knobs.logprobs is None:
            return replace(knobs, logprobs=0)
        return knobs

    def judge_answer(
        self,
        token_ids: Sequence[int],
        logprobs: Sequence[TokenLogprob],
        threshold: float | None,
        observe: Callable[[Verdict], None],
    ) -> Verdict:
        """The hand-over verdict on one answer, from its tokens and their logprobs (one each,
        as events give them; the eos left out), against `threshold` (a request's own, already
        checked; None = the server's); `observe` gets it (Metrics.observe_answer)."""
        verdict = NO_VERDICT
        if self.handover.enabled:
            eos = self.manifest.eos_token_id
            values = [lp.logprob for lp in logprobs]
            verdict = self.handover.judge(answer_logprobs(token_ids, values, eos), threshold)
        observe(verdict)
        return verdict

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
        (generation,) = self.submit_all([ask], 1)
        return generation

    def submit_all(self, asks: Sequence[Ask], n: int) -> list[Generation]:
        """`n` choices for each ask, queued: `prepare`, then `queue`."""
        return self.queue(self.prepare(asks, n))

    def prepare(self, asks: Sequence[Ask], n: int) -> list[Prepared]:
        """`n` choices for each of `asks` (a batch shares one request id: the first's), every
        ask checked and tokenized once, nothing queued. Choice i of ask j is entry j * n + i
        (OpenAI's order), seeded `choice_seed(seed, i)` (each ask's choices as if it came
        alone) and named `<request id>-<j * n + i>` when there are several."""
        self.last_arrival = time.monotonic()
        if self.draining:
            raise Draining("server is draining; retry on another replica")
        request_id = check_request_id(asks[0].request_id)  # first: a bad request's lines carry it
        logs.annotate(request_id=request_id)
        if not 1 <= n <= MAX_CHOICES:
            raise InvalidArgument("n", f"must be 1 to {MAX_CHOICES} (choices), got {n}")
        checked = [(self._prompt(ask), self._params(ask)) for ask in asks]
        logs.annotate(prompt_tokens=sum(len(prompt.token_ids) for prompt, _ in checked))
        several = len(asks) * n > 1
        return [
            Prepared(
                request_id=child_id(request_id, j * n + i) if several else request_id,
                prompt=prompt,
                params=replace(params, seed=choice_seed(params.seed, i)),
                deadline=ask.deadline,
            )
            for j, (ask, (prompt, params)) in enumerate(zip(asks, checked, strict=True))
            for i in range(n)
        ]

    def queue(self, prepared: Sequence[Prepared]) -> list[Generation]:
        """Queue prepared requests, all or none: a refusal of any (a full queue) cancels the
        ones already queued. Call from the event loop that will read their events."""
        generations: list[Generation] = []
        try:
            for one in prepared:
                generations.append(self._queue(one))
        except BaseException:
            for generation in generations:
                generation.cancel()
            raise
        return generations

    def _params(self, ask: Ask) -> SamplingParams:
        return sampling_params_of(ask.knobs, self.limits, self.scores_prompts)

    def _prompt(self, ask: Ask) -> Prompt:
        """The ask's prompt checked: text tokenized, or token ids checked against the
        vocabulary (before decoding: an id past it could overflow the decoder) and decoded."""
        if ask.prompt_ids is None:
            text = check_text(ask.prompt, ask.field, self.limits)
            prompt = Prompt(text, self.tokenizer.encode(text).ids)
        else:
            vocab = self.manifest.architecture.vocab_size
            bad = [t for t in ask.prompt_ids if not 0 <= t < vocab]
            if bad:
                raise InvalidArgument(
                    ask.field, f"token ids must be 0 to {vocab - 1}, got {bad[0]}"
                )
            ids = list(ask.prompt_ids)
            prompt = Prompt(self.tokenizer.decode(ids, skip_special_tokens=False), ids)
        max_positions = self.manifest.architecture.max_positions
        check_prompt_tokens(len(prompt.token_ids), ask.field, max_positions)
        return prompt

    def _queue(self, prepared: Prepared) -> Generation:
        queue: asyncio.Queue[StreamEvent] = asyncio.Queue()
        loop = asyncio.get_running_loop()
        if self._inbox is None or self._inbox.loop is not loop:
            self._inbox = EventInbox(loop)
        request = Request(
            request_id=prepared.request_id,
            prompt_ids=list(prepared.prompt.token_ids),
            params=prepared.params,
            emit=self._inbox.sink(queue),
            deadline=prepared.deadline,
        )
        self.engine.submit(request)
        return Generation(request, queue)


async def collect_all(generations: Sequence[Generation]) -> list[Completion]:
    """Every choice's Completion, in order. The first failure cancels the other choices
    (their requests too) and is raised."""
    tasks = [asyncio.ensure_future(g.collect()) for g in generations]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
        for task in tasks:
            if task.done() and task.exception() is not None:
                raise task.exception()  # type: ignore[misc]
        return [task.result() for task in tasks]
    finally:
        for task in tasks:
            task.cancel()
        for generation in generations:
            generation.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)  # nothing left unretrieved


async def interleave(
    generations: Sequence[Generation],
) -> AsyncIterator[tuple[int, list[StreamEvent]]]:
    """(choice index, batch of its events) of several generations, as each comes. The
    first failure ends it (the other choices cancelled) and is raised; leaving early (the
    consumer closes it: wrap it in contextlib.aclosing) cancels every choice."""
    if len(generations) == 1:  # no relay needed; closing this closes (and cancels) it at once
        async with aclosing(generations[0].batches()) as batches:
            async for batch in batches:
                yield 0, batch
        return
    merged: asyncio.Queue[tuple[int, list[StreamEvent] | None, Exception | None]]
    merged = asyncio.Queue()

    async def relay(index: int, generation: Generation) -> None:
        try:
            async for batch in generation.batches():
                merged.put_nowait((index, batch, None))
        except Exception as e:  # GenerationFailed: the consumer raises it
            merged.put_nowait((index, None, e))
        else:
            merged.put_nowait((index, None, None))

    tasks = [asyncio.ensure_future(relay(i, g)) for i, g in enumerate(generations)]
    try:
        running = len(tasks)
        while running:
            index, batch, error = await merged.get()
            if error is not None:
                raise error
            if batch is None:
                running -= 1
            else:
                yield index, batch
    finally:
        for task in tasks:
            task.cancel()
        for generation in generations:
            generation.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def deadline_in(seconds: float | None) -> float | None:
    """A time.monotonic() deadline `seconds` from now (None stays None)."""
    return None if seconds is None else time.monotonic() + seconds
