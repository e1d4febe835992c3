"""Protobuf requests from a Prompt and the generation knobs: the only place that builds them."""

from __future__ import annotations

from dataclasses import dataclass

from loadtest.config import LoadConfig
from loadtest.prompts import Prompt
from proto import kvserve_pb2 as pb


@dataclass(frozen=True)
class Knobs:
    """The generation settings every request of a run shares (a synthetic prompt may carry
    its own max_new_tokens; `seed` is per request: seed + index)."""

    max_new_tokens: int
    temperature: float = 0.0
    ignore_eos: bool = False
    top_k: int = 0
    top_p: float = 0.0
    repetition_penalty: float = 0.0
    stop: tuple[str, ...] = ()
    seed: int | None = None

    @classmethod
    def from_config(cls, config: LoadConfig) -> Knobs:
        return cls(
            max_new_tokens=config.max_new_tokens,
            temperature=config.temperature,
            ignore_eos=config.ignore_eos,
            top_k=config.top_k,
            top_p=config.top_p,
            repetition_penalty=config.repetition_penalty,
            stop=config.stop,
            seed=config.sampling_seed,
        )


def build_request(
    prompt: Prompt, knobs: Knobs, request_id: str, index: int = 0
) -> pb.GenerateRequest | pb.AnswerRequest:
    """An AnswerRequest for a question, else a GenerateRequest (for either RPC)."""
    common = dict(
        request_id=request_id,
        max_new_tokens=prompt.max_new_tokens or knobs.max_new_tokens,
        temperature=knobs.temperature,
        ignore_eos=knobs.ignore_eos,
        top_k=knobs.top_k,
        stop=knobs.stop,
    )
    # 0 = off in the load tester's flags; on the wire "off" is an unset field
    if knobs.top_p:
        common["top_p"] = knobs.top_p
    if knobs.repetition_penalty:
        common["repetition_penalty"] = knobs.repetition_penalty
    if knobs.seed is not None:
        common["seed"] = knobs.seed + max(index, 0)
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
