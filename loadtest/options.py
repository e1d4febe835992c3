"""`kvserve-loadtest` options: flags, each also from an environment variable KVSERVE_<OPTION>."""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from pathlib import Path
from typing import NoReturn

from loadtest.channels import Security, read_token_file
from loadtest.config import APIS, ARRIVALS, DEFAULT_PROMPT, DEFAULT_REQUESTS, RPCS, LoadConfig
from loadtest.specs import (
    SpecError,
    Warmup,
    parse_duration,
    parse_length,
    parse_positive,
    parse_schedule,
    parse_slos,
    parse_warmup,
)

_TRUE, _FALSE = {"1", "true", "yes", "on"}, {"0", "false", "no", "off", ""}

HELP = """\
Load-test a kvserve gRPC server (kvserve-serve) and report latency and throughput.

Load models:
  closed loop  --concurrency N: N streams; each sends its next request when the last ends.
  open loop    --rate R [--arrival poisson|constant]: sends on a schedule computed before
               the run, whatever the server does (no coordinated omission);
               --schedule "10:30s,20:30s,5-50:60s": steps and ramps of req/s.
Stop after --requests M or --duration S (whichever first; in-flight requests finish).
--warmup K (requests) or --warmup 5s goes first and is kept out of the figures.
--workers N spreads the sending over N processes; the client measures its own send lag
(scheduled vs actual send time) and warns loudly when it could not keep the schedule.

Workload: --prompt TEXT (default), --prompts-file JSONL ({"prompt": ...} or {"question":
..., "context": ...} per line), --bundled (the bundled support Q&A questions), or
--synthetic-input/--synthetic-output token lengths (N, uniform:LO:HI, normal:MEAN:STD;
output lengths imply --ignore-eos). --rpc stream (default) sends GenerateStream: questions
are formatted with the model's prompt template from GetModelInfo; --rpc unary sends
Generate for prompts and Answer for questions (no TTFT/ITL then).

Figures: TTFT (send -> first token, queueing included), ITL, TPOT, e2e latency (mean, p50,
p90, p95, p99, max), request and token throughput, errors by gRPC status code, and goodput
under --slo ttft=0.5,tpot=50ms,e2e=2s. Definitions: loadtest/README.md.

Prints a live progress line and a summary table, writes DIR/loadtest-<UTC time>.json, a
per-request .csv and a self-contained .html report beside it, and ends with the line
"report: PATH". `kvserve-loadtest compare A.json B.json` compares two runs (see
`kvserve-loadtest compare --help`). Every option can also be set as an environment variable,
e.g. KVSERVE_CONCURRENCY=16 (lists comma-separated, e.g. KVSERVE_TARGET=a:1,b:2).
Exit status: 0 run done (failed requests are counted, see "status"), 1 no request
succeeded, 2 bad input or unreachable target.
"""

SOURCES = ("prompt", "prompts_file", "bundled", "synthetic_input")


class _Parser(argparse.ArgumentParser):
    """argparse, but a bad input is one line on stderr (exit 2), not usage + error."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def spec(parse: Callable[[str], object]) -> Callable[[str], object]:
    """An argparse `type` whose error message is the parser's own (not "invalid value")."""

    def convert(text: str) -> object:
        try:
            return parse(text)
        except SpecError as e:
            raise argparse.ArgumentTypeError(str(e)) from None

    convert.__name__ = parse.__name__
    return convert


def positive(what: str) -> Callable[[str], object]:
    return spec(lambda text: parse_positive(text, what))


