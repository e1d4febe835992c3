"""What one request measured: the unit every figure and report is built from."""

from __future__ import annotations

from dataclasses import dataclass, field

OK = "OK"
# Not a gRPC status: the client itself failed (a bug or a malformed reply), kept apart so
# it is never mistaken for something the server said.
CLIENT_ERROR = "CLIENT_ERROR"
# Replies that answer a question, which a kvserve server judges (confidence, hand-over)
ANSWER_RPCS = ("Answer", "/v1/chat/completions")


@dataclass
class RequestRecord:
    """One request, times in seconds (perf_counter based, relative to the measured run's
    start: warmup requests of an open-loop run start before 0)."""

    index: int
    rpc: str  # "GenerateStream", "Generate" or "Answer"
    start_s: float  # when it was sent
    e2e_s: float
    ttft_s: float | None = None  # None for unary RPCs and streams that sent no token
    itl_s: list[float] = field(default_factory=list)  # one entry per token after the first
    output_tokens: int = 0
    prompt_tokens: int = 0
    status: str = OK  # gRPC status code name, or CLIENT_ERROR
    error: str = ""
    finish_reason: str = ""
    scheduled_s: float | None = None  # when it should have been sent (None: = start_s)
    target: str = ""
    worker: int = 0
    # an answer's verdict (Answer RPC, chat completions): None when the reply carried none
    handed_over: bool | None = None  # the reply was the server's hand-over text
    confidence: float | None = None  # calibrated P(right); None: the model has no calibration

    @property
    def ok(self) -> bool:
        return self.status == OK

    @property
    def answers_a_question(self) -> bool:
        return self.rpc in ANSWER_RPCS

    @property
    def end_s(self) -> float:
        return self.start_s + self.e2e_s

    @property
    def lag_s(self) -> float:
        """Send lag: actual minus scheduled send time (the client's own delay)."""
        return 0.0 if self.scheduled_s is None else self.start_s - self.scheduled_s

    @property
    def tpot_s(self) -> float | None:
        """Time per output token after the first: (e2e - ttft) / (output_tokens - 1)."""
        if self.ttft_s is None or self.output_tokens < 2:
            return None
        return (self.e2e_s - self.ttft_s) / (self.output_tokens - 1)

    @property
    def first_token_s(self) -> float:
        """TTFT as the client saw it: a unary reply brings its first token with its last."""
        return self.e2e_s if self.ttft_s is None else self.ttft_s
