"""`kvserve-export bench ARTIFACT`: prefill and decode timings with the artifact's own session.

The graph runs through the server's runner for its interface (the fused graph over the slot
cache, or the dense pieces and the attention kernel over the paged cache), so the figures are
what serving gets per engine step: one prefill of `batch` prompts of
`prompt_tokens` random tokens, then `decode_steps` decode steps of one token per row. Each
figure is the median over repeats. The machine's load average is recorded beside them: on a
shared machine, compare artifacts in one run (`bench A B`), not across runs.
"""

from __future__ import annotations

import os
import platform
import statistics
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from artifact import ManifestError, read_manifest
from export.config import BenchSettings
from server.paged_runner import PagedRunner, open_runner
from server.runner import OnnxRunner, RunnerConfig


@dataclass(frozen=True)
class BenchRow:
    batch: int
    prefill_ms: float  # one prefill of `batch` prompts
    prefill_tokens_per_s: float
    decode_ms: float  # one decode step of `batch` rows
    decode_tokens_per_s: float


@dataclass
class BenchReport:
    artifact: str
    precision: str
    quantization: str
    provider: str
    settings: BenchSettings
    rows: list[BenchRow] = field(default_factory=list)
    machine: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


SETTLE_S = 0.1  # pause before each timed run: the other sessions' threads stop spinning


def run_bench(artifacts: list[Path], settings: BenchSettings) -> list[BenchReport]:
    """Time every batch size on every artifact, interleaved (raises ManifestError if invalid).

    Interleaving (each repeat runs every artifact on the same prompts) keeps their ratios
    meaningful on a machine whose load changes during the run."""
    loaded = [_load(artifact, settings) for artifact in artifacts]
    reports = [report for _, report in loaded]
    load_before = os.getloadavg()[0]
    rng = np.random.default_rng(0)
    for runner, _ in loaded:  # warm-up: the first runs allocate
        time_steps(runner, rng.integers(0, 2, (1, settings.prompt_tokens)).tolist(), settings)
    for batch in settings.batches:
        times: list[tuple[list[float], list[float]]] = [([], []) for _ in loaded]
        for _ in range(settings.repeats):
            vocab = min(runner.architecture.vocab_size for runner, _ in loaded)
            prompts = rng.integers(0, vocab, (batch, settings.prompt_tokens)).tolist()
            for (runner, _), (prefill, decode) in zip(loaded, times, strict=True):
                p, d = time_steps(runner, prompts, settings)
                prefill.append(p)
                decode.extend(d)
        for report, (prefill, decode) in zip(reports, times, strict=True):
            report.rows.append(_row(batch, settings.prompt_tokens, prefill, decode))
    machine = {
        "load_before": load_before,
        "load_after": os.getloadavg()[0],
        "cpus": os.cpu_count(),
        "cpu": platform.processor() or platform.machine(),
    }
    for report in reports:
        report.machine = machine
    return reports


def _load(artifact: Path, settings: BenchSettings) -> tuple[OnnxRunner | PagedRunner, BenchReport]:
    manifest = read_manifest(artifact)
    if settings.prompt_tokens + settings.decode_steps >= manifest.architecture.max_positions:
        raise ManifestError(f"{artifact}: prompt + decode steps exceed the model's context")
    config = RunnerConfig(settings.provider, settings.threads, spin=True)
    runner = open_runner(artifact, manifest.interface, manifest.architecture, config)
    quantization = manifest.quantization
    if manifest.graph.get("kv_cache") == "int8":
        quantization += ", int8 KV cache"
    report = BenchReport(
        str(artifact),
        manifest.source.get("precision", "?"),
        quantization,
        runner.provider,
        settings,
    )
    return runner, report


def time_steps(runner: OnnxRunner | PagedRunner, prompts: list[list[int]], s: BenchSettings):
    """Seconds of one prefill of `prompts`, and of each decode step after it."""
    # ONNX Runtime's worker threads keep spinning a few ms after a run; without a pause the
    # next artifact is timed against the previous one's spinning threads (docs/export.md)
    time.sleep(SETTLE_S)
    cache = runner.new_cache(max_rows=len(prompts))  # paged: blocks for whole contexts
    if hasattr(cache, "reserve"):  # slots: no regrowth while timed
        cache.reserve(len(prompts), s.prompt_tokens + s.decode_steps + 1)
    start = time.perf_counter()
    logits = runner.prefill(cache, prompts)
    prefill = time.perf_counter() - start
    decode = []
    for _ in range(s.decode_steps):
        tokens = logits.argmax(-1).astype(np.int64)
        start = time.perf_counter()
        logits = runner.decode_step(cache, tokens)
        decode.append(time.perf_counter() - start)
    return prefill, decode


def _row(batch: int, prompt_tokens: int, prefill: list[float], decode: list[float]) -> BenchRow:
    p, d = statistics.median(prefill), statistics.median(decode)
    return BenchRow(batch, 1000 * p, batch * prompt_tokens / p, 1000 * d, batch / d)


def format_speedups(reports: list[BenchReport]) -> str:
    """Each artifact's speed relative to the first one (x faster; same prompts, interleaved)."""
    base = reports[0]
    lines = [f"speed-up vs {base.artifact} (same run, interleaved)"]
    for report in reports[1:]:
        parts = [
            f"batch {b.batch}: prefill {b.prefill_ms / r.prefill_ms:.2f}x, "
            f"decode {b.decode_ms / r.decode_ms:.2f}x"
            for b, r in zip(base.rows, report.rows, strict=True)
        ]
        lines.append(f"  {report.artifact}: " + "; ".join(parts))
    return "\n".join(lines)


def format_report(report: BenchReport) -> str:
    s = report.settings
    head = (
        f"{report.artifact}: {report.precision} ({report.quantization}) on {report.provider}, "
        f"prompt {s.prompt_tokens} tokens, {s.decode_steps} decode steps, median of {s.repeats}; "
        f"load average {report.machine['load_before']:.2f} -> {report.machine['load_after']:.2f}"
        f" on {report.machine['cpus']} CPUs"
    )
    rows = [("batch", "prefill ms", "prefill tok/s", "decode ms/step", "decode tok/s")]
    for r in report.rows:
        rows.append(
            (
                str(r.batch),
                f"{r.prefill_ms:.1f}",
                f"{r.prefill_tokens_per_s:.0f}",
                f"{r.decode_ms:.2f}",
                f"{r.decode_tokens_per_s:.1f}",
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(5)]
    lines = ["  ".join(c.rjust(w) for c, w in zip(row, widths, strict=True)) for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join([head, *lines])
