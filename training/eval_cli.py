"""`kvserve-train eval CHECKPOINT --data FILE`: score a checkpoint on QA data.

Greedy answers with the checkpoint's own prompt template, SQuAD-style exact match and token
F1 for seen (split=train), validation and heldout phrasings, perplexity of the reference
answers; with the checkpoint's confidence calibration (confidence.json), the held-out
risk-coverage table (share answered vs F1 of those answered, per threshold), the seen
questions answered and the expected calibration error. The result goes to
CHECKPOINT/kvserve_eval.json (+ kvserve_eval_predictions.jsonl) and is printed as a table
with a few sample answers.

The train rows that training set aside as its validation part (kvserve_train.json's
validation_fraction; training/validation.py) are carved again the same way, so they count
as validation, not seen.
"""

from __future__ import annotations

import sys
from pathlib import Path

from envopts import Parser, option, positive
from training.config import EvalConfig

PROG = "kvserve-train eval"

EPILOG = """\
examples:
  kvserve-train eval runs/demo/checkpoint --data data/support_qa.jsonl
  kvserve-train eval runs/sq --data train-v2.0.json --eval-data dev-v2.0.json --samples 5

Bad input prints one line on stderr and exits with status 2.
"""


def build_parser() -> Parser:
    d = EvalConfig(checkpoint=Path(), data="")
    p = Parser(PROG, __doc__, epilog=EPILOG)
    p.add_argument("checkpoint", type=Path, metavar="CHECKPOINT", help="a kvserve-train output dir")
    option(
        p,
        "--data",
        None,
        "rows to score (same formats as training); split=train rows count as seen",
        metavar="FILE|DIR|HUB_ID",
        required=True,
    )
    option(
        p,
        "--eval-data",
        d.eval_data,
        "more heldout rows from another source (e.g. a SQuAD dev file)",
        metavar="FILE|DIR|HUB_ID",
    )
    option(
        p,
        "--max-new-tokens",
        d.max_new_tokens,
        "answer length limit in tokens",
        type=positive(int),
    )
    option(p, "--samples", d.samples, "sample answers to print per split", type=int)
    return p


def main(argv: list[str]) -> int:
    config = EvalConfig(**vars(build_parser().parse_args(argv)))
    from training.errors import InputError

    try:
        report = run(config)
    except InputError as e:
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return 2
    from training.scorecard import EVAL_FILE, format_table

    print(format_table(report))
    print(f"\nwritten: {config.checkpoint / EVAL_FILE}")
    return 0


def run(config: EvalConfig):
    from dataclasses import replace

    import torch

    from artifact import PromptTemplate
    from training.confidence import Calibration, CalibrationError
    from training.data import load_data
    from training.errors import InputError
    from training.model import load_pretrained
    from training.scorecard import evaluate_model, write_report
    from training.validation import carve_validation

    if not config.checkpoint.is_dir():
        from training.model import ModelLoadError

        raise ModelLoadError(f"{config.checkpoint}: not a directory")
    examples = load_data(config.data).examples
    carve = carve_validation(examples, _validation_fraction(config.checkpoint))
    examples = carve.train + carve.validation + [e for e in examples if e.split == "heldout"]
    try:
        calibration = Calibration.load(config.checkpoint)
    except CalibrationError as e:
        raise InputError(str(e)) from None
    if config.eval_data is not None:
        extra = load_data(config.eval_data, default_split="heldout").examples
        examples += [replace(e, split="heldout") for e in extra]
    bundle = load_pretrained(str(config.checkpoint))
    if torch.cuda.is_available():
        bundle.model.to("cuda")
    report = evaluate_model(
        bundle.model,
        bundle.tokenizer,
        PromptTemplate.load(config.checkpoint),
        examples,
        checkpoint=str(config.checkpoint),
        data=str(config.data),
        max_new_tokens=config.max_new_tokens,
        samples=config.samples,
        calibration=calibration,
    )
    write_report(report, config.checkpoint)
    return report


def _validation_fraction(checkpoint: Path) -> float:
    """The --validation the checkpoint was trained with (0 if it does not say)."""
    import json

    from training.train import REPORT_FILE

    try:
        report = json.loads((checkpoint / REPORT_FILE).read_text(encoding="utf-8"))
        return float(report.get("validation_fraction", 0.0))
    except (OSError, ValueError, TypeError, AttributeError):
        return 0.0
