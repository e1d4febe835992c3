"""`kvserve-serve` options: flags, each also from an environment variable KVSERVE_<OPTION>."""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class ServeConfig:
    model: Path
    host: str = "127.0.0.1"
    port: int = 50051
    metrics_host: str = "127.0.0.1"
    metrics_port: int = 8000
    metrics_path: str = "/metrics"
    provider: str = "auto"
    threads: int = 0
    max_batch_size: int = 32
    max_batch_tokens: int = 16384
    max_queue: int = 256
    default_max_new_tokens: int = 64
    max_new_tokens_limit: int = 1024
    grace_seconds: float = 30.0
    max_connection_age_seconds: float = 0.0
    log_level: str = "INFO"
    tls_cert: Path | None = None
    tls_key: Path | None = None
    tls_client_ca: Path | None = None
    auth_token_file: Path | None = None
    auth_exempt_health: bool = False
    log_format: str = "text"
    http_port: int = -1


HELP = """\
Serve a kvserve model artifact (made by kvserve-export) over gRPC with continuous batching.

Service kvserve.v1.Generation (Generate, GenerateStream, Answer, GetModelInfo), plus
grpc.health.v1.Health and server reflection, on --host:--port; Prometheus /metrics on
--metrics-host:--metrics-port. SIGTERM drains: health turns NOT_SERVING, new requests get
UNAVAILABLE, in-flight ones finish within --grace-seconds; a second SIGTERM stops at once.
Every option can also be set as an environment variable, e.g. KVSERVE_PORT=50052.
"""


def parse_args(argv: list[str] | None = None) -> ServeConfig:
    d = ServeConfig(model=Path("."))
    p = argparse.ArgumentParser(
        prog="kvserve-serve", description=HELP, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    model_env = os.environ.get("KVSERVE_MODEL")
    p.add_argument(
        "--model",
        type=Path,
        default=model_env,
        required=not model_env,
        help="model artifact dir (manifest.json, model.onnx, tokenizer.json)",
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
    option(p, "--max-batch-size", d.max_batch_size, "most sequences decoded together", type=int)
    option(
        p,
        "--max-batch-tokens",
        d.max_batch_tokens,
        "budget of prompt + max_new_tokens over the running batch",
        type=int,
    )
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
        "used when a request leaves max_new_tokens at 0",
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
    option(p, "--log-format", d.log_format, "text lines, or one JSON object a line",
           choices=["text", "json"])  # fmt: skip
    add_security_options(p)
    args = p.parse_args(argv)
    args.auth_exempt_health = truthy(args.auth_exempt_health)
    for name in (
        "max_batch_size",
        "max_batch_tokens",
        "max_queue",
        "default_max_new_tokens",
        "max_new_tokens_limit",
    ):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1")
    if args.max_connection_age_seconds < 0:
        p.error("--max-connection-age-seconds must be >= 0")
    if not args.metrics_path.startswith("/"):
        p.error(f"--metrics-path must start with '/', got {args.metrics_path!r}")
    return ServeConfig(**vars(args))


def grpc_server_options(config: ServeConfig) -> list[tuple[str, int]]:
    """gRPC server channel arguments.

    A maximum connection age sends each client a GOAWAY now and then (gRPC adds +-10 %
    jitter); the client reconnects and re-resolves the target's DNS name, which is how a
    long-lived client balancing over a headless Service meets replicas added after it
    connected. No age grace is set: RPCs in flight on the old connection run to their end
    (a long generation is never cut), new ones go over the new connection."""
    if config.max_connection_age_seconds <= 0:
        return []
    return [("grpc.max_connection_age_ms", round(config.max_connection_age_seconds * 1000))]


def option(parser: argparse.ArgumentParser, flag: str, default, help: str, **kwargs) -> None:
    """A flag whose default comes from KVSERVE_<FLAG> when set.

    argparse applies `type` and `choices` to a string default too, so a bad environment
    value gets the same one-line error as a bad flag."""
    env = "KVSERVE_" + flag.lstrip("-").replace("-", "_").upper()
    parser.add_argument(
        flag,
        default=os.environ.get(env, default),
        help=f"{help} (default: %(default)s; env {env})",
        **kwargs,
    )


def add_security_options(p: argparse.ArgumentParser) -> None:
    """TLS, mTLS and bearer tokens (server/security.py reads and checks the files)."""
    option(p, "--tls-cert", None, "PEM certificate chain: serve TLS (with --tls-key)", type=Path)
    option(p, "--tls-key", None, "PEM private key of --tls-cert", type=Path)
    option(
        p, "--tls-client-ca", None, "PEM CA bundle: require client certificates (mTLS)", type=Path
    )
    option(
        p,
        "--auth-token-file",
        None,
        "file of accepted bearer tokens, one per line; every RPC needs "
        "'authorization: Bearer <token>'; SIGHUP reloads it",
        type=Path,
    )
    option(
        p,
        "--auth-exempt-health",
        "false",
        "leave grpc.health.v1.Health open without a token, for probes (true/false)",
        choices=["true", "false", "1", "0", "yes", "no"],
    )


def truthy(value) -> bool:
    return str(value).strip().lower() in ("1", "true", "yes")
