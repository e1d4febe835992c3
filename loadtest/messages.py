"""Protobuf requests from a Prompt and the generation knobs: the only place that builds them."""

from __future__ import annotations

from dataclasses import dataclass

from loadtest.config import LoadConfig
from loadtest.prompts import Prompt
from proto import kvserve_pb2 as pb


@dataclass(frozen=True)
class Knobs:
    """The generation settings every request of a run shares."""

    max_new_tokens: int
    temperature: float = 0.0
    ignore_eos: bool = False

    @classmethod
    def from_config(cls, config: LoadConfig) -> Knobs:
        return cls(config.max_new_tokens, config.temperature, config.ignore_eos)


def build_request(
    prompt: Prompt, knobs: Knobs, request_id: str
) -> pb.GenerateRequest | pb.AnswerRequest:
    common = dict(
        request_id=request_id,
        max_new_tokens=knobs.max_new_tokens,
        temperature=knobs.temperature,
        ignore_eos=knobs.ignore_eos,
    )
    if prompt.question:
        return pb.AnswerRequest(question=prompt.text, context=prompt.context, **common)
    return pb.GenerateRequest(prompt=prompt.text, **common)


def finish_reason_name(value: int) -> str:
    """FINISH_REASON_LENGTH -> "LENGTH"; "" when unset."""
    if value == pb.FINISH_REASON_UNSPECIFIED:
        return ""
    try:
        return pb.FinishReason.Name(value).removeprefix("FINISH_REASON_")
    except ValueError:  # a newer server's reason this stub does not know yet
        return str(value)
