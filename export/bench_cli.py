"""`kvserve-export bench ARTIFACT [ARTIFACT ...]`: the command line around `bench.run_bench`.

Prints a table per artifact (and speed-ups vs the first when given several) and stores each
artifact's figures as JSON: ARTIFACT/bench.json, or --out FILE for a single artifact.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from export.cli import Parser, env

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


def build_parser() -> argparse.ArgumentParser:
    p = Parser(prog=PROG, description=DESCRIPTION,
                formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("artifacts", metavar="ARTIFACT", type=Path, nargs="+", help="artifact dir")
    p.add_argument(
        "--batches",
        type=_batches,
        default=env("batches") or "1,8,32",
        help="batch sizes, comma-separated (default: %(default)s)",
    )
    p.add_argument(
        "--prompt-tokens",
        type=int,
        default=env("prompt-tokens") or "128",
        help="tokens per prompt (default: %(default)s)",
    )
    p.add_argument(
        "--decode-steps",
        type=int,
        default=env("decode-steps") or "16",
        help="decode steps timed after each prefill (default: %(default)s)",
    )
    p.add_argument(
        "--repeats",
        type=int,
        default=env("repeats") or "3",
        help="prefills per batch size; medians reported (default: %(default)s)",
    )
    p.add_argument(
        "--provider",
        choices=["auto", "cpu", "cuda"],
        default=env("provider") or "auto",
        help="ONNX Runtime provider, as kvserve-serve --provider (default: %(default)s)",
    )
    p.add_argument(
        "--threads",
        type=int,
        default=env("threads") or "0",
        help="intra-op threads, 0 = ONNX Runtime's default (default: %(default)s)",
    )
    p.add_argument("--out", type=Path, default=None,
                   help="JSON file for the figures (one artifact only; default: "
                   "ARTIFACT/bench.json)")  # fmt: skip
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.out is not None and len(args.artifacts) > 1:
        print(f"{PROG}: error: --out takes one artifact", file=sys.stderr)
        return 2
    if min(args.prompt_tokens, args.decode_steps, args.repeats) < 1 or args.threads < 0:
        print(f"{PROG}: error: --prompt-tokens, --decode-steps, --repeats must be >= 1",
              file=sys.stderr)  # fmt: skip
        return 2
    from artifact import ManifestError
    from export.bench import BenchSettings, format_report, format_speedups, run_bench

    settings = BenchSettings(args.batches, args.prompt_tokens, args.decode_steps, args.repeats,
                             args.provider, args.threads)  # fmt: skip
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
