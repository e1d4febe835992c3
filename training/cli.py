"""`kvserve-train`: fine-tune GPT-2 on question/answer pairs, or score a checkpoint.

    kvserve-train [train] --base ... --data ... --out ...   (train is the default command)
    kvserve-train eval CHECKPOINT --data ...                (see training/eval_cli.py)

Every option can also come from an environment variable KVSERVE_<OPTION> (dashes become
underscores, e.g. KVSERVE_PRESET=quality, KVSERVE_MAX_STEPS=100); a flag beats the variable.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from envopts import Parser, option, positive, switch
from training.config import TrainConfig
from training.presets import PRESETS

PROG = "kvserve-train"

DESCRIPTION = """\
Fine-tune GPT-2 on question/answer pairs: JSONL or CSV with columns question, answer and
optionally context, split=train|validation|heldout; SQuAD v1.1/v2.0 JSON; or a dataset dir /
hub id that `datasets.load_dataset` reads. Trains on the train rows with the Hugging Face
Trainer, evaluates on the validation rows each epoch (early stopping, best epoch kept; the
heldout rows when there is no validation part), fits the answer confidence and its hand-over
threshold on the validation rows (confidence.json), and writes an HF checkpoint dir for
`kvserve-export`, with kvserve_train.json, kvserve_train_log.jsonl, loss_curve.png and
(unless --no-exact-match) kvserve_eval.json. Without split=validation rows, --validation
sets one train phrasing of that share of the facts aside as the validation part.

To score a checkpoint: kvserve-train eval CHECKPOINT --data FILE (see its --help).
"""

EPILOG = """\
presets:
  test     a few steps on a very small model (seconds); for tests
  demo     ~2-3 minutes on a 2-core CPU with --base tiny (what `make demo` runs)
  quality  the answer-quality preset: ~15-25 minutes on a 2-core CPU with --base tiny

examples:
  kvserve-train --base tiny --data data/support_qa.jsonl --out runs/demo
  kvserve-train --base gpt2 --data qa.csv --out runs/gpt2 --preset quality --epochs 5
  kvserve-train --base gpt2 --data train-v2.0.json --eval-data dev-v2.0.json --out runs/sq
  kvserve-train --data data/support_qa.jsonl --out runs/demo --resume   # after a SIGTERM
  torchrun --nproc-per-node 4 -m training --base gpt2 --data qa.jsonl --out runs/ddp
  kvserve-train eval runs/demo --data data/support_qa.jsonl

