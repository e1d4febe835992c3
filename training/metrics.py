"""SQuAD-style answer scoring: exact match and token F1 after normalisation.

Normalisation as in the official SQuAD v1.1 script: lowercase, drop punctuation, drop the
articles a/an/the, collapse whitespace. Pure Python, so tests can check it with plain strings.
"""

from __future__ import annotations

import re
import string
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCTUATION = str.maketrans("", "", string.punctuation)


def normalize_answer(text: str) -> str:
    text = text.lower().translate(_PUNCTUATION)
    return " ".join(_ARTICLES.sub(" ", text).split())


def exact_match_score(prediction: str, reference: str) -> float:
    return float(normalize_answer(prediction) == normalize_answer(reference))


def f1_score(prediction: str, reference: str) -> float:
    """Harmonic mean of token precision and recall (bags of normalised words)."""
    pred, ref = normalize_answer(prediction).split(), normalize_answer(reference).split()
    if not pred or not ref:
        return float(pred == ref)  # both empty: 1; one empty: 0
    common = sum((Counter(pred) & Counter(ref)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(pred), common / len(ref)
    return 2 * precision * recall / (precision + recall)


@dataclass(frozen=True)
class AnswerScores:
    """Mean EM and F1 over a set of (prediction, reference) pairs."""

    count: int
    exact_match: float
    f1: float


def score_answers(predictions: Sequence[str], references: Sequence[str]) -> AnswerScores:
    pairs = list(zip(predictions, references, strict=True))
    if not pairs:
        return AnswerScores(count=0, exact_match=0.0, f1=0.0)
    em = sum(exact_match_score(p, r) for p, r in pairs) / len(pairs)
    f1 = sum(f1_score(p, r) for p, r in pairs) / len(pairs)
    return AnswerScores(count=len(pairs), exact_match=em, f1=f1)
