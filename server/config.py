"""ServeConfig: every `kvserve-serve` option, with its default (the only place it is set).

The parser (server/cli.py) adds one flag per field; the server's parts get their own configs
built from it here (`scheduler_config`, `limits`, `runner_config`), so none repeats a default.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from server.handover import DEFAULT_TEXT, check_threshold
from server.runner import RunnerConfig
from server.scheduler import SchedulerConfig
from server.validation import InvalidArgument, Limits

AT_LEAST_ONE = (
    "max_batch_size",
    "kv_block_size",
    "max_step_tokens",
    "max_queue",
    "default_max_new_tokens",
    "max_new_tokens_limit",
)


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
    ort_spin: bool = True  # ORT's default; off (threads sleep) suits cores shared with other work
    max_batch_size: int = 32
    max_queue: int = 256
    # paged artifacts (kvserve's attention kernel): memory in blocks, one token budget a step
    kv_cache_memory: int = 0  # bytes of key/value blocks; 0 = a share of the machine's memory
    kv_block_size: int = 16  # tokens per block
    max_step_tokens: int = 512  # decoding tokens + prompt chunks run in one step
    itl_target_ms: float = 100.0  # a step's time while sequences decode; 0 = tokens alone
    prefix_caching: bool = True
    # free blocks the prefix cache keeps before its oldest is reused rather than memory never
    # written (server/blocks.py says why): a few thousand tokens of shared prefixes
    prefix_cache_memory: int = 64 << 20
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
    # answers below this confidence are handed over (None = the manifest's; 0 = never)
    handover_threshold: float | None = None
    handover_text: str = DEFAULT_TEXT

    def scheduler_config(self, chunked_prefill: bool = True) -> SchedulerConfig:
        """`chunked_prefill` off for the slot cache (its graph prefills whole prompts)."""
        return SchedulerConfig(
            max_batch_size=self.max_batch_size,
            max_queue=self.max_queue,
            max_step_tokens=self.max_step_tokens,
            itl_target_s=self.itl_target_ms / 1000,
            chunked_prefill=chunked_prefill,
        )

    def limits(self, vocab_size: int) -> Limits:
        return Limits(
            default_max_new_tokens=self.default_max_new_tokens,
            max_new_tokens=self.max_new_tokens_limit,
            vocab_size=vocab_size,
        )

    def runner_config(self) -> RunnerConfig:
        return RunnerConfig(
            provider=self.provider, intra_op_threads=self.threads, spin=self.ort_spin
        )

    def problem(self) -> str | None:
        """Why the server cannot run with these values (None when it can): one line naming
        the option."""
        for name in AT_LEAST_ONE:
            if getattr(self, name) < 1:
                return f"--{name.replace('_', '-')} must be >= 1"
        if self.threads < 0:
            return "--threads must be >= 0 (0 = one per core)"
        if self.kv_cache_memory < 0:
            return "--kv-cache-memory must be >= 0 (0 = a share of this machine's memory)"
        if self.prefix_cache_memory < 0:
            return "--prefix-cache-memory must be >= 0"
        if not 0 <= self.itl_target_ms < float("inf"):
            return "--itl-target-ms must be >= 0 (0 = the token budget alone)"
        if self.max_connection_age_seconds < 0:
            return "--max-connection-age-seconds must be >= 0"
        if self.handover_threshold is not None:
            try:
                check_threshold(self.handover_threshold, "--handover-threshold")
            except InvalidArgument as e:
                return f"{e.field} {e.problem}"
        if not self.handover_text.strip():
            return "--handover-text must not be empty"
        if not self.metrics_path.startswith("/"):
            return f"--metrics-path must start with '/', got {self.metrics_path!r}"
        return None


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
