"""What one request measured: the unit every figure and report is built from."""

from __future__ import annotations

from dataclasses import dataclass, field

OK = "OK"
# Not a gRPC status: the client itself failed (a bug or a malformed reply), kept apart so
# it is never mistaken for something the server said.
CLIENT_ERROR = "CLIENT_ERROR"


@dataclass
class RequestRecord:
    """One request, times in seconds (perf_counter based, start relative to the run start)."""

    index: int
    rpc: str  # "GenerateStream" or "Answer"
    start_s: float
    e2e_s: float
    ttft_s: float | None = None  # None for unary RPCs and streams that sent no token
    itl_s: list[float] = field(default_factory=list)  # one entry per token after the first
    output_tokens: int = 0
    prompt_tokens: int = 0
    status: str = OK  # gRPC status code name, or CLIENT_ERROR
    error: str = ""
    finish_reason: str = ""

    @property
    def ok(self) -> bool:
        return self.status == OK

    @property
    def tpot_s(self) -> float | None:
        """Time per output token after the first: (e2e - ttft) / (output_tokens - 1)."""
        if self.ttft_s is None or self.output_tokens < 2:
            return None
        return (self.e2e_s - self.ttft_s) / (self.output_tokens - 1)
