"""Request checks at the edge: every bad field becomes one InvalidArgument naming it.

Door-neutral: each front door converts its wire request into `Knobs` (gRPC from the
GenerateRequest/AnswerRequest fields, HTTP from the OpenAI body) and one function checks
them and returns the engine's SamplingParams dataclass. Field names are the gRPC ones; a
door that calls a knob something else renames the field in its error (max_tokens, ...).
"""

from __future__ import annotations

import math
import re
import uuid
from dataclasses import dataclass

from server.logprobs import MAX_TOP_LOGPROBS
from server.sampling import SamplingParams

MAX_REQUEST_ID_CHARS = 128
REQUEST_ID = re.compile(rf"^[A-Za-z0-9._:\-]{{1,{MAX_REQUEST_ID_CHARS}}}$")
MAX_SEED = 2**64 - 1  # the wire's uint64
CANNOT_SCORE = "this artifact cannot score prompts; export it with --attention kernel"


class InvalidArgument(ValueError):
    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field
        self.problem = problem


@dataclass(frozen=True)
class Limits:
    default_max_new_tokens: int  # kvserve-serve options: defaults in ServeConfig
    max_new_tokens: int
    max_stop_strings: int = 8
    max_stop_length: int = 64
    max_prompt_chars: int = 64_000
    vocab_size: int = 0  # top_k above it is refused (0 = unknown: not checked)


@dataclass(frozen=True)
class Knobs:
    """A request's generation settings as its front door received them; None = not sent
    (then the default applies), so an explicit bad value is refused, never replaced."""

    max_new_tokens: int | None = None
    temperature: float = 0.0
    top_k: int = 0
    top_p: float | None = None
    repetition_penalty: float | None = None
    stop: tuple[str, ...] = ()
    seed: int | None = None
    ignore_eos: bool = False
    logprobs: int | None = None  # each generated token's logprob + N alternatives (0-20)
    prompt_logprobs: int | None = None  # each prompt token's logprob + N alternatives (0-20)


def check_request_id(rid: str) -> str:
    """The caller's request id, checked; a fresh one when it sent none."""
    if not rid:
        return uuid.uuid4().hex
    if not REQUEST_ID.match(rid):
        problem = f"use 1-{MAX_REQUEST_ID_CHARS} characters from A-Z a-z 0-9 . _ : -"
        raise InvalidArgument("request_id", problem)
    return rid


def sampling_params_of(knobs: Knobs, limits: Limits, scores_prompts: bool = True) -> SamplingParams:
    """The engine's parameters for `knobs`, every field checked. `scores_prompts`: whether
    the served artifact can give prompt logprobs (Engine.scores_prompts)."""
    # optional fields: unset means the default; a value that is set must be a real one
    logprobs = _top_count(knobs.logprobs, "logprobs")
    prompt_logprobs = _top_count(knobs.prompt_logprobs, "prompt_logprobs")
    if prompt_logprobs is not None and not scores_prompts:
        raise InvalidArgument("prompt_logprobs", CANNOT_SCORE)
    max_new = limits.default_max_new_tokens
    if knobs.max_new_tokens is not None:
        max_new = knobs.max_new_tokens
        if max_new < 0 or (max_new == 0 and prompt_logprobs is None):
            raise InvalidArgument(
                "max_new_tokens",
                "must be >= 1 (unset = the default; 0 only with prompt_logprobs: score the prompt)",
            )
    if max_new > limits.max_new_tokens:
        raise InvalidArgument("max_new_tokens", f"at most {limits.max_new_tokens}, got {max_new}")
    temperature = _finite(knobs.temperature, "temperature")
    if temperature < 0:
        raise InvalidArgument("temperature", f"must be >= 0 (0 = greedy), got {temperature}")
    top_p = 1.0 if knobs.top_p is None else _finite(knobs.top_p, "top_p")
    if not 0 < top_p <= 1:
        raise InvalidArgument("top_p", f"must be in (0, 1] (unset = off), got {top_p}")
    penalty = 1.0
    if knobs.repetition_penalty is not None:
        penalty = _finite(knobs.repetition_penalty, "repetition_penalty")
    if penalty <= 0:
        raise InvalidArgument("repetition_penalty", f"must be > 0 (unset = off), got {penalty}")
    if knobs.top_k < 0:
        raise InvalidArgument("top_k", f"must be >= 0 (0 = off), got {knobs.top_k}")
    if limits.vocab_size and knobs.top_k > limits.vocab_size:
        # also where a negative int32 lands: uint32 on the wire makes -1 into 4294967295
        raise InvalidArgument(
            "top_k", f"must be 0 (off) to {limits.vocab_size} (the vocabulary), got {knobs.top_k}"
        )
    if knobs.seed is not None and not 0 <= knobs.seed <= MAX_SEED:
        raise InvalidArgument("seed", f"must be 0 to 2**64 - 1, got {knobs.seed}")
    stop = tuple(knobs.stop)
    if len(stop) > limits.max_stop_strings:
        raise InvalidArgument("stop", f"at most {limits.max_stop_strings} strings, got {len(stop)}")
    for s in stop:
        if not s or len(s) > limits.max_stop_length:
            raise InvalidArgument("stop", f"each must be 1-{limits.max_stop_length} characters")
    return SamplingParams(
        max_new_tokens=max_new,
        temperature=temperature,
        top_k=knobs.top_k,
        top_p=top_p,
        repetition_penalty=penalty,
        stop=stop,
        seed=knobs.seed,
        ignore_eos=knobs.ignore_eos,
        logprobs=logprobs,
        prompt_logprobs=prompt_logprobs,
    )


def _top_count(value: int | None, field: str) -> int | None:
    """A logprobs knob: None = off, else 0 to MAX_TOP_LOGPROBS alternatives per token."""
    if value is not None and not 0 <= value <= MAX_TOP_LOGPROBS:
        raise InvalidArgument(
            field,
            f"must be 0 to {MAX_TOP_LOGPROBS} (alternatives per token; unset = off), got {value}",
        )
    return value


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
