"""Score a checkpoint on QA data: EM and token F1 per split, perplexity, sample answers.

"seen" are the train rows (phrasings the model was trained on), "heldout" the heldout rows
(other phrasings of the same facts, never trained on). Written as kvserve_eval.json (and
every prediction as kvserve_eval_predictions.jsonl) in the checkpoint dir.
"""

from __future__ import annotations

import json
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from transformers import PreTrainedModel, PreTrainedTokenizerBase

from artifact import PromptTemplate
from training.evaluate import generate_answers, perplexity
from training.examples import QAExample, split_examples
from training.metrics import exact_match_score, f1_score, score_answers

EVAL_FILE = "kvserve_eval.json"
PREDICTIONS_FILE = "kvserve_eval_predictions.jsonl"
SPLIT_NAMES = {"train": "seen", "heldout": "heldout"}


@dataclass(frozen=True)
class SplitScores:
    split: str  # "seen" | "heldout"
    count: int
    exact_match: float
    f1: float
    perplexity: float | None


@dataclass(frozen=True)
class Prediction:
    split: str
    question: str
    reference: str
    prediction: str
    exact_match: float
    f1: float


@dataclass
class EvalReport:
    checkpoint: str
    data: str
    max_new_tokens: int
    splits: dict[str, SplitScores]
    samples: list[Prediction]
    wall_time_s: float
    predictions: list[Prediction] = field(default_factory=list, repr=False)

    def to_dict(self) -> dict:
        data = asdict(self)
        del data["predictions"]  # they go to their own file
        return data


def evaluate_model(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    template: PromptTemplate,
    examples: list[QAExample],
    checkpoint: str = "",
    data: str = "",
    max_new_tokens: int = 48,
    samples: int = 3,
) -> EvalReport:
    """Generate every answer, score it, and measure perplexity, per split."""
    start = time.perf_counter()
    splits: dict[str, SplitScores] = {}
    predictions: list[Prediction] = []
    for ours, rows in zip(("train", "heldout"), split_examples(examples), strict=True):
        if not rows:
            continue
        name = SPLIT_NAMES[ours]
        answers = generate_answers(
            model, tokenizer, template, rows, max_new_tokens, desc=f"answers {name}"
        )
        scores = score_answers(answers, [r.answer for r in rows])
        ppl = perplexity(model, tokenizer, template, rows)
        splits[name] = SplitScores(name, scores.count, scores.exact_match, scores.f1, ppl)
        predictions += [_prediction(name, r, a) for r, a in zip(rows, answers, strict=True)]
    return EvalReport(
        checkpoint=checkpoint,
        data=data,
        max_new_tokens=max_new_tokens,
        splits=splits,
        samples=_samples(predictions, samples),
        wall_time_s=round(time.perf_counter() - start, 2),
        predictions=predictions,
    )


def write_report(report: EvalReport, directory: Path) -> Path:
    directory = Path(directory)
    lines = [json.dumps(asdict(p)) + "\n" for p in report.predictions]
    (directory / PREDICTIONS_FILE).write_text("".join(lines), encoding="utf-8")
    path = directory / EVAL_FILE
    path.write_text(json.dumps(report.to_dict(), indent=2) + "\n", encoding="utf-8")
    return path


def format_table(report: EvalReport) -> str:
    """The scores as a small table, then the sample answers (= exact, ~ not)."""
    lines = [f"{'split':<8} {'rows':>5} {'exact match':>12} {'token F1':>9} {'perplexity':>11}"]
    for s in report.splits.values():
        ppl = f"{s.perplexity:.3f}" if s.perplexity is not None else "-"
        lines.append(f"{s.split:<8} {s.count:>5} {s.exact_match:>12.1%} {s.f1:>9.3f} {ppl:>11}")
    for p in report.samples:
        mark = "=" if p.exact_match else "~"
        lines += [
            "",
            f"  Q ({p.split}): {p.question}",
            f"  A {mark} {p.prediction}   (F1 {p.f1:.2f})",
            f"  expected: {p.reference}",
        ]
    return "\n".join(lines)


def _prediction(split: str, row: QAExample, answer: str) -> Prediction:
    return Prediction(
        split=split,
        question=row.question,
        reference=row.answer,
        prediction=answer,
        exact_match=exact_match_score(answer, row.answer),
        f1=round(f1_score(answer, row.answer), 4),
    )


def _samples(predictions: list[Prediction], per_split: int) -> list[Prediction]:
    """A few predictions of each split, the same ones every time (fixed seed)."""
    rng = random.Random(0)
    picked: list[Prediction] = []
    for name in SPLIT_NAMES.values():
        rows = [p for p in predictions if p.split == name]
        picked += rng.sample(rows, max(0, min(per_split, len(rows))))
    return picked


def report_from_dict(data: dict) -> EvalReport:
    """An EvalReport read back from kvserve_eval.json (without the predictions)."""
    return EvalReport(
        checkpoint=data["checkpoint"],
        data=data["data"],
        max_new_tokens=data["max_new_tokens"],
        splits={k: SplitScores(**v) for k, v in data["splits"].items()},
        samples=[Prediction(**p) for p in data["samples"]],
        wall_time_s=data["wall_time_s"],
    )
