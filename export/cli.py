"""`kvserve-export CHECKPOINT_DIR OUT_DIR` (and `kvserve-export bench ARTIFACT`).

Every option defaults from an environment variable KVSERVE_<OPTION>. Bad input ends with one
line on stderr and exit code 2; an export that fails its checks exits 1; never a traceback.
"""

from __future__ import annotations

import argparse
import sys
import textwrap
from collections.abc import Sequence
from pathlib import Path

from envopts import Parser, option, switch
from export import ExportError
from export.config import ATTENTION_CHOICES, KV_CACHES, ExportOptions, GateOptions
from export.gate import DEFAULTS
from export.recipes import DEFAULT_ATTENTION, PRECISIONS, TARGETS, targets_of

PROG = "kvserve-export"

DESCRIPTION = """\
Turn a GPT-2 checkpoint dir (from kvserve-train or any HF GPT-2 save_pretrained: config.json,
model.safetensors, tokenizer.json, kvserve_prompt.json) into a model artifact dir for
kvserve-serve: model.onnx (one decoder graph: fused attention over an in-place KV cache,
logits at the last position only, the token table stored once), tokenizer.json and
manifest.json (architecture, graph names, quantization, quality report, file hashes).
With --attention kernel the graph is cut at each attention instead: dense_00.onnx ...
dense_NN.onnx (the dense math; the server runs attention in its own kernel).

Before anything is written, a quality gate runs the graph against PyTorch fp32 on the
held-out questions of --data: max logit difference, next-token agreement, perplexity and
the greedy answers. OUT_DIR appears only when every threshold holds.

`kvserve-export bench ARTIFACT [ARTIFACT ...]` times prefill and decode (see its --help)."""

GATE_FLAGS = {  # flag -> (Thresholds field, help)
    "--max-logit-diff": ("max_logit_diff", "largest |logit difference| allowed"),
    "--min-token-agreement": ("min_token_agreement", "least next-token argmax agreement"),
    "--max-ppl-delta": ("max_ppl_delta", "largest relative perplexity change (0.03 = 3%%)"),
    "--min-answer-match": ("min_answer_match", "least fraction of identical greedy answers"),
}


def _epilog() -> str:
    lines = ["precisions and the targets they are built for (--precision P --target T):"]
    for name, desc in PRECISIONS.items():
        text = f"{name:<5} [{', '.join(targets_of(name))}] {desc}"
        lines += textwrap.wrap(text, width=92, initial_indent="  ", subsequent_indent="        ")
    lines += ["", "quality gate defaults (logit diff, token agreement, ppl delta, answers):"]
    for name, t in DEFAULTS.items():
        diff = "recorded" if t.max_logit_diff is None else f"<= {t.max_logit_diff:g}"
        lines.append(
            f"  {name:<5} {diff}, >= {t.min_token_agreement:g}, within {t.max_ppl_delta:.1%}, "
            f">= {t.min_answer_match:g}"
        )
    lines += [
        "",
        "environment: KVSERVE_<OPTION> sets each option's default (KVSERVE_PRECISION, "
        "KVSERVE_TARGET,",
        "  KVSERVE_FORCE, KVSERVE_DATA, KVSERVE_GATE_SAMPLES, KVSERVE_MAX_PPL_DELTA, ...).",
        "exit codes: 0 ok, 1 export failed or the quality gate refused it, 2 bad input.",
    ]
    return "\n".join(lines)


def build_parser() -> Parser:
    d = ExportOptions(Path(), Path())
    p = Parser(PROG, DESCRIPTION, epilog=_epilog())
    p.add_argument(
        "checkpoint", metavar="CHECKPOINT_DIR", type=Path, help="HF GPT-2 checkpoint dir"
    )
    p.add_argument("out", metavar="OUT_DIR", type=Path, help="artifact dir to create")
    option(
        p,
        "--precision",
        d.precision,
        "weights precision (--quantize = --precision)",
        aliases=["--quantize"],
        choices=list(PRECISIONS),
    )
    option(p, "--target", d.target, "device the artifact is built for", choices=list(TARGETS))
    option(
        p,
        "--kv-cache",
        d.kv_cache,
        "KV cache element type (auto = the graph's float type). int8 (cpu): the graph "
        "quantizes it per channel, scales calibrated on --data's training rows; decode "
        "attention reads 1/4 of the bytes (batch 32: steps ~20%% shorter, 4x the sequences "
        "per GB) but prompts prefill ~20%% slower: for throughput under load",
        choices=list(KV_CACHES),
    )
    option(
        p,
        "--attention",
        d.attention,
        "where attention runs. fused: one graph with ONNX Runtime's GroupQueryAttention "
        "(model.onnx; every target). kernel (cpu): the dense math only, cut at each "
        "attention into num_layers + 1 pieces (dense_NN.onnx) that the server calls around "
        "kvserve's own attention kernel over a paged KV cache. auto: "
        + ", ".join(f"{kind} on {target}" for target, kind in DEFAULT_ATTENTION.items()),
        choices=list(ATTENTION_CHOICES),
    )
    switch(p, "--force", d.force, "replace OUT_DIR if it already exists")
    _gate_options(p.add_argument_group("quality gate"), d.gate)
    return p


def _gate_options(g: argparse._ArgumentGroup, d: GateOptions) -> None:
    option(
        g,
        "--data",
        d.data,
        "QA data whose split=heldout rows the gate scores",
        type=Path,
    )
    option(
        g,
        "--gate-samples",
        d.samples,
        "held-out questions to score, spread over the file (0 = all)",
        type=int,
    )
    option(g, "--gate-max-new-tokens", d.max_new_tokens, "longest greedy answer compared", type=int)
    for flag, (_, text) in GATE_FLAGS.items():
        option(g, flag, None, f"{text}; default: per precision, below", type=float)


def options_from(args: argparse.Namespace) -> ExportOptions:
    overrides = {
        field: getattr(args, flag[2:].replace("-", "_")) for flag, (field, _) in GATE_FLAGS.items()
    }
    gate = GateOptions(args.data, args.gate_samples, args.gate_max_new_tokens, overrides)
    return ExportOptions(
        args.checkpoint,
        args.out,
        args.precision,
        args.target,
        args.force,
        gate,
        args.kv_cache,
        args.attention,
    )


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["bench"]:
        from export.bench_cli import main as bench_main

        return bench_main(argv[1:])
    args = build_parser().parse_args(argv)
    options = options_from(args)
    try:
        if problem := options.problem():
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
