"""An answer's confidence: the calibration training fits and the server evaluates.

The confidence is a calibrated probability that a greedy answer is right, from the answer's
mean token logprob `m` (log-softmax of the raw logits at each chosen token, the stop token not
counted) through a logistic curve (Platt scaling) on one of two features:

    feature "mean_logprob":          confidence = sigmoid(a * m + b)
    feature "log_neg_mean_logprob":  confidence = sigmoid(a * log(max(-m, EPS)) + b)

The second stretches the top of the range: on the bundled data right and wrong answers differ
within m = -0.01..0, which a curve straight in `m` cannot follow (docs/confidence.md). An
answer with no tokens (no mean) has confidence 0 whichever the feature.

Training fits `a`, `b`, picks the feature and the default hand-over `threshold` on a
validation part and writes them to the checkpoint's `confidence.json`
(training/confidence.py, docs/confidence.md); the exporter copies that into the manifest's
`confidence` field; the server judges each answer with `Calibration.confidence`. This module
is the ONE evaluator all of them call, so the number an app sees is the number training
measured. Artifacts written before the second feature carry "mean_logprob" and read as before.

Standard library only (the serving image has no numpy to spare for two parameters), and
hand-written because it is one formula: no calibration library is worth a dependency here.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

CONFIDENCE_FILE = "confidence.json"  # in the checkpoint dir, next to the model
KIND = "logistic"
MEAN_LOGPROB = "mean_logprob"
LOG_NEG_MEAN_LOGPROB = "log_neg_mean_logprob"
FEATURES = (MEAN_LOGPROB, LOG_NEG_MEAN_LOGPROB)
FEATURE = MEAN_LOGPROB  # the default: what artifacts from before the choice carry
# log(max(-m, EPS)): a mean logprob of exactly 0 (every token certain) stays finite. Far
# below what a real answer gives (the bundled models' surest answers: -m about 2e-4).
EPS = 1e-6
REQUIRED = ("kind", "feature", "a", "b", "threshold")


class CalibrationError(ValueError):
    """A calibration this code cannot evaluate; the message says what is wrong, on one line."""


def mean_logprob(token_logprobs: Sequence[float]) -> float | None:
    """The mean of an answer's token logprobs; None for an answer with no tokens."""
    return sum(token_logprobs) / len(token_logprobs) if token_logprobs else None


def check_feature(kind: str, feature: str) -> None:
    """CalibrationError (one line) unless this version evaluates `kind` on `feature`."""
    if kind != KIND or feature not in FEATURES:
        raise CalibrationError(
            f"unknown calibration kind {kind!r} / feature {feature!r} (this version evaluates "
            f"{KIND!r} on {' or '.join(repr(f) for f in FEATURES)})"
        )


def feature_value(feature: str, mean: float | None) -> float | None:
    """The curve's input for an answer whose mean token logprob is `mean`: `mean` itself, or
    log(max(-mean, EPS)). None when there is none (no tokens; NaN or infinite mean)."""
    if mean is None or not math.isfinite(mean):
        return None
    if feature == MEAN_LOGPROB:
        return mean
    if feature == LOG_NEG_MEAN_LOGPROB:
        return math.log(max(-mean, EPS))
    check_feature(KIND, feature)  # raises: the one message for every unknown feature
    raise AssertionError(feature)  # unreachable


def platt(x: float | None, a: float, b: float) -> float:
    """sigmoid(a * x + b): the curve. None, NaN or an infinite x (no tokens) gives 0.0."""
    if x is None or not math.isfinite(x):
        return 0.0
    z = a * x + b
    # the two branches keep exp() from overflowing for large |z|
    return 1.0 / (1.0 + math.exp(-z)) if z >= 0 else math.exp(z) / (1.0 + math.exp(z))


def calibrated(mean: float | None, feature: str, a: float, b: float) -> float:
    """P(right) of an answer whose mean token logprob is `mean`, under the curve (a, b) on
    `feature`: the formula every caller goes through. No tokens (None, NaN, -inf) gives 0.0."""
    return platt(feature_value(feature, mean), a, b)


@dataclass(frozen=True)
class Calibration:
    """The curve and the default threshold, as confidence.json and the manifest carry them.

    `extra` keeps the keys that document the fit (n, fitted_on, met_target,
    validation_coverage ...) as they came, so the manifest carries the whole record; the
    evaluator needs only the five named fields."""

    a: float
    b: float
    threshold: float  # the default: answers with a confidence below it are handed over
    kind: str = KIND
    feature: str = FEATURE
    extra: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        check_feature(self.kind, self.feature)  # built directly or read: never unevaluable

    def confidence(self, token_logprobs: Sequence[float]) -> float:
        """P(right) of an answer whose tokens (eos excluded) have these logprobs; 0.0 when
        it has no tokens."""
        return self.confidence_of_mean(mean_logprob(token_logprobs))

    def confidence_of_mean(self, mean: float | None) -> float:
        """P(right) from the answer's mean token logprob (what training stores per answer)."""
        return calibrated(mean, self.feature, self.a, self.b)

    def to_dict(self) -> dict[str, Any]:
        """confidence.json's shape: the documenting keys, then the five the server needs."""
        return {
            **self.extra,
            "kind": self.kind,
            "feature": self.feature,
            "a": self.a,
            "b": self.b,
            "threshold": self.threshold,
        }

    @classmethod
    def from_dict(cls, data: Any) -> Calibration:
        """Check and read a confidence.json dict; CalibrationError names the bad key."""
        if not isinstance(data, Mapping):
            raise CalibrationError(f"not a JSON object but {type(data).__name__}")
        missing = [k for k in REQUIRED if k not in data]
        if missing:
            raise CalibrationError(f"missing {', '.join(missing)}")
        check_feature(data["kind"], data["feature"])
        a, b, threshold = (_finite(data, k) for k in ("a", "b", "threshold"))
        if not 0.0 <= threshold <= 1.0:
            raise CalibrationError(f"threshold must be between 0 and 1, got {threshold}")
        extra = {k: v for k, v in data.items() if k not in REQUIRED}
        return cls(a=a, b=b, threshold=threshold, kind=KIND, feature=data["feature"], extra=extra)

    @classmethod
    def load(cls, directory: Path | str) -> Calibration | None:
        """The calibration in `directory`/confidence.json; None when there is no such file
        (a checkpoint trained without a validation part). CalibrationError names the file."""
        path = Path(directory) / CONFIDENCE_FILE
        if not path.is_file():
            return None
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise CalibrationError(f"{path}: unreadable ({_one_line(e)})") from None
        try:
            return cls.from_dict(data)
        except CalibrationError as e:
            raise CalibrationError(f"{path}: {e}") from None


def _finite(data: Mapping, key: str) -> float:
    value = data[key]
    # bool is an int to Python, but `"a": true` is a mistake, not a slope of 1
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise CalibrationError(f"{key} must be a finite number, got {value!r}")
    return float(value)


def _one_line(error: Exception) -> str:
    return " ".join(str(error).split())
