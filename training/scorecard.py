"""Score a checkpoint on QA data: EM and token F1 per split, perplexity, sample answers.

"seen" are the train rows (phrasings the model was trained on), "heldout" the heldout rows
(other phrasings of the same facts, never trained on), "validation" the rows set aside for
the confidence calibration (training/validation.py). With the checkpoint's calibration
(confidence.json) the report adds the held-out risk-coverage table and calibration error
(training/confidence.py). Written as kvserve_eval.json (and every prediction, with its
mean token logprob and confidence, as kvserve_eval_predictions.jsonl) in the checkpoint dir.
"""

from __future__ import annotations

import json
import random
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from transformers import PreTrainedModel, PreTrainedTokenizerBase

from artifact import PromptTemplate
from training.confidence import (
    Calibration,
    ConfidenceReport,
    confidence_report,
    format_report,
)
from training.confidence import (
    report_from_dict as confidence_from_dict,
)
from training.evaluate import ScoredAnswer, generate_scored_answers, perplexity
from training.examples import QAExample
from training.metrics import exact_match_score, f1_score, score_answers
from training.validation import VALIDATION

EVAL_FILE = "kvserve_eval.json"
PREDICTIONS_FILE = "kvserve_eval_predictions.jsonl"
SPLIT_NAMES = {"train": "seen", VALIDATION: "validation", "heldout": "heldout"}


@dataclass(frozen=True)
class SplitScores:
    split: str  # "seen" | "validation" | "heldout"
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
    mean_logprob: float | None = None  # of the answer's tokens (None: no tokens)
    min_logprob: float | None = None
    first_logprob: float | None = None
    confidence: float | None = None  # with the checkpoint's calibration


@dataclass
class EvalReport:
    checkpoint: str
    data: str
    max_new_tokens: int
    splits: dict[str, SplitScores]
    samples: list[Prediction]
    wall_time_s: float
    predictions: list[Prediction] = field(default_factory=list, repr=False)
    confidence: ConfidenceReport | None = None

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
    calibration: Calibration | None = None,
) -> EvalReport:
    """Generate every answer, score it, and measure perplexity, per split (train rows are
    "seen", validation rows "validation", heldout rows "heldout"); then the confidence view
    of the held-out answers (risk-coverage and, with a calibration, its error)."""
    start = time.perf_counter()
    splits: dict[str, SplitScores] = {}
    predictions: list[Prediction] = []
    for ours, name in SPLIT_NAMES.items():
        rows = [e for e in examples if e.split == ours]
        if not rows:
            continue
        answers = generate_scored_answers(
            model, tokenizer, template, rows, max_new_tokens, desc=f"answers {name}"
        )
        scores = score_answers([a.text for a in answers], [r.answer for r in rows])
        ppl = perplexity(model, tokenizer, template, rows)
        splits[name] = SplitScores(name, scores.count, scores.exact_match, scores.f1, ppl)
        predictions += [
            _prediction(name, r, a, calibration) for r, a in zip(rows, answers, strict=True)
        ]
    report = EvalReport(
        checkpoint=checkpoint,
        data=data,
        max_new_tokens=max_new_tokens,
        splits=splits,
        samples=_samples(predictions, samples),
        wall_time_s=0.0,
        predictions=predictions,
    )
    report.confidence = heldout_confidence(predictions, calibration)
    report.wall_time_s = round(time.perf_counter() - start, 2)
    return report


def heldout_confidence(
    predictions: list[Prediction], calibration: Calibration | None
) -> ConfidenceReport | None:
    """The confidence report of the held-out predictions; None without held-out rows."""
    heldout = [(p.mean_logprob, p.f1, p.exact_match) for p in predictions if p.split == "heldout"]
    if not heldout:
        return None
    seen = [p.mean_logprob for p in predictions if p.split == "seen"]
    return confidence_report(calibration, heldout, seen)


def with_confidence(report: EvalReport, calibration: Calibration) -> EvalReport:
    """The report with each prediction's confidence and the held-out confidence view under
    `calibration` (fitted after the answers were generated)."""

    def scored(p: Prediction) -> Prediction:
        return replace(p, confidence=_round(calibration.confidence(p.mean_logprob)))

    predictions = [scored(p) for p in report.predictions]
    return replace(
        report,
        predictions=predictions,
        samples=[scored(p) for p in report.samples],
        confidence=heldout_confidence(predictions, calibration),
    )


def write_report(report: EvalReport, directory: Path) -> Path:
    directory = Path(directory)
    lines = [json.dumps(asdict(p)) + "\n" for p in report.predictions]
    (directory / PREDICTIONS_FILE).write_text("".join(lines), encoding="utf-8")
    path = directory / EVAL_FILE
    path.write_text(json.dumps(report.to_dict(), indent=2) + "\n", encoding="utf-8")
    return path


def format_table(report: EvalReport) -> str:
    """The scores as a small table, the confidence view, then the sample answers (= exact,
    ~ not)."""
    lines = [f"{'split':<10} {'rows':>5} {'exact match':>12} {'token F1':>9} {'perplexity':>11}"]
    for s in report.splits.values():
        ppl = f"{s.perplexity:.3f}" if s.perplexity is not None else "-"
        lines.append(f"{s.split:<10} {s.count:>5} {s.exact_match:>12.1%} {s.f1:>9.3f} {ppl:>11}")
    if report.confidence is not None:
        lines += ["", format_report(report.confidence)]
    for p in report.samples:
        mark = "=" if p.exact_match else "~"
        sure = "" if p.confidence is None else f", confidence {p.confidence:.2f}"
        lines += [
            "",
            f"  Q ({p.split}): {p.question}",
            f"  A {mark} {p.prediction}   (F1 {p.f1:.2f}{sure})",
            f"  expected: {p.reference}",
        ]
    return "\n".join(lines)


def _prediction(
    split: str, row: QAExample, answer: ScoredAnswer, calibration: Calibration | None
) -> Prediction:
    logprobs = answer.token_logprobs
    return Prediction(
        split=split,
        question=row.question,
        reference=row.answer,
        prediction=answer.text,
        exact_match=exact_match_score(answer.text, row.answer),
        f1=round(f1_score(answer.text, row.answer), 4),
        mean_logprob=answer.mean_logprob,
        min_logprob=min(logprobs) if logprobs else None,
        first_logprob=logprobs[0] if logprobs else None,
        confidence=_round(calibration.confidence(answer.mean_logprob)) if calibration else None,
    )


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 6)


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
        confidence=confidence_from_dict(data["confidence"]) if data.get("confidence") else None,
    )