def build_parser() -> argparse.ArgumentParser:
    d = LoadConfig(targets=())
    p = _Parser(
        prog="kvserve-loadtest",
        description=HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _load_options(p, d)
    _request_options(p, d)
    _security_options(p)
    _workload_options(p, d)
    _report_options(p, d)
    return p


def _load_options(p: argparse.ArgumentParser, d: LoadConfig) -> None:
    g = p.add_argument_group("load")
    g.add_argument(
        "--target",
        metavar="HOST:PORT",
        action="append",
        help="server address (--api openai: http://HOST:PORT); repeat (or comma-separate) "
        "for replicas, which get the requests in turn (env KVSERVE_TARGET)",
    )
    option(
        g,
        "--api",
        d.api,
        "grpc: kvserve's gRPC service; openai: any OpenAI-compatible HTTP server "
        "(/v1/completions for prompts, /v1/chat/completions for questions)",
        choices=APIS,
    )
    option(g, "--concurrency", None, f"closed loop: concurrent streams (default {d.concurrency})",
           metavar="N", type=int)  # fmt: skip
    option(g, "--rate", None, "open loop: requests per second", metavar="R",
           type=positive("--rate"))  # fmt: skip
    option(g, "--arrival", d.arrival, "open-loop arrivals", choices=ARRIVALS)
    option(g, "--schedule", None, "open loop: RATE:DURATION steps and FROM-TO:DURATION ramps",
           metavar="SPEC", type=spec(parse_schedule))  # fmt: skip
    option(g, "--requests", None,
           f"measured requests ({DEFAULT_REQUESTS} when neither this, --duration nor "
           "--schedule is given)", metavar="M", type=int)  # fmt: skip
    option(g, "--duration", None, "stop sending after this long (30s, 2m, or seconds)",
           metavar="S", type=spec(parse_duration))  # fmt: skip
    option(g, "--warmup", "0", "requests (20) or time (5s) at the start kept out of the figures",
           metavar="K|S", type=spec(parse_warmup))  # fmt: skip
    option(g, "--workers", d.workers, "client processes sending the load", metavar="N", type=int)
    option(g, "--lag-warn-ms", d.lag_warn_ms, "warn when the p99 send lag exceeds this",
           metavar="MS", type=float)  # fmt: skip
    option(g, "--seed", d.seed, "seed of the client's randomness (arrivals, synthetic lengths)",
           metavar="N", type=int)  # fmt: skip


def _request_options(p: argparse.ArgumentParser, d: LoadConfig) -> None:
    g = p.add_argument_group("requests")
    option(g, "--rpc", d.rpc, "streaming (GenerateStream) or unary (Generate/Answer)",
           choices=RPCS)  # fmt: skip
    option(g, "--max-new-tokens", d.max_new_tokens, "tokens to generate per request",
           metavar="T", type=int)  # fmt: skip
    option(g, "--temperature", d.temperature, "sampling temperature (0 = greedy)",
           metavar="TEMP", type=float)  # fmt: skip
    option(g, "--top-k", d.top_k, "top-k sampling (0 = off)", metavar="K", type=int)
    option(g, "--top-p", d.top_p, "nucleus sampling (0 = off)", metavar="P", type=float)
    option(g, "--repetition-penalty", d.repetition_penalty, "repetition penalty (0 = off)",
           metavar="X", type=float)  # fmt: skip
    g.add_argument("--stop", metavar="TEXT", action="append",
                   help="stop string; repeatable (env KVSERVE_STOP: one string)")  # fmt: skip
    option(g, "--sampling-seed", None, "send seed S+i with request i (reproducible sampling)",
           metavar="S", type=int)  # fmt: skip
    switch(g, "--ignore-eos", d.ignore_eos, "keep generating past eos (every request makes "
           "--max-new-tokens tokens)")  # fmt: skip
    option(g, "--timeout", d.timeout_s, "per-request deadline in seconds", metavar="S",
           type=positive("--timeout"))  # fmt: skip
    option(g, "--connect-timeout", d.connect_timeout_s,
           "seconds to wait for every target to accept connections", metavar="S",
           type=positive("--connect-timeout"))  # fmt: skip


def _security_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("TLS and authentication")
    switch(g, "--tls", False, "TLS with the system's root certificates")
    option(g, "--tls-ca", None, "PEM roots to verify the server with (implies --tls)",
           metavar="PEM", type=Path)  # fmt: skip
    option(g, "--tls-cert", None, "client certificate chain for mTLS", metavar="PEM", type=Path)
    option(g, "--tls-key", None, "client private key for mTLS", metavar="PEM", type=Path)
    option(g, "--tls-server-name", None, "name the server's certificate must carry",
           metavar="NAME")  # fmt: skip
    token = g.add_mutually_exclusive_group()
    token.add_argument("--auth-token", metavar="TOKEN",
                       help="sent as 'authorization: Bearer TOKEN' (env KVSERVE_AUTH_TOKEN; "
                       "prefer the env var or a file: flags show in `ps`)")  # fmt: skip
    token.add_argument("--auth-token-file", metavar="FILE", type=Path,
                       help="read the token from FILE (env KVSERVE_AUTH_TOKEN_FILE)")  # fmt: skip


def _workload_options(p: argparse.ArgumentParser, d: LoadConfig) -> None:
    g = p.add_argument_group(
        "workload (one of --prompt, --prompts-file, --bundled, --synthetic-input)"
    )
    source = g.add_mutually_exclusive_group()
    source.add_argument("--prompt", metavar="TEXT",
                        help=f"the prompt every request sends (default {DEFAULT_PROMPT!r}; "
                        "env KVSERVE_PROMPT)")  # fmt: skip
    source.add_argument("--prompts-file", metavar="JSONL", type=Path,
                        help="JSONL workload, see above (env KVSERVE_PROMPTS_FILE)")  # fmt: skip
    source.add_argument("--bundled", action="store_true", default=None,
                        help="the questions of the bundled data/support_qa.jsonl "
                        "(env KVSERVE_BUNDLED)")  # fmt: skip
    source.add_argument("--synthetic-input", metavar="DIST", type=spec(parse_length),
                        help="synthetic prompts of DIST tokens: N, uniform:LO:HI, normal:MEAN:STD "
                        "(env KVSERVE_SYNTHETIC_INPUT)")  # fmt: skip
    option(g, "--synthetic-output", None, "output lengths DIST (sets --max-new-tokens per "
           "request and --ignore-eos)", metavar="DIST", type=spec(parse_length))  # fmt: skip
    option(g, "--tokenizer", None, "the model's tokenizer.json: exact synthetic prompt lengths",
           metavar="FILE", type=Path)  # fmt: skip


def _report_options(p: argparse.ArgumentParser, d: LoadConfig) -> None:
    g = p.add_argument_group("figures and reports")
    g.add_argument("--slo", metavar="NAME=LIMIT", action="append",
                   help="goodput objective, e.g. ttft=0.5 or tpot=50ms,e2e=2s; repeatable "
                   "(env KVSERVE_SLO)")  # fmt: skip
    g.add_argument("--metrics-url", metavar="URL", action="append",
                   help="the server's Prometheus /metrics, scraped before and after; "
                   "repeatable (env KVSERVE_METRICS_URL)")  # fmt: skip
    option(g, "--out", d.out_dir, "directory for the JSON, CSV and HTML reports", metavar="DIR",
           type=Path)  # fmt: skip
    switch(g, "--progress", d.progress, "live progress line on stderr")
    switch(g, "--html", d.html, "write the HTML report")


def parse_args(argv: list[str] | None = None) -> LoadConfig:
    p = build_parser()
    a = p.parse_args(argv)
    try:
        config = _config(a)
    except SpecError as e:
        p.error(str(e))
    except OSError as e:
        p.error(f"--auth-token-file: cannot read it: {e}")
    if (msg := config.problem()) is not None:
        p.error(msg)
    return config


def _config(a: argparse.Namespace) -> LoadConfig:
    targets = listed(a.target, "KVSERVE_TARGET")
    if not targets:
        raise SpecError("--target is required (or set KVSERVE_TARGET)")
    open_loop = a.rate is not None or a.schedule is not None
    if open_loop and a.concurrency is not None and "KVSERVE_CONCURRENCY" not in os.environ:
        raise SpecError(
            "--concurrency is the closed loop, --rate/--schedule the open loop: give one"
        )
    requests = a.requests
    if requests is None and a.duration is None and a.schedule is None:
        requests = DEFAULT_REQUESTS
    source = _source(a)
    warmup: Warmup = a.warmup
    stop = a.stop if a.stop is not None else [s for s in [os.environ.get("KVSERVE_STOP")] if s]
    return LoadConfig(
        targets=tuple(targets),
        api=a.api,
        concurrency=a.concurrency if a.concurrency is not None else LoadConfig.concurrency,
        rate=a.rate,
        arrival=a.arrival,
        schedule=a.schedule or (),
        requests=requests,
        duration_s=a.duration,
        warmup=warmup.requests,
        warmup_s=warmup.seconds,
        workers=a.workers,
        rpc=a.rpc,
        max_new_tokens=a.max_new_tokens,
        temperature=a.temperature,
        top_k=a.top_k,
        top_p=a.top_p,
        repetition_penalty=a.repetition_penalty,
        stop=tuple(stop),
        sampling_seed=a.sampling_seed,
        ignore_eos=a.ignore_eos or a.synthetic_output is not None,
        timeout_s=a.timeout,
        connect_timeout_s=a.connect_timeout,
        security=_security(a),
        prompt=source.get("prompt") or DEFAULT_PROMPT,
        prompts_file=source.get("prompts_file"),
        bundled=bool(source.get("bundled")),
        synthetic_input=source.get("synthetic_input"),
        synthetic_output=a.synthetic_output,
        tokenizer=a.tokenizer,
        seed=a.seed,
        slo=parse_slos(listed(a.slo, "KVSERVE_SLO")),
        lag_warn_ms=a.lag_warn_ms,
        metrics_urls=tuple(listed(a.metrics_url, "KVSERVE_METRICS_URL")),
        out_dir=a.out,
        progress=a.progress,
        html=a.html,
    )


def _source(a: argparse.Namespace) -> dict:
    """The workload flag given, else the one workload env var set (two set: an error)."""
    given = {name: getattr(a, name) for name in SOURCES if getattr(a, name) is not None}
    if given:
        return given
    convert = {
        "prompt": str,
        "prompts_file": Path,
        "bundled": _truth,
        "synthetic_input": parse_length,
    }
    from_env = {name: os.environ.get(_env("--" + name)) for name in SOURCES}
    from_env = {name: convert[name](v) for name, v in from_env.items() if v}
    if len(from_env) > 1:
        names = ", ".join(_env("--" + n) for n in from_env)
        raise SpecError(f"{names} are all set; a run has one workload: unset all but one")
    return from_env


def _security(a: argparse.Namespace) -> Security:
    token = a.auth_token or os.environ.get("KVSERVE_AUTH_TOKEN")
    token_file = a.auth_token_file
    if token_file is None and not a.auth_token and os.environ.get("KVSERVE_AUTH_TOKEN_FILE"):
        token_file = Path(os.environ["KVSERVE_AUTH_TOKEN_FILE"])
    if token_file is not None:
        token = read_token_file(token_file)
        if not token:
            raise SpecError(f"--auth-token-file: {token_file} is empty")
    return Security(
        tls=a.tls or a.tls_ca is not None,
        ca=a.tls_ca,
        cert=a.tls_cert,
        key=a.tls_key,
        server_name=a.tls_server_name,
        token=token or None,
    )


def listed(values: list[str] | None, env: str) -> list[str]:
    """A repeatable flag's values (each may be comma-separated), else the env var's."""
    raw = values if values is not None else [os.environ.get(env, "")]
    return [part.strip() for value in raw for part in value.split(",") if part.strip()]


def _env(flag: str) -> str:
    return "KVSERVE_" + flag.lstrip("-").replace("-", "_").upper()


def _truth(raw: str) -> bool:
    value = raw.strip().lower()
    if value not in _TRUE | _FALSE:
        raise SpecError(f"expected 1/0, true/false, yes/no or on/off, got {raw!r}")
    return value in _TRUE


def option(parser, flag: str, default, help: str, **kwargs) -> None:
    """A flag whose default comes from KVSERVE_<FLAG> when set.

    argparse applies `type` to a string default too, so a bad environment value gets the
    same one-line error as a bad flag."""
    env = _env(flag)
    shown = f"default: {default}; env {env}" if default is not None else f"env {env}"
    parser.add_argument(
        flag, default=os.environ.get(env, default), help=f"{help} ({shown})", **kwargs
    )


def switch(parser, flag: str, default: bool, help: str) -> None:
    """An on/off flag (--x / --no-x) whose default comes from KVSERVE_<FLAG> (1/0, true/false)."""
    env = _env(flag)
    raw = os.environ.get(env)
    if raw is not None:
        try:
            default = _truth(raw)
        except SpecError as e:
            parser.error(f"{env}: {e}")
    parser.add_argument(
        flag,
        default=default,
        action=argparse.BooleanOptionalAction,
        help=f"{help} (default: {'on' if default else 'off'}; env {env})",
    )
