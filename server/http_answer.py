"""Answering one OpenAI call: its Asks to the engine, then one JSON reply or a stream.

server/http_app.py routes a call here once its body is converted (server/openai_requests.py).
All of the request's engine requests (k prompts x n choices) are checked and queued together
or refused together, before any reply is sent; the replies are written by
server/openai_replies.py. A request that needs no generation (echo with max_tokens 0 and no
logprobs) is answered here from its checked prompts, without the engine.

A client that disconnects ends its requests at once: a stream through Starlette's own
disconnect watch (the stream's generator is closed, and closing it closes the choices'
relay, which cancels every choice), a unary call through `unless_disconnected`.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import aclosing
from dataclasses import dataclass
from typing import TypeVar

from fastapi import Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.datastructures import State

from server.generation import (
    Completion,
    GenerationFailed,
    Generator,
    Prepared,
    collect_all,
    interleave,
)
from server.handover import Verdict
from server.http_schema import StreamOptions
from server.logprobs import TokenLogprob
from server.openai_logprobs import LogprobRenderer
from server.openai_replies import DONE, ChunkWriter, Rendering, Reply, whole
from server.openai_requests import ApiError, Converted
from server.request import FinishReason, StreamEvent

CLIENT_GONE = 499  # nginx's "client closed request": never sent, only counted
FAILED = {FinishReason.DEADLINE: 504, FinishReason.CANCELLED: CLIENT_GONE}
T = TypeVar("T")
Batches = AsyncIterator[tuple[int, list[StreamEvent]]]  # (choice index, its events)


@dataclass(frozen=True)
class Answerer:
    """What answering a call needs from the server around it."""

    generator: Generator
    model: str  # the served model's id
    created: int  # the models' `created` (when the server started)
    observe_answer: Callable[[Verdict], None]  # Metrics.observe_answer

    async def answer(
        self,
        request: Request,
        converted: Converted,
        stream: bool,
        options: StreamOptions | None,
    ) -> Response:
        request.state.names = converted.names  # an InvalidArgument's field, in this request's names
        generator = self.generator
        n = converted.n
        # refusals raise here, before any reply (nothing is queued yet)
        prepared = generator.prepare(converted.asks, n)
        reply = Reply(converted.asks[0].request_id, self.model, self.created, converted.chat)
        rendering = self._rendering(converted, prepared)
        if stream:
            include_usage = bool(options and options.include_usage)
            judge = self._judge(converted) if converted.shown.judged else None
            writer = ChunkWriter(reply, rendering, include_usage, judge)
            if converted.generates:
                batches = interleave(generator.queue(prepared))  # all queued, or none
            else:
                batches = _prompts_only(prepared)
            events = server_sent_events(batches, writer, request.state)
            return StreamingResponse(
                events, media_type="text/event-stream", headers={"cache-control": "no-cache"}
            )
        if converted.generates:
            generations = generator.queue(prepared)
            completions = await unless_disconnected(request, collect_all(generations))
        else:
            completions = [_prompt_only(one) for one in prepared]
        verdicts: list[Verdict] = []
        if converted.shown.judged:
            judge = self._judge(converted)
            verdicts = [judge(c.token_ids, c.logprobs) for c in completions]
        return JSONResponse(whole(reply, rendering, completions, verdicts))

    def _rendering(self, converted: Converted, prepared: Sequence[Prepared]) -> Rendering:
        shown = converted.shown
        renderer = None
        if shown.logprobs is not None:
            token_text, eos = self.generator.token_text, self.generator.manifest.eos_token_id
            renderer = LogprobRenderer(token_text, eos, shown.logprobs)
        return Rendering(
            shown=shown,
            prompts=[one.prompt for one in prepared[:: converted.n]],
            n=converted.n,
            handover_text=self.generator.handover.text,
            renderer=renderer,
        )

    def _judge(
        self, converted: Converted
    ) -> Callable[[Sequence[int], Sequence[TokenLogprob]], Verdict]:
        threshold = converted.shown.handover_threshold

        def judge(token_ids: Sequence[int], logprobs: Sequence[TokenLogprob]) -> Verdict:
            return self.generator.judge_answer(token_ids, logprobs, threshold, self.observe_answer)

        return judge


def _prompt_only(prepared: Prepared) -> Completion:
    """The answer to echo with nothing to generate: the prompt alone (echo adds it)."""
    event = _prompt_only_event(prepared)
    return Completion(
        text="",
        token_ids=[],
        finish_reason=FinishReason.LENGTH,
        prompt_tokens=event.prompt_tokens,
        completion_tokens=0,
        timing=None,
        request_id=prepared.request_id,
        prompt_ids=prepared.prompt.token_ids,
    )


def _prompt_only_event(prepared: Prepared) -> StreamEvent:
    tokens = len(prepared.prompt.token_ids)
    return StreamEvent("", [], prepared.request_id, FinishReason.LENGTH, tokens, 0)


async def _prompts_only(prepared: Sequence[Prepared]) -> Batches:
    for index, one in enumerate(prepared):
        yield index, [_prompt_only_event(one)]


async def server_sent_events(
    batches: Batches, writer: ChunkWriter, state: State
) -> AsyncIterator[bytes]:
    """The stream's bytes, the choices' events as they come. Starlette cancels or closes
    this when the client disconnects; `aclosing` then closes `batches` at once (not
    whenever the garbage collector finalises it), and closing it cancels every choice."""
    try:
        async with aclosing(batches):
            async for index, batch in batches:
                yield b"".join(chunk for event in batch for chunk in writer.chunks(event, index))
    except GenerationFailed as e:
        error = failed_error(e)
        state.outcome = error.code  # the 200 is out: the access line says how it ended
        state.problem = error.message
        yield writer.error(error)
    yield DONE


class ClientGone(Exception):
    """The client disconnected before its answer was ready."""


async def unless_disconnected(request: Request, work: Awaitable[T]) -> T:
    """`work`'s result, or ClientGone (work cancelled) if the client disconnects first.

    uvicorn tells the app of a disconnect only through receive(), which, once the body is
    read, returns at the disconnect: watched beside the work, as StreamingResponse does."""
    task = asyncio.ensure_future(work)
    gone = asyncio.ensure_future(_disconnect(request))
    try:
        await asyncio.wait({task, gone}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        gone.cancel()
        if not task.done():
            task.cancel()
    if not task.done() or task.cancelled():
        raise ClientGone()
    return task.result()


async def _disconnect(request: Request) -> None:
    while (await request.receive())["type"] != "http.disconnect":
        pass


def failed_error(e: GenerationFailed) -> ApiError:
    status = FAILED.get(e.reason, 500)
    return ApiError(status, f"generation {e.reason.value}: {e}")
