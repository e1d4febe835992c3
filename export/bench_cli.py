"""`kvserve-export bench ARTIFACT [ARTIFACT ...]`: the command line around `bench.run_bench`.

Prints a table per artifact (and speed-ups vs the first when given several) and stores each
artifact's figures as JSON: ARTIFACT/bench.json, or --out FILE for a single artifact.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from dataclasses import fields
from pathlib import Path

from envopts import Parser, option
from export.config import BenchSettings

PROG = "kvserve-export bench"
DESCRIPTION = """\
Time an exported artifact the way the server runs it (the server's runner: its session
options, slot KV cache and IOBinding): one prefill of BATCH random prompts of
--prompt-tokens tokens, then --decode-steps decode steps of one token per row, for each
--batches size; medians over --repeats. With several artifacts the runs are interleaved
(same prompts, same moments), so their ratios hold on a busy machine. The figures go to
ARTIFACT/bench.json (not part of the manifest's hashes) unless --out is given."""


def _batches(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.split(","))
    except ValueError:
        message = f"not a comma-separated list of integers: {text!r}"
        raise argparse.ArgumentTypeError(message) from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"batch sizes must be >= 1: {text!r}")
    return values


def build_parser() -> Parser:
    d = BenchSettings()
    p = Parser(PROG, DESCRIPTION)
    p.add_argument("artifacts", metavar="ARTIFACT", type=Path, nargs="+", help="artifact dir")
    option(p, "--batches", d.batches, "batch sizes, comma-separated", type=_batches)
    option(p, "--prompt-tokens", d.prompt_tokens, "tokens per prompt", type=int)
    option(p, "--decode-steps", d.decode_steps, "decode steps timed after each prefill", type=int)
    option(p, "--repeats", d.repeats, "prefills per batch size; medians reported", type=int)
    option(
        p,
        "--provider",
        d.provider,
        "ONNX Runtime provider, as kvserve-serve --provider",
        choices=["auto", "cpu", "cuda"],
    )
    option(p, "--threads", d.threads, "intra-op threads, 0 = ONNX Runtime's default", type=int)
    p.add_argument(
        "--out",
        type=Path,
        help="JSON file for the figures (one artifact only; default: ARTIFACT/bench.json)",
    )
    return p


def main(argv: Sequence[str] | None = None) -> int:
    p = build_parser()
    args = p.parse_args(argv)
    if args.out is not None and len(args.artifacts) > 1:
        p.error("--out takes one artifact")
    if min(args.prompt_tokens, args.decode_steps, args.repeats) < 1 or args.threads < 0:
        p.error("--prompt-tokens, --decode-steps, --repeats must be >= 1, --threads >= 0")
    from artifact import ManifestError
    from export.bench import format_report, format_speedups, run_bench

    settings = BenchSettings(**{f.name: getattr(args, f.name) for f in fields(BenchSettings)})
    try:
        reports = run_bench(args.artifacts, settings)
    except (ManifestError, RuntimeError, OSError) as e:
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return 2
    for artifact, report in zip(args.artifacts, reports, strict=True):
        print(format_report(report))
        path = args.out or artifact / "bench.json"
        try:
            path.write_text(json.dumps(report.to_dict(), indent=2) + "\n")
        except OSError as e:
            print(f"{PROG}: error: cannot write {path} ({e})", file=sys.stderr)
            return 1
        print(f"wrote {path}")
    if len(reports) > 1:
        print(format_speedups(reports))
    return 0
