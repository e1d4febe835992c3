"""LoadConfig: one load-test run, as the options (cli.py) or a script describe it; its defaults
are set here only."""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

from loadtest.channels import Security
from loadtest.specs import LengthDist, Slo, Stage

DEFAULT_PROMPT = "Question: How do I reset my password?\nAnswer:"
DEFAULT_REQUESTS = 100  # used when neither --requests nor --duration (nor --schedule) is given
ARRIVALS = ("poisson", "constant")
RPCS = ("stream", "unary")
APIS = ("grpc", "openai")  # kvserve's gRPC service, or any OpenAI-compatible HTTP server

_TARGET = re.compile(r"^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._-]+):(\d{1,5})$")
_URL = re.compile(r"^https?://(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._-]+)(?::(\d{1,5}))?(/\S*)?$")


@dataclass(frozen=True)
class LoadConfig:
    """One load-test run. Times in seconds; `requests`/`duration_s` None = no such limit.

    Closed loop (`concurrency` streams) unless `rate` or `schedule` is set (open loop)."""

    targets: tuple[str, ...]
    api: str = "grpc"  # or "openai": targets are http(s)://HOST:PORT
    # load model
    concurrency: int = 4
    rate: float | None = None  # open loop: requests per second
    arrival: str = "poisson"  # or "constant"
    schedule: tuple[Stage, ...] = ()  # open loop: steps / ramps
    requests: int | None = DEFAULT_REQUESTS
    duration_s: float | None = None
    warmup: int = 0  # requests kept out of the figures
    warmup_s: float = 0.0  # or seconds
    workers: int = 1  # client processes
    # requests
    rpc: str = "stream"  # GenerateStream, or "unary" (Generate / Answer)
    max_new_tokens: int = 64
    temperature: float = 0.0
    top_k: int = 0
    top_p: float = 0.0
    repetition_penalty: float = 0.0
    stop: tuple[str, ...] = ()
    sampling_seed: int | None = None  # request i is sent seed sampling_seed + i
    ignore_eos: bool = False
    timeout_s: float = 60.0  # per-request deadline
    connect_timeout_s: float = 10.0
    security: Security = field(default_factory=Security)
    # workload
    prompt: str = DEFAULT_PROMPT
    prompts_file: Path | None = None
    bundled: bool = False  # the bundled support Q&A questions
    synthetic_input: LengthDist | None = None  # synthetic prompts of these token lengths
    synthetic_output: LengthDist | None = None  # and these output lengths (ignore_eos)
    tokenizer: Path | None = None  # tokenizer.json: exact synthetic prompt lengths
    seed: int = 0  # the client's own randomness: arrivals, synthetic lengths
    # figures and reports
    slo: Slo = field(default_factory=Slo)
    lag_warn_ms: float = 10.0
    metrics_urls: tuple[str, ...] = ()
    out_dir: Path = field(default=Path("runs/loadtest"))
    progress: bool = True
    html: bool = True

    @property
    def target(self) -> str:
        return ",".join(self.targets)

    @property
    def open_loop(self) -> bool:
        return self.rate is not None or bool(self.schedule)

    @property
    def load_model(self) -> str:
        """One line: how requests are sent, for the summary and the reports."""
        if self.schedule:
            return f"open loop, {self.arrival} arrivals, schedule {schedule_text(self.schedule)}"
        if self.rate is not None:
            return f"open loop, {self.arrival} arrivals at {self.rate:g} req/s"
        return f"closed loop, concurrency {self.concurrency}"

    def problem(self) -> str | None:
        """Why this config cannot run (None when it can): one line naming the option."""
        checks = (
            self._targets_problem,
            self._numbers_problem,
            self._load_problem,
            self._workload_problem,
            self.security.problem,
        )
        return next((msg for check in checks if (msg := check()) is not None), None)

    def _targets_problem(self) -> str | None:
        if self.api not in APIS:
            return f"--api must be one of {', '.join(APIS)} (got {self.api!r})"
        if not self.targets:
            return "--target: give at least one HOST:PORT"
        check = openai_target_problem if self.api == "openai" else target_problem
        return next((m for t in self.targets if (m := check(t)) is not None), None)

    def _numbers_problem(self) -> str | None:
        for flag, value, low in (
            ("--concurrency", self.concurrency, 1),
            ("--requests", self.requests, 1),
            ("--max-new-tokens", self.max_new_tokens, 1),
            ("--warmup", self.warmup, 0),
            ("--workers", self.workers, 1),
            ("--temperature", self.temperature, 0),
            ("--top-k", self.top_k, 0),
            ("--top-p", self.top_p, 0),
            ("--repetition-penalty", self.repetition_penalty, 0),
            ("--sampling-seed", self.sampling_seed, 0),
        ):
            if value is not None and value < low:
                return f"{flag} must be >= {low} (got {value})"
        if self.top_p > 1:
            return f"--top-p must be <= 1 (got {self.top_p:g})"
        for flag, value in (
            ("--duration", self.duration_s),
            ("--rate", self.rate),
            ("--timeout", self.timeout_s),
            ("--connect-timeout", self.connect_timeout_s),
            ("--lag-warn-ms", self.lag_warn_ms),
        ):
            if value is not None and not value > 0:  # `not >` also catches NaN
                return f"{flag} must be > 0 (got {value:g})"
        return None

    def _load_problem(self) -> str | None:
        if self.rate is not None and self.schedule:
            return "--rate and --schedule both set the send rate: give one"
        if self.arrival not in ARRIVALS:
            return f"--arrival must be one of {', '.join(ARRIVALS)} (got {self.arrival!r})"
        if self.rpc not in RPCS:
            return f"--rpc must be one of {', '.join(RPCS)} (got {self.rpc!r})"
        if self.requests is None and self.duration_s is None and not self.schedule:
            return "give --requests or --duration (or both)"
        if not self.open_loop and self.workers > self.concurrency:
            return f"--workers ({self.workers}) must be <= --concurrency ({self.concurrency})"
        if self.warmup and self.warmup_s:
            return "--warmup is a request count or a duration, not both"
        for url in self.metrics_urls:
            if not url.startswith(("http://", "https://")):
                return f"--metrics-url: expected http://HOST:PORT/metrics, got {url!r}"
        return None

    def _workload_problem(self) -> str | None:
        sources = sum(
            (self.prompts_file is not None, self.bundled, self.synthetic_input is not None)
        )
        if sources > 1:
            return "give one of --prompts-file, --bundled, --synthetic-input"
        if self.synthetic_output is not None and self.synthetic_input is None:
            return "--synthetic-output needs --synthetic-input"
        if self.tokenizer is not None and not self.tokenizer.is_file():
            return f"--tokenizer: no such file: {self.tokenizer}"
        if sources == 0 and not self.prompt.strip():
            return "--prompt must not be empty"
        return None

    def to_dict(self) -> dict:
        """JSON-ready (paths and specs as strings; no secrets), as stored in the report."""
        out = asdict(self)
        text = lambda v: None if v is None else str(v)  # noqa: E731
        out.update(
            targets=list(self.targets),
            schedule=schedule_text(self.schedule) or None,
            stop=list(self.stop),
            security=self.security.to_dict(),
            prompts_file=text(self.prompts_file),
            synthetic_input=text(self.synthetic_input),
            synthetic_output=text(self.synthetic_output),
            tokenizer=text(self.tokenizer),
            slo=self.slo.to_dict(),
            metrics_urls=list(self.metrics_urls),
            out_dir=str(self.out_dir),
            load_model=self.load_model,
        )
        return out


def schedule_text(stages: tuple[Stage, ...]) -> str:
    return ",".join(str(s) for s in stages)


def openai_target_problem(target: str) -> str | None:
    m = _URL.match(target)
    if m is None:
        return f"--target: expected http://HOST:PORT with --api openai, got {target!r}"
    if m.group(2) is not None and not 1 <= int(m.group(2)) <= 65535:
        return f"--target: port must be 1-65535, got {target!r}"
    return None


def target_problem(target: str) -> str | None:
    m = _TARGET.match(target)
    if m is None:
        if _URL.match(target):
            return f"--target: {target!r} is a URL; for an HTTP server add --api openai"
        return f"--target: expected HOST:PORT (e.g. 127.0.0.1:50051), got {target!r}"
    if not 1 <= int(m.group(2)) <= 65535:
        return f"--target: port must be 1-65535, got {target!r}"
    return None