SIGTERM saves a checkpoint at the end of the current step and exits with status 143;
the same command with --resume continues from it. Bad input prints one line on stderr and
exits with status 2. Every option also reads KVSERVE_<OPTION> (e.g. KVSERVE_PRESET).
"""

INTERRUPTED_EXIT = 143  # 128 + SIGTERM, what a shell reports for a terminated process


def build_parser() -> Parser:
    d = TrainConfig(data="", out=Path())
    p = Parser(PROG, DESCRIPTION, epilog=EPILOG)
    option(
        p,
        "--base",
        d.base,
        "'tiny': a small GPT-2 + BPE tokenizer built from scratch on the data; else a local "
        "checkpoint dir or hub id for from_pretrained",
        metavar="tiny|PATH_OR_ID",
    )
    option(
        p,
        "--data",
        None,
        "question/answer pairs: .jsonl, .csv, SQuAD .json, a dataset dir or hub id",
        metavar="FILE|DIR|HUB_ID",
        required=True,
    )
    option(
        p,
        "--eval-data",
        d.eval_data,
        "more heldout rows from another source (e.g. a SQuAD dev file): every row counts as "
        "heldout",
        metavar="FILE|DIR|HUB_ID",
    )
    option(
        p,
        "--out",
        None,
        "checkpoint dir to write (created if missing)",
        type=Path,
        metavar="DIR",
        required=True,
    )
    option(p, "--preset", d.preset, "training recipe", choices=list(PRESETS))
    option(
        p,
        "--validation",
        d.validation,
        "without split=validation rows: the share of the facts (rows, with no repeated "
        "facts) that give one train phrasing to the validation part, which fits the answer "
        "confidence (0.5 is a fair start; it costs the bundled data's held-out F1, see "
        "docs/confidence.md); 0 = none (no confidence.json)",
        type=fraction,
        metavar="FRACTION",
    )
    for name, kind, what in (
        ("epochs", float, "number of epochs"),
        ("max-steps", int, "stop after N optimizer steps (beats --epochs)"),
        ("learning-rate", float, "peak learning rate"),
        ("batch-size", int, "per-device batch size"),
        ("grad-accum", int, "batches per optimizer step (gradient accumulation)"),
    ):
        option(p, f"--{name}", None, f"override the preset's {what}", type=positive(kind))
    option(
        p,
        "--seed",
        d.seed,
        "random seed for init, augmentation, shuffling and dropout",
        type=int,
    )
    switch(
        p,
        "--resume",
        d.resume,
        "continue from the newest checkpoint in DIR/checkpoints/ (after a SIGTERM or crash)",
    )
    switch(
        p,
        "--exact-match",
        d.exact_match,
        "after training, generate every answer and record exact match, token F1 and "
        "perplexity in DIR/kvserve_eval.json (unset: the preset decides)",
    )
    switch(
        p,
        "--keep-checkpoints",
        d.keep_checkpoints,
        "keep the Trainer's checkpoints (best and latest) in DIR/checkpoints/",
    )
    return p


def fraction(text: str) -> float:
    """An argparse `type`: a number in [0, 1]."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0 <= value <= 1:  # also catches NaN
        raise argparse.ArgumentTypeError(f"must be between 0 and 1, got {text}")
    return value


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["eval"]:
        from training.eval_cli import main as eval_main

        return eval_main(argv[1:])
    if argv[:1] == ["train"]:
        argv = argv[1:]
    return train_main(argv)


def train_main(argv: list[str]) -> int:
    config = TrainConfig(**vars(build_parser().parse_args(argv)))
    # Heavy imports after parsing: --help and usage errors stay instant.
    from training.distributed import end_process_group
    from training.errors import InputError
    from training.train import REPORT_FILE, TrainingInterrupted, train

    try:
        out = train(config)
    except InputError as e:
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return 2
    except TrainingInterrupted as e:
        print(f"{PROG}: {e}", file=sys.stderr)
        return INTERRUPTED_EXIT
    finally:
        end_process_group()
    if (out / REPORT_FILE).exists():  # only the main process writes it
        report = json.loads((out / REPORT_FILE).read_text())
        print(summary(report))
        _print_eval_table(out)
        print(f"checkpoint: {out}  (details in {out / REPORT_FILE})")
    return 0


def summary(report: dict) -> str:
    """One line for the terminal: steps, time, losses and answer scores when measured."""
    parts = [f"{report['steps']} steps in {report['wall_time_s']:.0f}s"]
    for key, label in (("final_train_loss", "train loss"), ("final_eval_loss", "eval loss")):
        if report.get(key) is not None:
            parts.append(f"{label} {report[key]:.4f}")
    if report.get("best_step") is not None:
        parts.append(f"kept step {report['best_step']}")
    for key, label in (("exact_match_train", "seen"), ("exact_match_heldout", "heldout")):
        if report.get(key) is not None:
            parts.append(f"exact match {label} {report[key]:.1%}")
    if report.get("f1_heldout") is not None:
        parts.append(f"F1 heldout {report['f1_heldout']:.3f}")
    return "trained: " + ", ".join(parts)


def _print_eval_table(out: Path) -> None:
    from training.scorecard import EVAL_FILE, format_table, report_from_dict

    if (out / EVAL_FILE).exists():
        print(format_table(report_from_dict(json.loads((out / EVAL_FILE).read_text()))))


if __name__ == "__main__":
    sys.exit(main())
