"""One request index -> one RPC -> one RequestRecord, timed on the client's clock.

Every failure becomes a record with the gRPC status name: a load test counts errors, it
never stops on them.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import pairwise

import grpc

from loadtest.channels import Metadata
from loadtest.messages import Knobs, build_request, finish_reason_name
from loadtest.prompts import Prompt
from loadtest.record import CLIENT_ERROR, OK, RequestRecord
from proto import kvserve_pb2 as pb
from proto import kvserve_pb2_grpc as pb_grpc


def token_latencies(
    sent: float, arrivals: Sequence[tuple[float, int]]
) -> tuple[float | None, list[float]]:
    """TTFT and per-token ITLs from (arrival time, token count) of token-carrying messages.

    A message with n tokens that came g seconds after the previous one adds n entries of
    g / n: the tokens were produced over that gap, so each one cost g / n."""
    if not arrivals:
        return None, []
    itl: list[float] = []
    for (before, _), (now, n) in pairwise(arrivals):
        itl.extend([(now - before) / n] * n)
    return arrivals[0][0] - sent, itl


def verdict(reply: pb.GenerateResponse) -> tuple[bool | None, float | None]:
    """(handed_over, confidence) of an Answer reply; (None, None) from a server (or stubs)
    without the fields. The confidence is unset when the model has no calibration."""
    try:
        confidence = reply.confidence if reply.HasField("confidence") else None
        return bool(reply.handed_over), confidence
    except (AttributeError, ValueError):  # a contract from before the hand-over
        return None, None


def failure(e: BaseException) -> tuple[str, str]:
    """(status name, message) for an exception raised by an RPC."""
    if isinstance(e, grpc.aio.AioRpcError):
        return e.code().name, e.details() or ""
    return CLIENT_ERROR, f"{type(e).__name__}: {e}"


@dataclass(frozen=True)
class Call:
    """What one measurement needs besides the request: where to send it and how."""

    stub: pb_grpc.GenerationStub
    timeout_s: float
    metadata: Metadata
    origin: float  # perf_counter at the measured run's start; record times count from here


async def measure_stream(call: Call, request: pb.GenerateRequest, index: int) -> RequestRecord:
    arrivals: list[tuple[float, int]] = []
    usage, finish, status, error = pb.Usage(), 0, OK, ""
    sent = time.perf_counter()
    try:
        stream = call.stub.GenerateStream(request, timeout=call.timeout_s, metadata=call.metadata)
        async for msg in stream:
            now = time.perf_counter()  # first thing: the arrival time is the measurement
            if msg.token_ids:
                arrivals.append((now, len(msg.token_ids)))
            if msg.HasField("usage"):
                usage = msg.usage
            finish = msg.finish_reason or finish
    except Exception as e:  # recorded, not raised: see the module docstring
        status, error = failure(e)
    ended = time.perf_counter()
    ttft, itl = token_latencies(sent, arrivals)
    return RequestRecord(
        index=index,
        rpc="GenerateStream",
        start_s=sent - call.origin,
        e2e_s=ended - sent,
        ttft_s=ttft,
        itl_s=itl,
        output_tokens=usage.completion_tokens or sum(n for _, n in arrivals),
        prompt_tokens=usage.prompt_tokens,
        status=status,
        error=error,
        finish_reason=finish_reason_name(finish),
    )


async def measure_unary(
    call: Call, request: pb.GenerateRequest | pb.AnswerRequest, index: int
) -> RequestRecord:
    """Generate or Answer: e2e latency and tokens only (no stream, so no TTFT/ITL)."""
    rpc = "Answer" if isinstance(request, pb.AnswerRequest) else "Generate"
    method = call.stub.Answer if rpc == "Answer" else call.stub.Generate
    reply, status, error = pb.GenerateResponse(), OK, ""
    sent = time.perf_counter()
    try:
        reply = await method(request, timeout=call.timeout_s, metadata=call.metadata)
    except Exception as e:  # recorded, not raised: see the module docstring
        status, error = failure(e)
    ended = time.perf_counter()
    handed_over, confidence = verdict(reply) if rpc == "Answer" and status == OK else (None, None)
    return RequestRecord(
        index=index,
        rpc=rpc,
        start_s=sent - call.origin,
        e2e_s=ended - sent,
        output_tokens=reply.usage.completion_tokens or len(reply.token_ids),
        prompt_tokens=reply.usage.prompt_tokens,
        status=status,
        error=error,
        finish_reason=finish_reason_name(reply.finish_reason),
        handed_over=handed_over,
        confidence=confidence,
    )


@dataclass(frozen=True)
class Sender:
    """Request `index` of a run: its prompt and target in turn, built, sent and measured."""

    stubs: Sequence[pb_grpc.GenerationStub]  # one per target
    targets: Sequence[str]
    workload: Sequence[Prompt]
    knobs: Knobs
    timeout_s: float
    metadata: Metadata
    unary: bool  # Generate instead of GenerateStream (questions always use Answer)
    origin: float  # perf_counter at the run start; records' start_s count from here
    id_prefix: str  # request ids `<prefix>-<index>` find the request in the server's log
    worker: int = 0

    async def __call__(self, index: int, scheduled: float) -> RequestRecord:
        prompt = self.workload[index % len(self.workload)]
        slot = index % len(self.stubs)
        request = build_request(prompt, self.knobs, f"{self.id_prefix}-{index}", index)
        call = Call(self.stubs[slot], self.timeout_s, self.metadata, self.origin)
        if prompt.question or self.unary:
            record = await measure_unary(call, request, index)
        else:
            record = await measure_stream(call, request, index)
        record.scheduled_s = scheduled - self.origin
        record.target, record.worker = self.targets[slot], self.worker
        return record
