"""`kvserve-serve`: the options (each also from KVSERVE_<OPTION>), then load, serve, drain."""

from __future__ import annotations

import argparse
import asyncio
import logging
import re
import sys
from pathlib import Path

from artifact import ManifestError
from envopts import Parser, boolean, option
from server import logs
from server.app import Server, load_model
from server.config import ServeConfig
from server.security import SecurityError, ServerSecurity, load_security

PROG = "kvserve-serve"
log = logging.getLogger("kvserve.server")

HELP = """\
Serve a kvserve model artifact (made by kvserve-export) over gRPC with continuous batching.

Service kvserve.v1.Generation (Generate, GenerateStream, Answer, GetModelInfo), plus
grpc.health.v1.Health and server reflection, on --host:--port; Prometheus /metrics on
--metrics-host:--metrics-port. SIGTERM drains: health turns NOT_SERVING, new requests get
UNAVAILABLE, in-flight ones finish within --grace-seconds; a second SIGTERM stops at once.
Every option can also be set as an environment variable, e.g. KVSERVE_PORT=50052.
"""


def build_parser() -> Parser:
    d = ServeConfig(model=Path("."))
    p = Parser(PROG, HELP)
    option(
        p,
        "--model",
        None,
        "model artifact dir (manifest.json, model.onnx, tokenizer.json)",
        type=Path,
        required=True,
    )
    option(p, "--host", d.host, "gRPC bind address (0.0.0.0 for all)")
    option(p, "--port", d.port, "gRPC port (0 = any free port)", type=int)
    option(
        p,
        "--http-port",
        d.http_port,
        "OpenAI-compatible HTTP API and playground on --host (-1 = off, 0 = any free port)",
        type=int,
    )
    option(p, "--metrics-host", d.metrics_host, "metrics bind address")
    option(p, "--metrics-port", d.metrics_port, "Prometheus /metrics port (-1 = off)", type=int)
    option(p, "--metrics-path", d.metrics_path, "HTTP path of the Prometheus metrics")
    option(
        p,
        "--provider",
        d.provider,
        "ONNX Runtime execution provider; auto = CUDA when a GPU is present",
        choices=["auto", "cpu", "cuda"],
    )
    option(p, "--threads", d.threads, "ONNX Runtime intra-op threads (0 = one per core)", type=int)
    option(
        p,
        "--ort-spin",
        d.ort_spin,
        "ONNX Runtime's threads busy-wait between ops (off: they sleep, leaving the cores to "
        "the front doors)",
        type=boolean,
        metavar="BOOL",
    )
    option(p, "--max-batch-size", d.max_batch_size, "most sequences decoded together", type=int)
    _step_options(p, d)
    _paged_options(p, d)
    option(
        p,
        "--max-queue",
        d.max_queue,
        "waiting requests beyond this get RESOURCE_EXHAUSTED",
        type=int,
    )
    option(
        p,
        "--default-max-new-tokens",
        d.default_max_new_tokens,
        "used when a request leaves max_new_tokens unset",
        type=int,
    )
    option(
        p,
        "--max-new-tokens-limit",
        d.max_new_tokens_limit,
        "largest max_new_tokens a request may ask for",
        type=int,
    )
    option(p, "--grace-seconds", d.grace_seconds, "drain time on SIGTERM", type=float)
    option(
        p,
        "--max-connection-age-seconds",
        d.max_connection_age_seconds,
        "close each client connection (gracefully) after about this long, 0 = never; clients "
        "then reconnect and re-resolve DNS, so replicas added since reach them",
        type=float,
    )
    option(
        p, "--log-level", d.log_level, "log level", choices=["DEBUG", "INFO", "WARNING", "ERROR"]
    )
    option(
        p,
        "--log-format",
        d.log_format,
        "text lines, or one JSON object a line",
        choices=["text", "json"],
    )
    _handover_options(p, d)
    _security_options(p, d)
    return p


def _handover_options(p: Parser, d: ServeConfig) -> None:
    """The hand-over (server/handover.py): answers the model is not sure of go to a person."""
    g = p.add_argument_group(
        "hand-over (Answer RPC and chat completions; needs an artifact with a calibration)"
    )
    option(
        g,
        "--handover-threshold",
        d.handover_threshold,
        "answers whose confidence (a calibrated probability that the answer is right) is "
        "below this are replaced by --handover-text; 0 = never hand over, 1 = always; "
        "unset: the artifact's own, chosen at training time; a request may set its own",
        type=float,
        metavar="P",
    )
    option(
        g,
        "--handover-text",
        d.handover_text,
        "the reply a handed-over question gets instead of the model's guess",
        metavar="TEXT",
    )


def _step_options(p: Parser, d: ServeConfig) -> None:
    """One engine step's size: a token budget, and a time cap while sequences decode."""
    option(
        p,
        "--max-step-tokens",
        d.max_step_tokens,
        "tokens per engine step: one per decoding sequence plus prompt chunks (long prompts "
        "are cut so decoding sequences never wait for a whole prefill; the fused graph runs "
        "whole prompts, one over the budget alone)",
        type=int,
    )
    option(
        p,
        "--itl-target-ms",
        d.itl_target_ms,
        "while sequences are decoding, cut prompt chunks so a step takes about this long "
        "(their inter-token latency; step times are learnt from the steps run); when their "
        "own work needs over half of it, --max-step-tokens alone sizes the step (0 = always)",
        type=float,
        metavar="MS",
    )


