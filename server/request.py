"""A generation request as the engine sees it, and what the engine sends back for it.

Plain dataclasses: the service converts protobuf at the edge, everything inside uses these.
The scheduler moves a request from WAITING to RUNNING; the update stage (server/update.py)
appends its tokens, streams its text and finishes it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum
from typing import TYPE_CHECKING

import numpy as np

from server.logprobs import TokenLogprob
from server.sampling import SamplingParams
from server.text_stream import TextStream

if TYPE_CHECKING:
    from server.blocks import BlockTable


class RequestStatus(Enum):
    WAITING = "waiting"
    RUNNING = "running"
    FINISHED = "finished"


class FinishReason(Enum):
    LENGTH = "length"  # max_new_tokens or the context window
    STOP = "stop"  # eos or a stop string
    CANCELLED = "cancelled"
    DEADLINE = "deadline"
    ERROR = "error"


@dataclass(frozen=True)
class Timing:
    queue_seconds: float
    time_to_first_token_seconds: float
    total_seconds: float


@dataclass(frozen=True)
class StreamEvent:
    """New text for one request; the last event of a request carries `finish_reason`."""

    text: str
    token_ids: list[int]
    request_id: str = ""
    finish_reason: FinishReason | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    timing: Timing | None = None
    error: str = ""
    logprobs: tuple[TokenLogprob, ...] = ()  # one per token id, when the request asked
    # the request's first event only, when it asked: one per prompt token, the first None
    prompt_logprobs: tuple[TokenLogprob | None, ...] | None = None


@dataclass(eq=False)
class Request:
    request_id: str
    prompt_ids: list[int]
    params: SamplingParams
    emit: Callable[[StreamEvent], None]  # thread-safe sink; called from the engine thread
    deadline: float | None = None  # time.monotonic() value
    arrival: float = field(default_factory=time.monotonic)
    status: RequestStatus = RequestStatus.WAITING
    output_ids: list[int] = field(default_factory=list)
    cancelled: bool = False  # set by the service thread; read by the engine at each step
    scheduled_at: float | None = None
    first_token_at: float | None = None
    last_token_at: float | None = None
    rng: np.random.Generator = field(init=False)  # this request's own: seeds hold in any batch
    text: TextStream | None = field(default=None, init=False)  # opened by the update stage
    # paged cache (server/scheduler.py): tokens whose keys/values are in the cache, and
    # the blocks that hold them; the scheduler's alone
    computed: int = field(default=0, init=False)
    blocks: BlockTable | None = field(default=None, init=False, repr=False)
    # prompt_logprobs: the prompt tokens' logprobs as scoring chunks run (the update stage's)
    prompt_scores: list[TokenLogprob | None] | None = field(default=None, init=False, repr=False)
    prompt_scores_sent: bool = field(default=False, init=False)

    def __post_init__(self) -> None:
        self.rng = np.random.default_rng(self.params.seed)

    @property
    def token_ids(self) -> list[int]:
        """Prompt then generated tokens: what the cache holds once all are computed."""
        return self.prompt_ids + self.output_ids

    def tokens_at(self, start: int, length: int) -> list[int]:
        """`token_ids[start : start + length]` without joining the two lists (a decode step
        reads one generated token)."""
        cut = len(self.prompt_ids)
        if start >= cut:
            return self.output_ids[start - cut : start - cut + length]
        return self.token_ids[start : start + length]

    @property
    def seen_tokens(self) -> np.ndarray:
        return np.asarray(self.prompt_ids + self.output_ids, dtype=np.int64)

    def timing(self, now: float) -> Timing:
        scheduled = self.scheduled_at or now
        first = self.first_token_at or now
        return Timing(scheduled - self.arrival, first - self.arrival, now - self.arrival)
