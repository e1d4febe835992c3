"""`kvserve-export CHECKPOINT_DIR OUT_DIR`: the command line around `pipeline.run_export`.

Every option defaults from an environment variable KVSERVE_<OPTION>. Bad input ends with one
line on stderr and exit code 2; an export that fails its checks exits 1; never a traceback.
"""

from __future__ import annotations

import argparse
import os
import sys
import textwrap
from collections.abc import Sequence
from pathlib import Path

from export.errors import ExportError
from export.options import PRECISIONS, TARGETS, ExportOptions

PROG = "kvserve-export"
TRUE = {"1", "true", "yes", "on"}

DESCRIPTION = """\
Turn a GPT-2 checkpoint dir (from kvserve-train or any HF GPT-2 save_pretrained: config.json,
model.safetensors, tokenizer.json, kvserve_prompt.json) into a model artifact dir for
kvserve-serve: model.onnx (one decoder graph with a KV cache), tokenizer.json and
manifest.json (architecture, graph names, quantization, parity report, file hashes).
The ONNX graph is checked against PyTorch on a few prompts before anything is written;
OUT_DIR appears only when the export succeeded."""


def _epilog() -> str:
    lines = ["precisions and the targets they fit (cpu is the only target so far):"]
    for name, (_, targets, desc) in PRECISIONS.items():
        text = f"{name:<5} [{', '.join(targets)}] {desc}"
        lines += textwrap.wrap(text, width=92, initial_indent="  ", subsequent_indent="        ")
    lines += [
        "",
        "environment: KVSERVE_PRECISION, KVSERVE_TARGET, KVSERVE_FORCE set the option defaults.",
        "exit codes: 0 ok, 1 export or parity check failed, 2 bad input.",
    ]
    return "\n".join(lines)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, not usage + message
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def build_parser() -> argparse.ArgumentParser:
    env = os.environ
    p = _Parser(
        prog=PROG,
        description=DESCRIPTION,
        epilog=_epilog(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "checkpoint", metavar="CHECKPOINT_DIR", type=Path, help="HF GPT-2 checkpoint dir"
    )
    p.add_argument("out", metavar="OUT_DIR", type=Path, help="artifact dir to create")
    p.add_argument(
        "--precision",
        "--quantize",
        dest="precision",
        choices=list(PRECISIONS),
        default=env.get("KVSERVE_PRECISION", "fp32"),
        help="weights precision (default: %(default)s; --quantize int8 = --precision int8)",
    )
    p.add_argument(
        "--target",
        choices=list(TARGETS),
        default=env.get("KVSERVE_TARGET", "cpu"),
        help="device the artifact is built and validated for (default: %(default)s)",
    )
    p.add_argument(
        "--force",
        action="store_true",
        default=env.get("KVSERVE_FORCE", "").lower() in TRUE,
        help="replace OUT_DIR if it already exists",
    )
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    options = ExportOptions(args.checkpoint, args.out, args.precision, args.target, args.force)
    try:
        if problem := options.problem():  # env defaults bypass argparse's choices check
            raise ExportError(problem)
        from export.pipeline import run_export  # heavy (onnx, torch): after argument checks

        result = run_export(options)
    except ExportError as e:
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted, nothing written", file=sys.stderr)
        return 130
    sizes = ", ".join(f"{name} {_human(size)}" for name, size in result.sizes.items())
    print(f"wrote {result.out} in {result.seconds:.1f}s ({sizes})")
    return 0


def _human(size: int) -> str:
    value = float(size)
    for unit in ("B", "kB", "MB"):
        if value < 1000:
            return f"{size} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{value:.2f} GB"
