"""`kvserve-loadtest`: the options (each also from KVSERVE_<OPTION>), run, print the summary,
write the reports.

`kvserve-loadtest compare A.json B.json` compares two runs (compare.py)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

from envopts import Parser, boolean, env_name, environ, from_env, option, switch
from loadtest.channels import Security, read_token_file
from loadtest.config import APIS, ARRIVALS, DEFAULT_PROMPT, DEFAULT_REQUESTS, RPCS, LoadConfig
from loadtest.errors import LoadTestError
from loadtest.prompts import load_workload
from loadtest.report import format_summary, write_report
from loadtest.run import run_load_sync
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

PROG = "kvserve-loadtest"

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


def positive(what: str) -> Callable[[str], float]:
    """An argparse `type`: a number > 0, the error naming `what` (the flag)."""
    return lambda text: parse_positive(text, what)


def build_parser() -> Parser:
    d = LoadConfig(targets=())
    p = Parser(PROG, HELP)
    _load_options(p.add_argument_group("load"), d)
    _request_options(p.add_argument_group("requests"), d)
    _security_options(p.add_argument_group("TLS and authentication"))
    _workload_options(
        p.add_argument_group(
            "workload (one of --prompt, --prompts-file, --bundled, --synthetic-input)"
        )
    )
    _report_options(p.add_argument_group("figures and reports"), d)
    return p


def _load_options(g: argparse._ArgumentGroup, d: LoadConfig) -> None:
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
    # None: not given (see _config)
    option(
        g,
        "--concurrency",
        None,
        f"closed loop: concurrent streams ({d.concurrency} when not given)",
        metavar="N",
        type=int,
    )
    option(
        g, "--rate", None, "open loop: requests per second", metavar="R", type=positive("--rate")
    )
    option(g, "--arrival", d.arrival, "open-loop arrivals", choices=ARRIVALS)
    option(
        g,
        "--schedule",
        None,
        "open loop: RATE:DURATION steps and FROM-TO:DURATION ramps",
        metavar="SPEC",
        type=parse_schedule,
    )
    option(
        g,
        "--requests",
        None,
        f"measured requests ({DEFAULT_REQUESTS} when neither this, --duration nor --schedule "
        "is given)",
        metavar="M",
        type=int,
    )
    option(
        g,
        "--duration",
        None,
        "stop sending after this long (30s, 2m, or seconds)",
        metavar="S",
        type=parse_duration,
    )
    option(
        g,
        "--warmup",
        "0",
        "requests (20) or time (5s) at the start kept out of the figures",
        metavar="K|S",
        type=parse_warmup,
    )
    option(g, "--workers", d.workers, "client processes sending the load", metavar="N", type=int)
    option(
        g,
        "--lag-warn-ms",
        d.lag_warn_ms,
        "warn when the p99 send lag exceeds this",
        metavar="MS",
        type=float,
    )
    option(
        g,
        "--seed",
        d.seed,
        "seed of the client's randomness (arrivals, synthetic lengths)",
        metavar="N",
        type=int,
    )


def _request_options(g: argparse._ArgumentGroup, d: LoadConfig) -> None:
    option(g, "--rpc", d.rpc, "streaming (GenerateStream) or unary (Generate/Answer)", choices=RPCS)
    option(
        g,
        "--max-new-tokens",
        d.max_new_tokens,
        "tokens to generate per request",
        metavar="T",
        type=int,
    )
    option(
        g,
        "--temperature",
        d.temperature,
        "sampling temperature (0 = greedy)",
        metavar="TEMP",
        type=float,
    )
    option(g, "--top-k", d.top_k, "top-k sampling (0 = off)", metavar="K", type=int)
    option(g, "--top-p", d.top_p, "nucleus sampling (0 = off)", metavar="P", type=float)
    option(
        g,
        "--repetition-penalty",
        d.repetition_penalty,
        "repetition penalty (0 = off)",
        metavar="X",
        type=float,
    )
    g.add_argument(
        "--stop",
        metavar="TEXT",
        action="append",
        help="stop string; repeatable (env KVSERVE_STOP: one string)",
    )
    option(
        g,
        "--sampling-seed",
        d.sampling_seed,
        "send seed S+i with request i (reproducible sampling)",
        metavar="S",
        type=int,
    )
    switch(
        g,
        "--ignore-eos",
        d.ignore_eos,
        "keep generating past eos (every request makes --max-new-tokens tokens)",
    )
    option(
        g,
        "--timeout",
        d.timeout_s,
        "per-request deadline in seconds",
        metavar="S",
        type=positive("--timeout"),
    )
    option(
        g,
        "--connect-timeout",
        d.connect_timeout_s,
        "seconds to wait for every target to accept connections",
        metavar="S",
        type=positive("--connect-timeout"),
    )


def _security_options(g: argparse._ArgumentGroup) -> None:
    switch(g, "--tls", False, "TLS with the system's root certificates")
    option(
        g,
        "--tls-ca",
        None,
        "PEM roots to verify the server with (implies --tls)",
        metavar="PEM",
        type=Path,
    )
    option(g, "--tls-cert", None, "client certificate chain for mTLS", metavar="PEM", type=Path)
    option(g, "--tls-key", None, "client private key for mTLS", metavar="PEM", type=Path)
    option(g, "--tls-server-name", None, "name the server's certificate must carry", metavar="NAME")
    # flag beats variable across the pair: read in _security, not as defaults
    token = g.add_mutually_exclusive_group()
    token.add_argument(
        "--auth-token",
        metavar="TOKEN",
        help="sent as 'authorization: Bearer TOKEN' (env KVSERVE_AUTH_TOKEN; prefer the env "
        "var or a file: flags show in `ps`)",
    )
    token.add_argument(
        "--auth-token-file",
        metavar="FILE",
        type=Path,
        help="read the token from FILE (env KVSERVE_AUTH_TOKEN_FILE)",
    )


def _workload_options(g: argparse._ArgumentGroup) -> None:
    # one workload: a flag beats every variable, read in _source, not as defaults
    source = g.add_mutually_exclusive_group()
    source.add_argument(
        "--prompt",
        metavar="TEXT",
        help=f"the prompt every request sends (default {DEFAULT_PROMPT!r}; env KVSERVE_PROMPT)",
    )
    source.add_argument(
        "--prompts-file",
        metavar="JSONL",
        type=Path,
        help="JSONL workload, see above (env KVSERVE_PROMPTS_FILE)",
    )
    source.add_argument(
        "--bundled",
        action="store_true",
        default=None,
        help="the questions of the bundled data/support_qa.jsonl (env KVSERVE_BUNDLED)",
    )
    source.add_argument(
        "--synthetic-input",
        metavar="DIST",
        type=parse_length,
        help="synthetic prompts of DIST tokens: N, uniform:LO:HI, normal:MEAN:STD "
        "(env KVSERVE_SYNTHETIC_INPUT)",
    )
    option(
        g,
        "--synthetic-output",
        None,
        "output lengths DIST (sets --max-new-tokens per request and --ignore-eos)",
        metavar="DIST",
        type=parse_length,
    )
    option(
        g,
        "--tokenizer",
        None,
        "the model's tokenizer.json: exact synthetic prompt lengths",
        metavar="FILE",
        type=Path,
    )


def _report_options(g: argparse._ArgumentGroup, d: LoadConfig) -> None:
    g.add_argument(
        "--slo",
        metavar="NAME=LIMIT",
        action="append",
        help="goodput objective, e.g. ttft=0.5 or tpot=50ms,e2e=2s; repeatable (env KVSERVE_SLO)",
    )
    g.add_argument(
        "--metrics-url",
        metavar="URL",
        action="append",
        help="the server's Prometheus /metrics, scraped before and after; repeatable "
        "(env KVSERVE_METRICS_URL)",
    )
    option(
        g,
        "--out",
        d.out_dir,
        "directory for the JSON, CSV and HTML reports",
        metavar="DIR",
        type=Path,
    )
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
    targets = listed(a.target, "--target")
    if not targets:
        raise SpecError("--target is required (or set KVSERVE_TARGET)")
    open_loop = a.rate is not None or a.schedule is not None
    if open_loop and a.concurrency is not None and environ("--concurrency") is None:
        raise SpecError(
            "--concurrency is the closed loop, --rate/--schedule the open loop: give one"
        )
    requests = a.requests
    if requests is None and a.duration is None and a.schedule is None:
        requests = DEFAULT_REQUESTS
    source = _source(a)
    warmup: Warmup = a.warmup
    stop = a.stop if a.stop is not None else [s for s in [environ("--stop")] if s]
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
        slo=parse_slos(listed(a.slo, "--slo")),
        lag_warn_ms=a.lag_warn_ms,
        metrics_urls=tuple(listed(a.metrics_url, "--metrics-url")),
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
        "bundled": boolean,
        "synthetic_input": parse_length,
    }
    flags = {name: "--" + name.replace("_", "-") for name in SOURCES}
    named = [name for name in SOURCES if environ(flags[name]) is not None]
    if len(named) > 1:
        names = ", ".join(env_name(flags[n]) for n in named)
        raise SpecError(f"{names} are all set; a run has one workload: unset all but one")
    if not named:
        return {}
    (name,) = named
    try:
        return {name: from_env(flags[name], convert[name])}
    except argparse.ArgumentTypeError as e:
        raise SpecError(f"argument {flags[name]}: {e}") from None


def _security(a: argparse.Namespace) -> Security:
    token = a.auth_token or environ("--auth-token")
    token_file = a.auth_token_file
    if token_file is None and not a.auth_token and environ("--auth-token-file"):
        token_file = from_env("--auth-token-file", Path)
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


def listed(values: list[str] | None, flag: str) -> list[str]:
    """A repeatable flag's values (each may be comma-separated), else its env var's."""
    raw = values if values is not None else [environ(flag) or ""]
    return [part.strip() for value in raw for part in value.split(",") if part.strip()]


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["compare"]:
        from loadtest.compare import main as compare_main

        return compare_main(argv[1:])
    config = parse_args(argv)  # bad flags: one line, exit 2
    try:
        workload = load_workload(config)  # before connecting: a bad file fails fast
        config.out_dir.mkdir(parents=True, exist_ok=True)  # and so does an unwritable --out
        result = run_load_sync(config, workload)
    except (LoadTestError, OSError) as e:
        return fail(str(e))
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    print(format_summary(result), flush=True)
    shout(result.warnings)
    try:
        files = write_report(result, config.out_dir)
    except OSError as e:
        return fail(f"cannot write the report: {e}", code=1)
    if files.html_path is not None:
        print(f"html: {files.html_path}", flush=True)
    print(f"report: {files.json_path}", flush=True)
    if result.figures.ok == 0:
        print(f"{PROG}: no request succeeded", file=sys.stderr)
        return 1
    return 0


def shout(warnings: list[str]) -> None:
    """The client's own trouble, where nobody can miss it (stderr, framed)."""
    if not warnings:
        return
    bar = "!" * 78
    lines = [bar, *(f"!!! {w}" for w in warnings), bar]
    print("\n".join(lines), file=sys.stderr, flush=True)


def fail(message: str, code: int = 2) -> int:
    print(f"{PROG}: error: {message}", file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main())
