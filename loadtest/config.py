"""`kvserve-loadtest` options: flags, each also from an environment variable KVSERVE_<OPTION>."""

from __future__ import annotations

import argparse
import os
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import NoReturn

DEFAULT_PROMPT = "Question: How do I reset my password?\nAnswer:"
DEFAULT_REQUESTS = 100  # used when neither --requests nor --duration is given

_TARGET = re.compile(r"^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._-]+):(\d{1,5})$")
_TRUE, _FALSE = {"1", "true", "yes", "on"}, {"0", "false", "no", "off", ""}


@dataclass(frozen=True)
class LoadConfig:
    """One load-test run. Times in seconds; `requests`/`duration_s` None = no such limit."""

    targets: tuple[str, ...]
    concurrency: int = 4
    requests: int | None = DEFAULT_REQUESTS
    duration_s: float | None = None
    max_new_tokens: int = 64
    prompt: str = DEFAULT_PROMPT
    prompts_file: Path | None = None
    temperature: float = 0.0
    ignore_eos: bool = False
    timeout_s: float = 60.0
    connect_timeout_s: float = 10.0
    warmup: int = 0
    out_dir: Path = field(default=Path("runs/loadtest"))
    progress: bool = True

    @property
    def target(self) -> str:
        return ",".join(self.targets)

    def problem(self) -> str | None:
        """Why this config cannot run (None when it can): one line naming the option."""
        if not self.targets:
            return "--target: give at least one HOST:PORT"
        for target in self.targets:
            if (msg := target_problem(target)) is not None:
                return msg
        for flag, value, low in (
            ("--concurrency", self.concurrency, 1),
            ("--requests", self.requests, 1),
            ("--max-new-tokens", self.max_new_tokens, 1),
            ("--warmup", self.warmup, 0),
            ("--temperature", self.temperature, 0),
        ):
            if value is not None and value < low:
                return f"{flag} must be >= {low} (got {value})"
        for flag, value in (
            ("--duration", self.duration_s),
            ("--timeout", self.timeout_s),
            ("--connect-timeout", self.connect_timeout_s),
        ):
            if value is not None and not value > 0:  # `not >` also catches NaN
                return f"{flag} must be > 0 (got {value:g})"
        if self.requests is None and self.duration_s is None:
            return "give --requests or --duration (or both)"
        if self.prompts_file is None and not self.prompt.strip():
            return "--prompt must not be empty"
        return None

    def to_dict(self) -> dict:
        """JSON-ready (paths as strings), as stored in the report."""
        out = asdict(self)
        out["targets"] = list(self.targets)
        out["prompts_file"] = None if self.prompts_file is None else str(self.prompts_file)
        out["out_dir"] = str(self.out_dir)
        return out


def target_problem(target: str) -> str | None:
    m = _TARGET.match(target)
    if m is None:
        return f"--target: expected HOST:PORT (e.g. 127.0.0.1:50051), got {target!r}"
    if not 1 <= int(m.group(2)) <= 65535:
        return f"--target: port must be 1-65535, got {target!r}"
    return None


HELP = """\
Load-test a kvserve gRPC server (kvserve-serve) and report latency and throughput.

Closed loop: --concurrency workers each send a request, wait for it to finish, and send the
next, until --requests are done or --duration seconds have passed (whichever comes first;
requests in flight at the deadline are allowed to finish). --warmup requests go first and
are not measured.

Prompts (--prompt, or --prompts-file) are streamed with GenerateStream. A prompts file is
JSONL, one object per line: {"prompt": "..."} or {"question": "...", "context": "..."};
questions go through the unary Answer RPC (the server applies the model's prompt template),
so for them only e2e latency and tokens are measured, not TTFT/ITL. Lines are used in turn.

Measured per request: TTFT (send -> first message carrying tokens), ITL (gap between
token-carrying messages / tokens in the later one, one value per token), TPOT ((e2e - TTFT)
/ (output tokens - 1)), e2e latency, tokens, and the gRPC status. Latency figures count
successful requests only; every request is counted by status code.

Prints a summary table, writes DIR/loadtest-<UTC time>.json and a per-request .csv beside
it, and ends with the line "report: PATH". Every option can also be set as an environment
variable, e.g. KVSERVE_CONCURRENCY=16. Exit status: 0 run done (failed requests are
counted, see "status"), 1 no request succeeded, 2 bad input or unreachable target.
"""


