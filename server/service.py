"""The gRPC servicer: protobuf in, dataclasses to the engine, protobuf out.

The only module that touches protobuf messages. Thin by design (as TGI's servicer): validate,
tokenize, submit, relay the engine's events, map failures to status codes.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import grpc
from tokenizers import Tokenizer

from artifact import Manifest
from proto import kvserve_pb2 as pb
from proto import kvserve_pb2_grpc as pb_grpc
from server import logs
from server.engine import Engine
from server.request import FinishReason, Request, StreamEvent, Timing
from server.scheduler import QueueFull
from server.validation import (
    InvalidArgument,
    Limits,
    check_prompt_tokens,
    check_text,
    request_id_of,
    sampling_params_of,
)

log = logging.getLogger(__name__)

FINISH = {
    FinishReason.LENGTH: pb.FINISH_REASON_LENGTH,
    FinishReason.STOP: pb.FINISH_REASON_STOP,
    FinishReason.CANCELLED: pb.FINISH_REASON_CANCELLED,
    FinishReason.DEADLINE: pb.FINISH_REASON_CANCELLED,
    FinishReason.ERROR: pb.FINISH_REASON_ERROR,
}
FAILED = {
    FinishReason.DEADLINE: grpc.StatusCode.DEADLINE_EXCEEDED,
    FinishReason.CANCELLED: grpc.StatusCode.CANCELLED,
    FinishReason.ERROR: grpc.StatusCode.INTERNAL,
}


class Draining(Exception):
    """The server is shutting down and takes no new requests."""


class GenerationFailed(Exception):
    def __init__(self, event: StreamEvent) -> None:
        super().__init__(event.error or event.finish_reason.value)
        self.code = FAILED[event.finish_reason]


@dataclass(frozen=True)
class ServiceInfo:
    """Facts the service reports that are not in the manifest."""

    provider: str
    max_batch_size: int
    limits: Limits


class GenerationService(pb_grpc.GenerationServicer):
    def __init__(
        self, engine: Engine, tokenizer: Tokenizer, manifest: Manifest, info: ServiceInfo, metrics
    ) -> None:
        self.engine = engine
        self.tokenizer = tokenizer
        self.manifest = manifest
        self.info = info
        self.metrics = metrics
        self.draining = False

    async def Generate(self, request: pb.GenerateRequest, context) -> pb.GenerateResponse:
        async with self._rpc("Generate", context):
            return await _collect(self._events(request, request.prompt, "prompt", context))

    async def GenerateStream(self, request: pb.GenerateRequest, context):
        async with self._rpc("GenerateStream", context):
            async for event in self._events(request, request.prompt, "prompt", context):
                yield _stream_message(event)

    async def Answer(self, request: pb.AnswerRequest, context) -> pb.GenerateResponse:
        async with self._rpc("Answer", context):
            question = check_text(request.question, "question", self.info.limits)
            prompt = self.manifest.prompt_template.format(question, request.context)
            field = "context" if request.context.strip() else "question"
            return await _collect(self._events(request, prompt, field, context))

    async def GetModelInfo(self, request: pb.ModelInfoRequest, context) -> pb.ModelInfo:
        async with self._rpc("GetModelInfo", context):
            m, arch = self.manifest, self.manifest.architecture
            return pb.ModelInfo(
                model_name=m.model_name,
                architecture="gpt2",
                num_layers=arch.num_layers,
                num_heads=arch.num_heads,
                head_dim=arch.head_dim,
                vocab_size=arch.vocab_size,
                max_positions=arch.max_positions,
                dtype=m.dtype,
                quantization=m.quantization,
                provider=self.info.provider,
                prompt_template=m.prompt_template.question,
                eos_token_id=m.eos_token_id,
                format_version=m.format_version,
                max_batch_size=self.info.max_batch_size,
                default_max_new_tokens=self.info.limits.default_max_new_tokens,
                files_sha256=m.files,
            )

    async def _events(
        self, message, prompt: str, field: str, context
    ) -> AsyncIterator[StreamEvent]:
        """Submit one request to the engine and relay its events until it finishes."""
        if self.draining:
            raise Draining("server is draining; retry on another replica")
        request_id = request_id_of(message)  # first, so even a bad request's lines carry it
        logs.annotate(request_id=request_id)
        params = sampling_params_of(message, self.info.limits)
        prompt_ids = self.tokenizer.encode(check_text(prompt, field, self.info.limits)).ids
        check_prompt_tokens(len(prompt_ids), field, self.manifest.architecture.max_positions)
        logs.annotate(prompt_tokens=len(prompt_ids))
        queue: asyncio.Queue[StreamEvent] = asyncio.Queue()
        loop = asyncio.get_running_loop()
        remaining = context.time_remaining()
        request = Request(
            request_id=request_id,
            prompt_ids=prompt_ids,
            params=params,
            emit=lambda event: loop.call_soon_threadsafe(queue.put_nowait, event),
            deadline=None if remaining is None else time.monotonic() + remaining,
        )
        self.engine.submit(request)
        # the slot is released when the RPC ends however it ends (a client gone, a deadline):
        # not in a `finally` here, since a handler parked at `yield` when the client goes
        # away may never resume to run it (grpc issue 43360)
        context.add_done_callback(lambda _context: release(request))
        finished = False
        while not finished:
            event = await queue.get()
            finished = event.finish_reason is not None
            logs.on_event(event)
            if event.finish_reason in FAILED:
                raise GenerationFailed(event)
            yield event

    @asynccontextmanager
    async def _rpc(self, rpc: str, context):
        """Map failures to status codes; count and access-log every RPC with its outcome."""
        start = time.monotonic()
        record = logs.begin(rpc)
        code, message = grpc.StatusCode.OK, ""
        try:
            yield
        except InvalidArgument as e:
            code, message = grpc.StatusCode.INVALID_ARGUMENT, str(e)
        except QueueFull as e:
            code, message = grpc.StatusCode.RESOURCE_EXHAUSTED, str(e)
        except Draining as e:
            code, message = grpc.StatusCode.UNAVAILABLE, str(e)
        except GenerationFailed as e:
            code, message = e.code, str(e)
        except (asyncio.CancelledError, GeneratorExit):
            # GeneratorExit: a stream cancelled while parked at `yield` is closed, not cancelled
            code = grpc.StatusCode.CANCELLED
            raise
        except Exception as e:  # a bug: INTERNAL (counted as an error), never a silent OK
            code, message = grpc.StatusCode.INTERNAL, f"internal error: {type(e).__name__}"
            log.exception("%s failed", rpc)
        finally:
            elapsed = time.monotonic() - start
            self.metrics.observe_rpc(rpc, code.name, elapsed)
            logs.access(record, code.name, elapsed, message)
        if code is not grpc.StatusCode.OK:
            await context.abort(code, message)


def release(request: Request) -> None:
    """Idempotent: the engine drops a cancelled request at its next step; a finished one is
    already gone."""
    request.cancelled = True


async def _collect(events: AsyncIterator[StreamEvent]) -> pb.GenerateResponse:
    texts: list[str] = []
    token_ids: list[int] = []
    last: StreamEvent | None = None
    async for event in events:
        texts.append(event.text)
        token_ids += event.token_ids
        last = event
    return pb.GenerateResponse(
        text="".join(texts),
        token_ids=token_ids,
        finish_reason=FINISH[last.finish_reason],
        usage=pb.Usage(prompt_tokens=last.prompt_tokens, completion_tokens=last.completion_tokens),
        timing=_timing(last.timing),
        request_id=last.request_id,
    )


def _stream_message(event: StreamEvent) -> pb.GenerateStreamResponse:
    message = pb.GenerateStreamResponse(
        text=event.text, token_ids=event.token_ids, request_id=event.request_id
    )
    if event.finish_reason is not None:
        message.finish_reason = FINISH[event.finish_reason]
        message.usage.prompt_tokens = event.prompt_tokens
        message.usage.completion_tokens = event.completion_tokens
        message.timing.CopyFrom(_timing(event.timing))
    return message


def _timing(timing: Timing | None) -> pb.Timing:
    if timing is None:
        return pb.Timing()
    return pb.Timing(
        queue_seconds=timing.queue_seconds,
        time_to_first_token_seconds=timing.time_to_first_token_seconds,
        total_seconds=timing.total_seconds,
    )
