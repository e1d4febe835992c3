"""`kvserve-train`: fine-tune GPT-2 on question/answer pairs into an HF checkpoint dir.

Every option can also come from an environment variable KVSERVE_<OPTION> (dashes become
underscores, e.g. KVSERVE_PRESET=quality, KVSERVE_MAX_STEPS=100); a flag beats the variable.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from training.presets import PRESETS

DESCRIPTION = """\
Fine-tune GPT-2 on question/answer pairs (JSONL or CSV with columns question, answer and
optionally context, split=train|heldout). Trains on the train rows with the Hugging Face
Trainer, evaluates on the heldout rows each epoch, and writes an HF checkpoint dir (model,
tokenizer.json, kvserve_prompt.json, kvserve_train.json) for `kvserve-export`.
"""

EPILOG = """\
presets:
  test     a few steps on a very small model (seconds); for tests
  demo     ~2 minutes on a 2-core CPU with --base tiny; memorises the train questions
  quality  longer and larger; use a GPU

examples:
  kvserve-train --base tiny --data data/support_qa.jsonl --out runs/demo
  kvserve-train --base gpt2 --data qa.csv --out runs/gpt2 --preset quality --epochs 5
  torchrun --nproc-per-node 4 -m training --base gpt2 --data qa.jsonl --out runs/ddp

Every option also reads KVSERVE_<OPTION> from the environment (e.g. KVSERVE_PRESET).
Bad input prints one line on stderr and exits with status 2.
"""


def _env(option: str, default: str | None = None) -> str | None:
    return os.environ.get("KVSERVE_" + option.upper().replace("-", "_"), default)


def _positive(kind: type):
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
        if value <= 0:
            raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
        return value

    return parse


def _flag(text: str | None) -> bool | None:
    """Boolean env var: 1/true/yes/on or 0/false/no/off; unset -> None (the preset decides)."""
    if text is None or text == "":
        return None
    if text.lower() in ("1", "true", "yes", "on"):
        return True
    if text.lower() in ("0", "false", "no", "off"):
        return False
    print(f"kvserve-train: error: not a boolean: {text!r} (use 1/0, true/false)", file=sys.stderr)
    raise SystemExit(2)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="kvserve-train",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    # argparse applies `type` to string defaults too, so env values are checked like flags.
    p.add_argument(
        "--base",
        default=_env("base", "tiny"),
        metavar="tiny|PATH_OR_ID",
        help="'tiny': a small GPT-2 + BPE tokenizer built from scratch on the data; "
        "else a local checkpoint dir or hub id for from_pretrained "
        "(default: %(default)s)",
    )
    p.add_argument(
        "--data",
        type=Path,
        default=_env("data"),
        required=_env("data") is None,
        metavar="FILE",
        help="question/answer pairs, .jsonl or .csv",
    )
    p.add_argument(
        "--out",
        type=Path,
        default=_env("out"),
        required=_env("out") is None,
        metavar="DIR",
        help="checkpoint dir to write (created if missing)",
    )
    p.add_argument(
        "--preset",
        default=_env("preset", "demo"),
        choices=list(PRESETS),
        help="training recipe (default: %(default)s)",
    )
    p.add_argument(
        "--epochs",
        type=_positive(float),
        default=_env("epochs"),
        help="override the preset's number of epochs",
    )
    p.add_argument(
        "--max-steps",
        type=_positive(int),
        default=_env("max-steps"),
        help="stop after N optimizer steps (beats --epochs)",
    )
    p.add_argument(
        "--learning-rate",
        type=_positive(float),
        default=_env("learning-rate"),
        help="override the preset's peak learning rate",
    )
    p.add_argument(
        "--batch-size",
        type=_positive(int),
        default=_env("batch-size"),
        help="override the preset's per-device batch size",
    )
    p.add_argument(
        "--seed",
        type=int,
        default=_env("seed", "42"),
        help="random seed for init, shuffling and dropout (default: %(default)s)",
    )
    em = p.add_mutually_exclusive_group()
    em.add_argument(
        "--exact-match",
        dest="exact_match",
        action="store_true",
        default=_flag(_env("exact-match")),
        help="after training, greedy-decode every question and record the "
        "exact-match fraction (default: the preset's choice)",
    )
    em.add_argument(
        "--no-exact-match", dest="exact_match", action="store_false", help="skip that check"
    )
    p.add_argument(
        "--keep-checkpoints",
        action="store_true",
        default=bool(_flag(_env("keep-checkpoints"))),
        help="keep the Trainer's per-epoch checkpoints in DIR/checkpoints/",
    )
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # Heavy imports after parsing: --help and usage errors stay instant.
    from training.errors import InputError
    from training.train import REPORT_FILE, TrainConfig, train

    config = TrainConfig(
        data=args.data,
        out=args.out,
        base=args.base,
        preset=args.preset,
        epochs=args.epochs,
        max_steps=args.max_steps,
        learning_rate=args.learning_rate,
        batch_size=args.batch_size,
        seed=args.seed,
        exact_match=args.exact_match,
        keep_checkpoints=args.keep_checkpoints,
    )
    try:
        out = train(config)
    except InputError as e:
        print(f"kvserve-train: error: {e}", file=sys.stderr)
        return 2
    if (out / REPORT_FILE).exists():  # only the main process writes it
        print(summary(json.loads((out / REPORT_FILE).read_text())))
        print(f"checkpoint: {out}  (details in {out / REPORT_FILE})")
    return 0


def summary(report: dict) -> str:
    """One line for the terminal: steps, time, losses and exact match when measured."""
    parts = [f"{report['steps']} steps in {report['wall_time_s']:.0f}s"]
    for key, label in (("final_train_loss", "train loss"), ("final_eval_loss", "eval loss")):
        if report.get(key) is not None:
            parts.append(f"{label} {report[key]:.4f}")
    for key, label in (("exact_match_train", "train"), ("exact_match_heldout", "heldout")):
        if report.get(key) is not None:
            parts.append(f"exact match {label} {report[key]:.1%}")
    return "trained: " + ", ".join(parts)


if __name__ == "__main__":
    sys.exit(main())
