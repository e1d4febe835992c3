"""Wire the server together: artifact -> runner, scheduler, updater -> engine -> service; serve.

Owns the process lifecycle: warm-up before health says SERVING, and the SIGTERM drain.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from dataclasses import dataclass

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from tokenizers import Tokenizer

from artifact import (
    GRAPH_INTERFACE,
    MANIFEST_NAME,
    PAGED_INTERFACE,
    Manifest,
    ManifestError,
    read_manifest,
)
from proto import kvserve_pb2 as pb
from proto import kvserve_pb2_grpc as pb_grpc
from server import logs
from server.blocks import default_kv_memory_bytes, machine_memory_bytes
from server.config import ServeConfig, grpc_server_options
from server.drain import wait_until_idle, wait_until_quiet
from server.engine import Engine, execute_chunks
from server.generation import Generator
from server.handover import HandOver
from server.http_app import HttpDoor, create_app
from server.http_server import HttpServer
from server.metrics import Metrics
from server.paged_runner import PagedRunner, open_paged_runner
from server.runner import OnnxRunner
from server.scheduler import Scheduler
from server.security import ServerSecurity, load_security
from server.service import GenerationService, ServiceInfo
from server.slot_chunks import SlotPool, execute_slots
from server.text_stream import detokenizer
from server.update import Updater

log = logging.getLogger("kvserve.server")
SERVICE_NAME = pb.DESCRIPTOR.services_by_name["Generation"].full_name
# gRPC core holds calls that arrive faster than the asyncio server takes them; past 1000 of
# them it refuses new ones at random and the client sees CANCELLED for a call it never
# cancelled (2000 streams at once on one connection: about 200). Held calls cost little and
# the service itself refuses what it cannot queue (RESOURCE_EXHAUSTED, or UNAVAILABLE while
# draining), so the core's limits are set far above any burst the service could take.
PENDING_CALLS_LIMIT = 1 << 16
BURST_OPTIONS = [
    ("grpc.server.max_pending_requests", PENDING_CALLS_LIMIT),
    ("grpc.server.max_pending_requests_hard_limit", PENDING_CALLS_LIMIT),
]


@dataclass
class LoadedModel:
    manifest: Manifest
    tokenizer: Tokenizer
    runner: OnnxRunner | PagedRunner


def load_model(config: ServeConfig) -> LoadedModel:
    """Read and verify the artifact; ManifestError names the file and the problem."""
    manifest = read_manifest(config.model)
    model_path = config.model / manifest.model_file
    try:
        tokenizer = Tokenizer.from_file(str(config.model / manifest.tokenizer_file))
    except Exception as e:
        raise ManifestError(f"{config.model / manifest.tokenizer_file}: unreadable ({e})") from None
    if manifest.interface not in (GRAPH_INTERFACE, PAGED_INTERFACE):
        raise ManifestError(
            f"{config.model / MANIFEST_NAME}: graph interface {manifest.interface!r}, this "
            f"server runs {GRAPH_INTERFACE!r} and {PAGED_INTERFACE!r} (re-export with this "
            "version of kvserve-export)"
        )
    try:
        if manifest.interface == PAGED_INTERFACE:
            model_path = config.model / manifest.pieces[0]
            runner = open_paged_runner(
                config.model, manifest.architecture, config.runner_config(), config.kv_block_size
            )
        else:
            runner = OnnxRunner(model_path, manifest.architecture, config.runner_config())
    except Exception as e:
        first_line = str(e).strip().splitlines()[0] if str(e).strip() else repr(e)
        raise ManifestError(f"{model_path}: ONNX Runtime cannot load it ({first_line})") from None
    return LoadedModel(manifest, tokenizer, runner)


def warm_up(runner: OnnxRunner | PagedRunner, token: int) -> None:
    """One prefill and one decode, so the first real request does not pay for allocation."""
    cache = runner.new_cache(max_rows=1)
    logits = runner.prefill(cache, [[token, token]])
    runner.decode_step(cache, logits.argmax(axis=1))


def engine_parts(config: ServeConfig, runner: OnnxRunner | PagedRunner):
    """The one scheduler over the runner's cache, and the plan execution that fits it: paged
    blocks (kernel attention), or slots with whole prompts (the fused graph: CUDA, older
    artifacts)."""
    if hasattr(runner, "new_pool"):  # a PagedRunner, or a test's wrapper of one
        memory = config.kv_cache_memory or default_kv_memory_bytes(machine_memory_bytes())
        cache = runner.new_pool(memory, config.prefix_caching, config.prefix_cache_memory)
        return Scheduler(config.scheduler_config(), cache), execute_chunks
    rows = config.max_batch_size
    pool = SlotPool(lambda: runner.new_cache(rows), rows, config.kv_block_size)
    return Scheduler(config.scheduler_config(chunked_prefill=False), pool), execute_slots


def hand_over(config: ServeConfig, manifest: Manifest) -> HandOver:
    """The server's hand-over policy: the manifest's calibration, the option's threshold (or
    the manifest's) and text. An artifact without a calibration answers every question."""
    handover = HandOver(manifest.confidence, config.handover_threshold, config.handover_text)
    if manifest.confidence is None:
        if config.handover_threshold:
            log.warning(
                "--handover-threshold %g has no effect: the artifact has no confidence "
                "calibration (export it from a checkpoint with confidence.json)",
                config.handover_threshold,
            )
    else:
        log.info("hand-over below confidence %.3f", handover.threshold)
    return handover


