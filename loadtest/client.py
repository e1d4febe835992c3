"""A small synchronous client for scripts: ask questions, read the model's facts.

    with connect("127.0.0.1:50051") as client:
        text, reply = client.answer("How do I reset my password?", max_new_tokens=48)
        print(client.model_info().model_name)

TLS and a bearer token: pass `security=Security(ca=Path("ca.pem"), token="...")`.
Knobs are GenerateRequest/AnswerRequest fields (max_new_tokens, temperature, top_k, top_p,
repetition_penalty, stop, seed, ignore_eos; answer: handover_threshold); an unknown name
raises ValueError. An answer's reply carries its `confidence` and `handed_over` (then the
text is the server's hand-over text).
"""

from __future__ import annotations

from collections.abc import Iterator

import grpc

from loadtest.channels import Security, sync_channel
from loadtest.errors import TargetUnreachable
from proto import kvserve_pb2 as pb
from proto import kvserve_pb2_grpc as pb_grpc


class Client:
    """One channel to HOST:PORT; every call has a deadline of `timeout_s` seconds."""

    def __init__(
        self, target: str, timeout_s: float = 60.0, security: Security | None = None
    ) -> None:
        self.target = target
        self.timeout_s = timeout_s
        security = security or Security()
        self._channel = sync_channel(target, security)
        self._stub = pb_grpc.GenerationStub(self._channel)
        self._call = {"timeout": timeout_s, "metadata": security.metadata()}

    def wait_ready(self, timeout_s: float = 10.0) -> None:
        try:
            grpc.channel_ready_future(self._channel).result(timeout=timeout_s)
        except grpc.FutureTimeoutError:
            raise TargetUnreachable(
                f"cannot connect to {self.target} within {timeout_s:g}s"
            ) from None

    def answer(self, question: str, context: str = "", **knobs) -> tuple[str, pb.GenerateResponse]:
        """The model's answer (Answer RPC, the artifact's prompt template) and the full reply."""
        request = pb.AnswerRequest(question=question, context=context, **knobs)
        reply = self._stub.Answer(request, **self._call)
        return reply.text, reply

    def generate(self, prompt: str, **knobs) -> tuple[str, pb.GenerateResponse]:
        """Continue a raw prompt (Generate RPC)."""
        request = pb.GenerateRequest(prompt=prompt, **knobs)
        reply = self._stub.Generate(request, **self._call)
        return reply.text, reply

    def stream(self, prompt: str, **knobs) -> Iterator[str]:
        """Text pieces of a raw prompt's continuation as they come (GenerateStream RPC)."""
        request = pb.GenerateRequest(prompt=prompt, **knobs)
        for msg in self._stub.GenerateStream(request, **self._call):
            if msg.text:
                yield msg.text

    def model_info(self) -> pb.ModelInfo:
        return self._stub.GetModelInfo(pb.ModelInfoRequest(), **self._call)

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def connect(
    target: str,
    timeout_s: float = 60.0,
    ready_timeout_s: float = 10.0,
    security: Security | None = None,
) -> Client:
    """A Client whose target already accepts connections (TargetUnreachable if not in time)."""
    client = Client(target, timeout_s, security)
    try:
        client.wait_ready(ready_timeout_s)
    except TargetUnreachable:
        client.close()
        raise
    return client