def _paged_options(p: Parser, d: ServeConfig) -> None:
    """The paged KV cache (artifacts exported with --attention kernel)."""
    g = p.add_argument_group("paged KV cache (kernel-attention artifacts)")
    option(
        g,
        "--kv-cache-memory",
        d.kv_cache_memory,
        "memory for keys and values, e.g. 2GiB, 512MiB or bytes (0 = a share of this "
        "machine's memory); admission waits for free blocks",
        type=memory_size,
        metavar="SIZE",
    )
    option(g, "--kv-block-size", d.kv_block_size, "tokens per KV cache block", type=int)
    option(
        g,
        "--prefix-caching",
        d.prefix_caching,
        "reuse the KV blocks of prompt prefixes already computed (shared templates, system "
        "prompts)",
        type=boolean,
        metavar="BOOL",
    )
    option(
        g,
        "--prefix-cache-memory",
        d.prefix_cache_memory,
        "free blocks the prefix cache keeps, e.g. 64MiB; beyond, it gives up its least "
        "recently used block rather than have the server write memory it never used",
        type=memory_size,
        metavar="SIZE",
    )


UNITS = {"": 1, "b": 1, "kib": 1 << 10, "mib": 1 << 20, "gib": 1 << 30, "kb": 10**3, "mb": 10**6}
UNITS["gb"] = 10**9


def memory_size(text: str) -> int:
    """An argparse `type`: bytes from '2GiB', '512MiB', '1.5GB' or a plain number."""
    match = re.fullmatch(r"\s*([0-9.]+)\s*([a-z]*)\s*", text.lower())
    try:
        size = float(match[1]) * UNITS[match[2]]
    except (TypeError, KeyError, ValueError):
        raise argparse.ArgumentTypeError(
            f"expected a size such as 2GiB, 512MiB or a number of bytes, got {text!r}"
        ) from None
    return int(size)


def _security_options(p: Parser, d: ServeConfig) -> None:
    """TLS, mTLS and bearer tokens (server/security.py reads and checks the files)."""
    g = p.add_argument_group("TLS and authentication")
    option(
        g, "--tls-cert", d.tls_cert, "PEM certificate chain: serve TLS (with --tls-key)", type=Path
    )
    option(g, "--tls-key", d.tls_key, "PEM private key of --tls-cert", type=Path)
    option(
        g,
        "--tls-client-ca",
        d.tls_client_ca,
        "PEM CA bundle: require client certificates (mTLS)",
        type=Path,
    )
    option(
        g,
        "--auth-token-file",
        d.auth_token_file,
        "file of accepted bearer tokens, one per line; every RPC needs "
        "'authorization: Bearer <token>'; SIGHUP reloads it",
        type=Path,
    )
    option(
        g,
        "--auth-exempt-health",
        d.auth_exempt_health,
        "leave grpc.health.v1.Health open without a token, for probes",
        type=boolean,
        metavar="BOOL",
    )


def parse_args(argv: list[str] | None = None) -> ServeConfig:
    """The options as a ServeConfig; bad input: one line on stderr, exit 2."""
    p = build_parser()
    config = ServeConfig(**vars(p.parse_args(argv)))
    if (problem := config.problem()) is not None:
        p.error(problem)
    return config


def main(argv: list[str] | None = None) -> int:
    config = parse_args(argv)
    logs.setup(config.log_level, config.log_format)
    try:
        security = load_security(config)  # before the model: a typo in a flag fails fast
        model = load_model(config)
    except (ManifestError, SecurityError) as e:
        print(f"{PROG}: {e}", file=sys.stderr)
        return 2
    try:
        asyncio.run(_serve(config, model, security))
    except OSError as e:
        print(f"{PROG}: {e}", file=sys.stderr)
        return 2
    return 0


async def _serve(config: ServeConfig, model, security: ServerSecurity) -> None:
    server = Server(config, model, security)
    metrics_http = None
    if config.metrics_port >= 0:
        metrics_http = server.metrics.serve(
            config.metrics_host, config.metrics_port, config.metrics_path
        )
    port = await server.start()
    log.info(
        "serving %s (%s, %s) on %s:%d; metrics on %s:%d%s",
        model.manifest.model_name,
        model.manifest.quantization,
        model.runner.provider,
        config.host,
        port,
        config.metrics_host,
        config.metrics_port,
        config.metrics_path,
    )
    log.info("security: %s", security.summary)
    print(f"{PROG}: listening on {config.host}:{port}", flush=True)
    if server.http is not None:
        scheme = "https" if server.http.tls else "http"
        url = f"{scheme}://{config.host}:{server.http_port}"
        log.info("OpenAI-compatible API on %s/v1, playground on %s/", url, url)
        print(f"{PROG}: listening on {url} (OpenAI API, playground)", flush=True)
    try:
        await server.run_until_signalled()
    finally:
        if metrics_http is not None:
            metrics_http.shutdown()


if __name__ == "__main__":
    sys.exit(main())