class Server:
    def __init__(
        self, config: ServeConfig, model: LoadedModel, security: ServerSecurity | None = None
    ) -> None:
        self.config = config
        self.security = security or load_security(config)
        manifest = model.manifest
        self.metrics = Metrics()
        self.metrics.set_model(manifest.model_name, manifest.quantization, model.runner.provider)
        scheduler, run_plan = engine_parts(config, model.runner)
        updater = Updater(
            eos_token_id=manifest.eos_token_id,
            max_context=manifest.architecture.max_positions,
            detokenize=detokenizer(model.tokenizer),
        )
        self.engine = Engine(
            model.runner, scheduler, updater, on_step=self.metrics.observe_step, execute=run_plan
        )
        limits = config.limits(manifest.architecture.vocab_size)
        self.generator = Generator(self.engine, model.tokenizer, manifest, limits)
        self.generator.handover = hand_over(config, manifest)
        info = ServiceInfo(model.runner.provider, config.max_batch_size, limits)
        self.service = GenerationService(self.generator, info, self.metrics)
        self.model = model
        self.health = health.aio.HealthServicer()
        for interceptor in self.security.interceptors:
            interceptor.on_reject = self._count_rejected
        self.grpc = grpc.aio.server(
            interceptors=self.security.interceptors,
            options=grpc_server_options(config) + BURST_OPTIONS,
        )
        self.port = 0
        self.serving = False  # what health says, on both doors
        self.http = self._http_door(config, model) if config.http_port >= 0 else None
        self.http_port: int | None = None
        self._stop_requested = asyncio.Event()
        self._stop_now = asyncio.Event()
        self._signals = 0

    def _http_door(self, config: ServeConfig, model: LoadedModel) -> HttpServer:
        """The OpenAI-compatible HTTP door on the same generator, metrics, tokens and TLS."""
        arch = model.manifest.architecture
        door = HttpDoor(
            generator=self.generator,
            model=model.manifest.model_name,
            max_model_len=arch.max_positions,
            metrics=self.metrics,
            serving=lambda: self.serving,
            tokens=self.security.tokens,
            exempt_health=self.security.exempt_health,
        )
        tls = (config.tls_cert, config.tls_key, config.tls_client_ca)
        return HttpServer(create_app(door), config.host, config.http_port, *tls)

    async def start(self) -> int:
        pb_grpc.add_GenerationServicer_to_server(self.service, self.grpc)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.grpc)
        names = (SERVICE_NAME, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name)
        reflection.enable_server_reflection((*names, reflection.SERVICE_NAME), self.grpc)
        await self._set_health(health_pb2.HealthCheckResponse.NOT_SERVING)
        address = f"{self.config.host}:{self.config.port}"
        if self.security.credentials is None:
            self.port = self.grpc.add_insecure_port(address)
        else:
            try:
                self.port = self.grpc.add_secure_port(address, self.security.credentials)
            except RuntimeError as e:  # e.g. a key that does not match the certificate
                raise OSError(f"cannot serve TLS on {address} ({e})") from None
        if self.port == 0:
            raise OSError(f"cannot bind gRPC to {self.config.host}:{self.config.port}")
        if self.http is not None:
            self.http_port = self.http.bind()
        await self.grpc.start()
        if self.http is not None:
            await self.http.start()
        warm_up(self.model.runner, self.model.manifest.eos_token_id)
        self.engine.start()
        await self._set_health(health_pb2.HealthCheckResponse.SERVING)
        return self.port

    async def run_until_signalled(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._on_signal)
        loop.add_signal_handler(signal.SIGHUP, self.security.reload_tokens)
        await self._stop_requested.wait()
        await self.drain()

    def _count_rejected(self, method: str, problem: str) -> None:
        """A call the auth interceptor refused: counted and access-logged like the others."""
        rpc = method.rsplit("/", 1)[-1]
        self.metrics.observe_rpc(rpc, "UNAUTHENTICATED", 0.0)
        logs.access(logs.begin(rpc), "UNAUTHENTICATED", 0.0, problem)

    def _on_signal(self) -> None:
        self._signals += 1
        if self._signals == 1:
            log.info("signal received: draining (up to %.0fs)", self.config.grace_seconds)
            self._stop_requested.set()
        else:
            log.info("second signal: stopping now")
            self._stop_now.set()
            loop = asyncio.get_running_loop()
            loop.create_task(self.grpc.stop(None))
            if self.http is not None:
                loop.create_task(self.http.stop(None))

    async def drain(self) -> None:
        """Health NOT_SERVING and new requests refused at once, on both doors; in-flight
        ones get the grace.

        The ports stay open while the engine finishes, so probes read NOT_SERVING and new
        calls get UNAVAILABLE (HTTP: 503) from the door instead of a refused connection."""
        self.generator.draining = True
        await self._set_health(health_pb2.HealthCheckResponse.NOT_SERVING)
        left = await wait_until_idle(self.engine, self.config.grace_seconds, self._stop_now)
        if left is not None:
            left = await wait_until_quiet(self.generator, left, self._stop_now)
        grace = None if left is None else max(left, 1.0)
        doors = [self.grpc.stop(grace)] + ([] if self.http is None else [self.http.stop(grace)])
        await asyncio.gather(*doors)
        self.engine.stop()
        log.info("stopped")

    async def _set_health(self, status) -> None:
        self.serving = status == health_pb2.HealthCheckResponse.SERVING
        for name in ("", SERVICE_NAME):
            await self.health.set(name, status)
