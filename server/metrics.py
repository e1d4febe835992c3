"""Prometheus series for kvserve: the only module that imports prometheus_client.

An observer: the engine hands over StepStats after every step, the service reports each
RPC's outcome; nothing here feeds back into serving. Names are a contract (DESIGN.md):
dashboards and alerts depend on them.
"""

from __future__ import annotations

import socket
import threading
from socketserver import ThreadingMixIn
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, make_wsgi_app

from server.handover import Verdict
from server.step import StepStats

# Buckets span what this workload shows: a first token from ~1 ms (tiny model, idle server)
# to a minute (a long queue on CPU); a token gap from ~0.5 ms (GPU) to seconds (overload).
# A whole request: from ~5 ms (a few tokens, small model) to minutes (long outputs, queued).
TTFT_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
ITL_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)
E2E_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 24, 32, 48, 64, 96, 128, 256)
# An answer's confidence is a probability: 0.05 steps, so histogram_quantile's straight-line
# interpolation inside a bucket is off by at most 0.05, near any threshold one might choose.
CONFIDENCE_BUCKETS = tuple(round(0.05 * i, 2) for i in range(1, 21))


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "kvserve_requests", "RPCs by method and status code.", ["rpc", "code"], registry=r
        )
        self.duration = Histogram(
            "kvserve_request_duration_seconds",
            "End-to-end RPC latency.",
            ["rpc"],
            buckets=E2E_BUCKETS,
            registry=r,
        )
        self.ttft = Histogram(
            "kvserve_time_to_first_token_seconds",
            "Accepted -> first token (queue included).",
            buckets=TTFT_BUCKETS,
            registry=r,
        )
        self.itl = Histogram(
            "kvserve_inter_token_latency_seconds",
            "Gap between a request's tokens.",
            buckets=ITL_BUCKETS,
            registry=r,
        )
        self.queue_wait = Histogram(
            "kvserve_queue_wait_seconds",
            "Accepted -> first scheduled.",
            buckets=TTFT_BUCKETS,
            registry=r,
        )
        self.batch_size = Histogram(
            "kvserve_batch_size",
            "Sequences that got a token, per engine step.",
            buckets=BATCH_BUCKETS,
            registry=r,
        )
        self.step_seconds = Histogram(
            "kvserve_engine_step_seconds",
            "Wall time of one engine step.",
            buckets=ITL_BUCKETS,
            registry=r,
        )
        self.running = Gauge("kvserve_requests_running", "Sequences in the batch.", registry=r)
        self.waiting = Gauge("kvserve_requests_waiting", "Requests queued.", registry=r)
        self.prompt_tokens = Counter(
            "kvserve_prompt_tokens", "Prompt tokens prefilled.", registry=r
        )
        self.generated_tokens = Counter("kvserve_generated_tokens", "Tokens generated.", registry=r)
        self.kv_cache_bytes = Gauge(
            "kvserve_kv_cache_bytes", "Bytes held by the batch's KV cache.", registry=r
        )
        self.kv_blocks = Gauge(
            "kvserve_kv_cache_blocks",
            "Paged KV cache blocks by state: used (held by sequences) or free.",
            ["state"],
            registry=r,
        )
        self.prefix_queried = Counter(
            "kvserve_prefix_cache_queried_tokens",
            "Prompt tokens looked up in the prefix cache (paged cache).",
            registry=r,
        )
        self.prefix_hits = Counter(
            "kvserve_prefix_cache_hit_tokens",
            "Prompt tokens found in the prefix cache, not computed again; hit rate = "
            "rate(hit) / rate(queried).",
            registry=r,
        )
        self.preemptions = Counter(
            "kvserve_preemptions",
            "Sequences sent back to the queue for lack of KV blocks (recomputed later).",
            registry=r,
        )
        self.handovers = Counter(
            "kvserve_handovers",
            "Answers replaced by the hand-over text: their confidence was below the threshold "
            "(Answer RPC and chat completions).",
            registry=r,
        )
        self.answer_confidence = Histogram(
            "kvserve_answer_confidence",
            "Confidence of each judged answer: a calibrated probability that it is right; "
            "hand-over rate = rate(kvserve_handovers_total) / rate(this _count).",
            buckets=CONFIDENCE_BUCKETS,
            registry=r,
        )
        self.model_info = Gauge(
            "kvserve_model_info",
            "The served model (value is always 1).",
            ["model", "quantization", "provider"],
            registry=r,
        )
        for state in ("used", "free"):  # exported from the start, before any step
            self.kv_blocks.labels(state=state)

    def set_model(self, model: str, quantization: str, provider: str) -> None:
        self.model_info.labels(model=model, quantization=quantization, provider=provider).set(1)

    def observe_rpc(self, rpc: str, code: str, seconds: float) -> None:
        self.requests.labels(rpc=rpc, code=code).inc()
        self.duration.labels(rpc=rpc).observe(seconds)

    def observe_answer(self, verdict: Verdict) -> None:
        """One judged answer (server/handover.py); an artifact without a calibration gives
        no confidence and counts nowhere."""
        if verdict.confidence is not None:
            self.answer_confidence.observe(verdict.confidence)
        if verdict.handed_over:
            self.handovers.inc()

    def observe_step(self, stats: StepStats) -> None:
        if stats.batch_size:
            self.batch_size.observe(stats.batch_size)
            self.step_seconds.observe(stats.seconds)
        for seconds in stats.ttft_seconds:
            self.ttft.observe(seconds)
        for seconds in stats.itl_seconds:
            self.itl.observe(seconds)
        for seconds in stats.queue_seconds:
            self.queue_wait.observe(seconds)
        self.prompt_tokens.inc(stats.prompt_tokens)
        self.generated_tokens.inc(stats.generated_tokens)
        self.running.set(stats.running)
        self.waiting.set(stats.waiting)
        self.kv_cache_bytes.set(stats.kv_cache_bytes)
        self.kv_blocks.labels(state="used").set(stats.kv_blocks_used)
        self.kv_blocks.labels(state="free").set(stats.kv_blocks_free)
        self.prefix_queried.inc(stats.prefix_queried_tokens)
        self.prefix_hits.inc(stats.prefix_hit_tokens)
        self.preemptions.inc(stats.preemptions)

    def serve(self, host: str, port: int, path: str = "/metrics") -> WSGIServer:
        """Expose the series at `path` on their own HTTP port (any other path: 404); returns
        the server (call .shutdown()). A thread per scrape, as prometheus_client's own."""
        metrics_app = make_wsgi_app(self.registry)

        def app(environ, start_response):
            if environ.get("PATH_INFO") != path:  # prometheus_client alone answers any path
                start_response("404 Not Found", [("Content-Type", "text/plain")])
                return [f"not found: kvserve metrics are at {path}\n".encode()]
            return metrics_app(environ, start_response)

        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        server_class = type("MetricsServer", (_ThreadingWSGIServer,), {"address_family": family})
        server = make_server(host, port, app, server_class, handler_class=_QuietHandler)
        threading.Thread(target=server.serve_forever, name="kvserve-metrics", daemon=True).start()
        return server


class _ThreadingWSGIServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args) -> None:  # one line per scrape is noise
        pass
