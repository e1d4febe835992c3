"""`kvserve-train eval CHECKPOINT --data FILE`: score a checkpoint on QA data.

Greedy answers with the checkpoint's own prompt template, SQuAD-style exact match and token
F1 for seen (split=train) and heldout phrasings, perplexity of the reference answers; the
result goes to CHECKPOINT/kvserve_eval.json (+ kvserve_eval_predictions.jsonl) and is printed
as a table with a few sample answers.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from training.options import data_option, env, positive

EPILOG = """\
examples:
  kvserve-train eval runs/demo/checkpoint --data data/support_qa.jsonl
  kvserve-train eval runs/sq --data train-v2.0.json --eval-data dev-v2.0.json --samples 5

Bad input prints one line on stderr and exits with status 2.
"""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="kvserve-train eval",
        description=__doc__,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("checkpoint", type=Path, metavar="CHECKPOINT", help="a kvserve-train output dir")
    data_option(p, "rows to score (same formats as training); split=train rows count as seen")
    p.add_argument(
        "--max-new-tokens",
        type=positive(int),
        default=env("max-new-tokens", "48"),
        help="answer length limit in tokens (default: %(default)s)",
    )
    p.add_argument(
        "--samples",
        type=int,
        default=env("samples", "3"),
        help="sample answers to print per split (default: %(default)s)",
    )
    return p


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    from training.errors import InputError

    try:
        report = run(args)
    except InputError as e:
        print(f"kvserve-train eval: error: {e}", file=sys.stderr)
        return 2
    from training.scorecard import EVAL_FILE, format_table

    print(format_table(report))
    print(f"\nwritten: {args.checkpoint / EVAL_FILE}")
    return 0


def run(args: argparse.Namespace):
    from dataclasses import replace

    import torch

    from artifact import PromptTemplate
    from training.data import load_data
    from training.model import load_pretrained
    from training.scorecard import evaluate_model, write_report

    if not args.checkpoint.is_dir():
        from training.model import ModelLoadError

        raise ModelLoadError(f"{args.checkpoint}: not a directory")
    examples = load_data(args.data).examples
    if args.eval_data is not None:
        extra = load_data(args.eval_data, default_split="heldout").examples
        examples += [replace(e, split="heldout") for e in extra]
    bundle = load_pretrained(str(args.checkpoint))
    if torch.cuda.is_available():
        bundle.model.to("cuda")
    report = evaluate_model(
        bundle.model,
        bundle.tokenizer,
        PromptTemplate.load(args.checkpoint),
        examples,
        checkpoint=str(args.checkpoint),
        data=str(args.data),
        max_new_tokens=args.max_new_tokens,
        samples=args.samples,
    )
    write_report(report, args.checkpoint)
    return report