class _Parser(argparse.ArgumentParser):
    """argparse, but a bad input is one line on stderr (exit 2), not usage + error."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def build_parser() -> argparse.ArgumentParser:
    d = LoadConfig(targets=())
    p = _Parser(
        prog="kvserve-loadtest",
        description=HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    target_env = os.environ.get("KVSERVE_TARGET")
    p.add_argument(
        "--target",
        metavar="HOST:PORT",
        default=target_env,
        required=not target_env,
        help="server address; several comma-separated replicas get the requests in turn "
        "(env KVSERVE_TARGET)",
    )
    option(
        p,
        "--concurrency",
        d.concurrency,
        "concurrent workers (streams in flight)",
        metavar="N",
        type=int,
    )
    option(
        p,
        "--requests",
        None,
        f"measured requests ({DEFAULT_REQUESTS} when neither this nor --duration is given)",
        metavar="M",
        type=int,
    )
    option(
        p,
        "--duration",
        None,
        "stop sending new requests after this many seconds",
        metavar="S",
        type=float,
    )
    option(
        p,
        "--max-new-tokens",
        d.max_new_tokens,
        "tokens to generate per request",
        metavar="T",
        type=int,
    )
    source = p.add_mutually_exclusive_group()
    source.add_argument(
        "--prompt",
        metavar="TEXT",
        help=f"the prompt every request streams (default {DEFAULT_PROMPT!r}; env KVSERVE_PROMPT)",
    )
    source.add_argument(
        "--prompts-file",
        metavar="JSONL",
        type=Path,
        help="JSONL workload, see above (env KVSERVE_PROMPTS_FILE)",
    )
    option(
        p,
        "--temperature",
        d.temperature,
        "sampling temperature (0 = greedy)",
        metavar="TEMP",
        type=float,
    )
    switch(
        p,
        "--ignore-eos",
        d.ignore_eos,
        "keep generating past eos, so every request makes --max-new-tokens tokens",
    )
    option(p, "--timeout", d.timeout_s, "per-request deadline in seconds", metavar="S", type=float)
    option(
        p,
        "--connect-timeout",
        d.connect_timeout_s,
        "seconds to wait for every target to accept connections",
        metavar="S",
        type=float,
    )
    option(
        p,
        "--warmup",
        d.warmup,
        "unmeasured requests sent before the measured run",
        metavar="K",
        type=int,
    )
    option(
        p, "--out", d.out_dir, "directory for the JSON and CSV reports", metavar="DIR", type=Path
    )
    switch(p, "--progress", d.progress, "live progress bar on stderr")
    return p


def parse_args(argv: list[str] | None = None) -> LoadConfig:
    p = build_parser()
    a = p.parse_args(argv)
    prompt, prompts_file = a.prompt, a.prompts_file
    if prompt is None and prompts_file is None:  # neither flag given: the env vars may say
        prompt = os.environ.get("KVSERVE_PROMPT")
        env_file = os.environ.get("KVSERVE_PROMPTS_FILE")
        if prompt is not None and env_file:
            p.error("KVSERVE_PROMPT and KVSERVE_PROMPTS_FILE are both set; unset one")
        prompts_file = Path(env_file) if env_file else None
    requests = a.requests
    if requests is None and a.duration is None:
        requests = DEFAULT_REQUESTS
    config = LoadConfig(
        targets=tuple(t.strip() for t in a.target.split(",") if t.strip()),
        concurrency=a.concurrency,
        requests=requests,
        duration_s=a.duration,
        max_new_tokens=a.max_new_tokens,
        prompt=DEFAULT_PROMPT if prompt is None else prompt,
        prompts_file=prompts_file,
        temperature=a.temperature,
        ignore_eos=a.ignore_eos,
        timeout_s=a.timeout,
        connect_timeout_s=a.connect_timeout,
        warmup=a.warmup,
        out_dir=a.out,
        progress=a.progress,
    )
    if (msg := config.problem()) is not None:
        p.error(msg)
    return config


def _env(flag: str) -> str:
    return "KVSERVE_" + flag.lstrip("-").replace("-", "_").upper()


def option(parser: argparse.ArgumentParser, flag: str, default, help: str, **kwargs) -> None:
    """A flag whose default comes from KVSERVE_<FLAG> when set.

    argparse applies `type` to a string default too, so a bad environment value gets the
    same one-line error as a bad flag."""
    env = _env(flag)
    shown = f"default: {default}; env {env}" if default is not None else f"env {env}"
    parser.add_argument(
        flag, default=os.environ.get(env, default), help=f"{help} ({shown})", **kwargs
    )


def switch(parser: argparse.ArgumentParser, flag: str, default: bool, help: str) -> None:
    """An on/off flag (--x / --no-x) whose default comes from KVSERVE_<FLAG> (1/0, true/false)."""
    env = _env(flag)
    raw = os.environ.get(env)
    if raw is not None:
        value = raw.strip().lower()
        if value not in _TRUE | _FALSE:
            parser.error(f"{env}: expected 1/0, true/false, yes/no or on/off, got {raw!r}")
        default = value in _TRUE
    parser.add_argument(
        flag,
        default=default,
        action=argparse.BooleanOptionalAction,
        help=f"{help} (default: {'on' if default else 'off'}; env {env})",
    )
