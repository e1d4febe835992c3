"""The gRPC servicer: protobuf in, dataclasses to the engine, protobuf out.

The only module that touches protobuf messages. Thin by design (as TGI's servicer): convert
the message, hand it to the door-neutral Generator (server/generation.py, which the HTTP
door calls too), relay its events, map failures to status codes.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace

import grpc

from proto import kvserve_pb2 as pb
from proto import kvserve_pb2_grpc as pb_grpc
from server import logs
from server.generation import (
    Ask,
    Completion,
    Draining,
    Generation,
    GenerationFailed,
    Generator,
    InvalidArgument,
    Knobs,
    QueueFull,
    deadline_in,
)
from server.handover import check_threshold
from server.logprobs import TokenLogprob
from server.request import FinishReason, StreamEvent, Timing
from server.token_text import TokenText
from server.validation import Limits

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


@dataclass(frozen=True)
class ServiceInfo:
    """Facts the service reports that are not in the manifest."""

    provider: str
    max_batch_size: int
    limits: Limits


class GenerationService(pb_grpc.GenerationServicer):
    def __init__(self, generator: Generator, info: ServiceInfo, metrics) -> None:
        self.generator = generator
        self.info = info
        self.metrics = metrics

    @property
    def manifest(self):
        return self.generator.manifest

    async def Generate(self, request: pb.GenerateRequest, context) -> pb.GenerateResponse:
        async with self._rpc("Generate", context):
            generation = self._submit(request, request.prompt, "prompt", knobs_of(request), context)
            return _response(await generation.collect(), self.generator.token_text)

    async def GenerateStream(self, request: pb.GenerateRequest, context):
        async with self._rpc("GenerateStream", context):
            generation = self._submit(request, request.prompt, "prompt", knobs_of(request), context)
            token_text = self.generator.token_text
            async for event in generation.events():
                yield _stream_message(event, generation.prompt_ids, token_text)

    async def Answer(self, request: pb.AnswerRequest, context) -> pb.GenerateResponse:
        """The answer, judged: its confidence, and the hand-over text instead of the guess
        when the confidence is below the threshold (the request's, else the server's)."""
        async with self._rpc("Answer", context):
            threshold = None
            if request.HasField("handover_threshold"):
                threshold = check_threshold(request.handover_threshold, "handover_threshold")
            prompt, field = self.generator.answer(request.question, request.context)
            knobs = self.generator.answer_knobs(knobs_of(request))
            generation = self._submit(request, prompt, field, knobs, context)
            completion = await generation.collect()
            verdict = self.generator.judge_answer(
                completion.token_ids, completion.logprobs, threshold, self.metrics.observe_answer
            )
            if not request.HasField("logprobs"):  # asked for here, not by the client
                completion = replace(completion, logprobs=[])
            response = _response(completion, self.generator.token_text)
            if verdict.confidence is not None:
                response.confidence = verdict.confidence
            if verdict.handed_over:
                response.handed_over = True
                response.text = self.generator.handover.text
            return response

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

    def _submit(
        self,
        message: pb.GenerateRequest | pb.AnswerRequest,
        prompt: str,
        field: str,
        knobs: Knobs,
        context: grpc.aio.ServicerContext,
    ) -> Generation:
        """Queue the request; its slot is released when the RPC ends however it ends (a
        client gone, a deadline): by the RPC's done-callback, since a handler parked at
        `yield` when the client goes away may never resume (grpc issue 43360)."""
        deadline = deadline_in(context.time_remaining())
        ask = Ask(prompt, field, knobs, message.request_id, deadline)
        generation = self.generator.submit(ask)
        context.add_done_callback(lambda _context: generation.cancel())
        return generation

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
            code, message = FAILED[e.reason], str(e)
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


def knobs_of(message: pb.GenerateRequest | pb.AnswerRequest) -> Knobs:
    """The knob fields GenerateRequest and AnswerRequest share; an unset optional is None."""

    def optional(name: str):
        return getattr(message, name) if message.HasField(name) else None

    return Knobs(
        max_new_tokens=optional("max_new_tokens"),
        temperature=message.temperature,
        top_k=message.top_k,
        top_p=optional("top_p"),
        repetition_penalty=optional("repetition_penalty"),
        stop=tuple(message.stop),
        seed=optional("seed"),
        ignore_eos=message.ignore_eos,
        logprobs=optional("logprobs"),
        prompt_logprobs=optional("prompt_logprobs"),
    )


def _response(completion: Completion, token_text: TokenText) -> pb.GenerateResponse:
    return pb.GenerateResponse(
        text=completion.text,
        token_ids=completion.token_ids,
        finish_reason=FINISH[completion.finish_reason],
        usage=pb.Usage(
            prompt_tokens=completion.prompt_tokens, completion_tokens=completion.completion_tokens
        ),
        timing=_timing(completion.timing),
        request_id=completion.request_id,
        logprobs=_logprobs(completion.logprobs, token_text),
        prompt_logprobs=_prompt_logprobs(
            completion.prompt_logprobs, completion.prompt_ids, token_text
        ),
    )


def _logprobs(logprobs: Sequence[TokenLogprob], token_text: TokenText) -> list[pb.TokenLogprob]:
    return [_logprob(lp, token_text) for lp in logprobs]


def _prompt_logprobs(
    logprobs: Sequence[TokenLogprob | None] | None,
    prompt_ids: Sequence[int],
    token_text: TokenText,
) -> list[pb.TokenLogprob]:
    """The prompt's: its first token has no logprob (nothing before it), only id and text."""
    if logprobs is None:
        return []
    return [
        _logprob(lp, token_text)
        if lp is not None
        else pb.TokenLogprob(token_id=token_id, token=token_text.text_of(token_id))
        for token_id, lp in zip(prompt_ids, logprobs, strict=True)
    ]


def _logprob(lp: TokenLogprob, token_text: TokenText) -> pb.TokenLogprob:
    return pb.TokenLogprob(
        token_id=lp.token_id,
        logprob=lp.logprob,
        token=token_text.text_of(lp.token_id),
        alternatives=[
            pb.TokenLogprob.Alternative(
                token_id=token_id, logprob=logprob, token=token_text.text_of(token_id)
            )
            for token_id, logprob in lp.top
        ],
    )


def _stream_message(
    event: StreamEvent, prompt_ids: Sequence[int], token_text: TokenText
) -> pb.GenerateStreamResponse:
    message = pb.GenerateStreamResponse(
        text=event.text,
        token_ids=event.token_ids,
        request_id=event.request_id,
        logprobs=_logprobs(event.logprobs, token_text),
        prompt_logprobs=_prompt_logprobs(event.prompt_logprobs, prompt_ids, token_text),
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
