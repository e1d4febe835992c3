"""Request checks at the edge: every bad field becomes one INVALID_ARGUMENT naming it.

GenerateRequest and AnswerRequest carry the same knob fields, so one function reads both
(duck-typed on the field names) and returns the engine's SamplingParams dataclass.
"""

from __future__ import annotations

import math
import re
import uuid
from dataclasses import dataclass

from server.sampling import SamplingParams

REQUEST_ID = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")


class InvalidArgument(ValueError):
    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field


@dataclass(frozen=True)
class Limits:
    default_max_new_tokens: int  # kvserve-serve options: defaults in ServeConfig
    max_new_tokens: int
    max_stop_strings: int = 8
    max_stop_length: int = 64
    max_prompt_chars: int = 64_000
    vocab_size: int = 0  # top_k above it is refused (0 = unknown: not checked)


def request_id_of(message) -> str:
    rid = message.request_id
    if not rid:
        return uuid.uuid4().hex
    if not REQUEST_ID.match(rid):
        raise InvalidArgument("request_id", "use 1-128 characters from A-Z a-z 0-9 . _ : -")
    return rid


def sampling_params_of(message, limits: Limits) -> SamplingParams:
    # optional fields: unset means the default; a value that is set must be a real one
    max_new = limits.default_max_new_tokens
    if message.HasField("max_new_tokens"):
        max_new = message.max_new_tokens
        if max_new < 1:
            raise InvalidArgument("max_new_tokens", "must be >= 1 (unset = the default)")
    if max_new > limits.max_new_tokens:
        raise InvalidArgument("max_new_tokens", f"at most {limits.max_new_tokens}, got {max_new}")
    temperature = _finite(message.temperature, "temperature")
    if temperature < 0:
        raise InvalidArgument("temperature", f"must be >= 0 (0 = greedy), got {temperature}")
    top_p = _finite(message.top_p, "top_p") if message.HasField("top_p") else 1.0
    if not 0 < top_p <= 1:
        raise InvalidArgument("top_p", f"must be in (0, 1] (unset = off), got {top_p}")
    penalty = 1.0
    if message.HasField("repetition_penalty"):
        penalty = _finite(message.repetition_penalty, "repetition_penalty")
    if penalty <= 0:
        raise InvalidArgument("repetition_penalty", f"must be > 0 (unset = off), got {penalty}")
    if limits.vocab_size and message.top_k > limits.vocab_size:
        # also where a negative int32 lands: uint32 on the wire makes -1 into 4294967295
        raise InvalidArgument(
            "top_k", f"must be 0 (off) to {limits.vocab_size} (the vocabulary), got {message.top_k}"
        )
    stop = tuple(message.stop)
    if len(stop) > limits.max_stop_strings:
        raise InvalidArgument("stop", f"at most {limits.max_stop_strings} strings, got {len(stop)}")
    for s in stop:
        if not s or len(s) > limits.max_stop_length:
            raise InvalidArgument("stop", f"each must be 1-{limits.max_stop_length} characters")
    return SamplingParams(
        max_new_tokens=max_new,
        temperature=temperature,
        top_k=message.top_k,
        top_p=top_p,
        repetition_penalty=penalty,
        stop=stop,
        seed=message.seed if message.HasField("seed") else None,
        ignore_eos=message.ignore_eos,
    )


def check_text(value: str, field: str, limits: Limits) -> str:
    if not value.strip():
        raise InvalidArgument(field, "must not be empty")
    if len(value) > limits.max_prompt_chars:
        raise InvalidArgument(field, f"at most {limits.max_prompt_chars} characters")
    return value


def check_prompt_tokens(count: int, field: str, max_context: int) -> None:
    if count == 0:  # an empty row would break the batched prefill of its neighbours
        raise InvalidArgument(field, "has no tokens after tokenization")
    if count >= max_context:
        raise InvalidArgument(
            field, f"is {count} tokens; the model's context is {max_context} (leave room to answer)"
        )


def _finite(value: float, field: str) -> float:
    if not math.isfinite(value):
        raise InvalidArgument(field, f"must be a finite number, got {value}")
    return float(value)
