"""How sure an answer is: a calibrated probability from its token logprobs, and its measures.

The feature is the answer's mean token logprob: the mean, over the greedy answer's tokens
before the stop token (eos not counted), of log-softmax of the model's raw logits at the
chosen token. On the bundled data it ranks right and wrong answers best of the simple
features (min and first-token logprob rank less well; docs/confidence.md). The calibration
maps it to P(right) with a logistic curve (Platt scaling),

    confidence = 1 / (1 + exp(-(a * mean_logprob + b)))

where "right" means a token F1 of at least `right_f1` against the reference. It is fitted at
training time on the validation part (never on the held-out part), together with the
default threshold: below it the server hands the question over instead of answering.

Two numbers and a threshold, so the server evaluates the same function from the manifest
without numpy or this package: `confidence(mean_logprob, calibration_dict)` below is the
whole evaluator. Hand-written because the fit is one feature and two parameters (a few
Newton steps); scikit-learn would be a large dependency for it, and isotonic regression a
table for the server to carry. An answer with no tokens has no mean: its confidence is 0.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

CONFIDENCE_FILE = "confidence.json"  # in the checkpoint dir, next to the model
KIND = "logistic"
FEATURE = "mean_logprob"
RIGHT_F1 = 0.5  # an answer with token F1 >= this against the reference counts as right
TARGET_ANSWERED_F1 = 0.75  # the threshold aims at this mean F1 of the answered questions
MARGIN_SE = 1.0  # ... minus this many standard errors (see select_threshold)
FALLBACK_COVERAGE = 0.4  # when no threshold meets it: answer at least this share
ECE_BINS = 10
LADDER = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)  # thresholds the eval table lists
COVERAGE_LADDER = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)


class CalibrationError(ValueError):
    """A confidence.json that is not a calibration this code can evaluate."""


def confidence(mean_logprob: float | None, calibration: Mapping) -> float:
    """P(the answer is right) for an answer whose mean token logprob is `mean_logprob`.

    `calibration` is the dict of confidence.json (as the manifest carries it). None, NaN or
    -inf (an answer with no tokens) gives 0.0.
    """
    if mean_logprob is None or not math.isfinite(mean_logprob):
        return 0.0
    z = float(calibration["a"]) * mean_logprob + float(calibration["b"])
    # the two branches keep exp() from overflowing for large |z|
    return 1.0 / (1.0 + math.exp(-z)) if z >= 0 else math.exp(z) / (1.0 + math.exp(z))


def mean_logprob(token_logprobs: Sequence[float]) -> float | None:
    """The feature: mean of an answer's token logprobs; None for an answer with no tokens."""
    return sum(token_logprobs) / len(token_logprobs) if token_logprobs else None


@dataclass(frozen=True)
class ThresholdChoice:
    """The default threshold and what it gave on the validation part."""

    threshold: float
    met_target: bool  # False: no threshold reached the target; the best effort was kept
    coverage: float  # share of validation questions answered at the threshold
    answered_f1: float | None  # mean F1 of those answered (None: none answered)


@dataclass(frozen=True)
class Calibration:
    """What confidence.json holds; `to_dict()` is the dict the exporter copies."""

    a: float
    b: float
    threshold: float
    n: int  # validation answers fitted on
    right_f1: float = RIGHT_F1
    target_answered_f1: float = TARGET_ANSWERED_F1
    margin_se: float = MARGIN_SE
    met_target: bool = False
    validation_coverage: float = 0.0
    validation_answered_f1: float | None = None
    validation_ece: float | None = None
    kind: str = KIND
    feature: str = FEATURE
    fitted_on: str = "validation"

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping) -> Calibration:
        if data.get("kind") != KIND or data.get("feature") != FEATURE:
            raise CalibrationError(
                f"unknown calibration kind {data.get('kind')!r} / feature "
                f"{data.get('feature')!r} (expected {KIND!r} on {FEATURE!r})"
            )
        known = cls.__dataclass_fields__
        values = {k: v for k, v in data.items() if k in known}
        try:
            calibration = cls(**values)
        except TypeError as e:
            raise CalibrationError(f"bad calibration: {e}") from None
        for name in ("a", "b", "threshold"):
            if not isinstance(getattr(calibration, name), (int, float)) or not math.isfinite(
                getattr(calibration, name)
            ):
                raise CalibrationError(f"bad calibration: {name} must be a finite number")
        return calibration

    def confidence(self, mean_logprob: float | None) -> float:
        return confidence(mean_logprob, self.to_dict())

    def save(self, directory: Path | str) -> Path:
        path = Path(directory) / CONFIDENCE_FILE
        path.write_text(json.dumps(self.to_dict(), indent=2) + "\n", encoding="utf-8")
        return path

    @classmethod
    def load(cls, directory: Path | str) -> Calibration | None:
        """The checkpoint's calibration; None when it has none (no validation part)."""
        path = Path(directory) / CONFIDENCE_FILE
        if not path.is_file():
            return None
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise CalibrationError(f"{path}: unreadable ({e})") from None
        if not isinstance(data, dict):
            raise CalibrationError(f"{path}: not a JSON object")
        return cls.from_dict(data)


# --- fitting ------------------------------------------------------------------------------


def fit_logistic(
    x: Sequence[float], y: Sequence[float], l2: float = 1e-3, steps: int = 50
) -> tuple[float, float]:
    """(a, b) of P(y=1 | x) = sigmoid(a * x + b), by Newton's method on the log loss.

    y may be 0/1 or a fraction (soft labels). The small L2 penalty on the standardised slope
    keeps the fit finite when the classes separate, and with one class it gives a ~flat curve
    at that class's rate instead of diverging.
    """
    xs, ys = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)  # [N], [N]
    if xs.size == 0:
        raise ValueError("no points to fit")
    mu, sd = float(xs.mean()), float(xs.std()) or 1.0
    design = np.stack([(xs - mu) / sd, np.ones_like(xs)], axis=1)  # [N, 2]
    w = np.array([0.0, _logit(float(np.clip(ys.mean(), 1e-3, 1 - 1e-3)))])  # [slope, bias]
    penalty = np.diag([l2 * xs.size, 0.0])  # the bias is not shrunk
    for _ in range(steps):
        p = 1.0 / (1.0 + np.exp(-(design @ w)))  # [N]
        grad = design.T @ (p - ys) + penalty @ w
        hess = design.T @ (design * (p * (1 - p))[:, None]) + penalty + 1e-9 * np.eye(2)
        delta = np.linalg.solve(hess, grad)
        w = w - delta
        if float(np.abs(delta).max()) < 1e-10:
            break
    a = float(w[0] / sd)
    return a, float(w[1] - a * mu)


def platt_targets(right: Sequence[bool]) -> list[float]:
    """Platt's smoothed 0/1 targets: (N+ + 1) / (N+ + 2) for right answers, 1 / (N- + 2) for
    wrong ones. They keep the fit finite when every answer is right (or wrong) or the two
    separate, and matter little once there are tens of each."""
    n_right = sum(right)
    n_wrong = len(right) - n_right
    high, low = (n_right + 1) / (n_right + 2), 1 / (n_wrong + 2)
    return [high if r else low for r in right]


def fit_calibration(
    mean_logprobs: Sequence[float | None],
    f1s: Sequence[float],
    right_f1: float = RIGHT_F1,
    target_answered_f1: float = TARGET_ANSWERED_F1,
    margin_se: float = MARGIN_SE,
) -> Calibration:
    """Fit the curve on validation answers, then pick the default threshold on them too.

    "Right" is F1 >= right_f1; Platt's smoothed targets (platt_targets). Answers with no
    tokens take no part in the fit (their confidence is 0 whatever a, b).
    """
    pairs = [(m, f) for m, f in zip(mean_logprobs, f1s, strict=True) if _finite(m)]
    if not pairs:
        raise ValueError("no validation answer has a token to score")
    right = [f >= right_f1 for _, f in pairs]
    a, b = fit_logistic([m for m, _ in pairs], platt_targets(right))
    curve = {"a": a, "b": b}
    confidences = [confidence(m, curve) for m in mean_logprobs]
    choice = select_threshold(confidences, f1s, target_answered_f1, margin_se)
    outcomes = [float(f >= right_f1) for f in f1s]
    return Calibration(
        a=a,
        b=b,
        threshold=choice.threshold,
        n=len(f1s),
        right_f1=right_f1,
        target_answered_f1=target_answered_f1,
        margin_se=margin_se,
        met_target=choice.met_target,
        validation_coverage=round(choice.coverage, 4),
        validation_answered_f1=_round(choice.answered_f1),
        validation_ece=round(expected_calibration_error(confidences, outcomes), 4),
    )


def select_threshold(
    confidences: Sequence[float],
    f1s: Sequence[float],
    target_answered_f1: float = TARGET_ANSWERED_F1,
    margin_se: float = MARGIN_SE,
    fallback_coverage: float = FALLBACK_COVERAGE,
) -> ThresholdChoice:
    """The lowest threshold whose answered questions (confidence >= threshold) have a mean
    F1 of at least the target, less `margin_se` standard errors: the most answers that
    still meet it with that margin.

    The candidates are the answers' own confidences. The margin is there because the
    validation part is small (about a hundred answers: the standard error of a mean F1 over
    k of them is about 0.45 / sqrt(k), 0.06 at k = 50), and the lowest threshold that just
    reaches the target on it is the one most flattered by chance; the standard error uses
    the F1 spread of all validation answers. If none meets it, the best effort: the
    threshold with the highest answered F1 among those that answer at least
    `fallback_coverage` of the questions (the issue's coverage floor), so the server still
    answers its most confident share rather than handing every question over.
    """
    conf, f1 = np.asarray(confidences, dtype=np.float64), np.asarray(f1s, dtype=np.float64)
    if conf.size == 0:
        raise ValueError("no answers to choose a threshold on")
    order = np.argsort(-conf, kind="stable")  # most confident first
    conf, f1 = conf[order], f1[order]
    answered = np.arange(1, f1.size + 1)  # [N]: top-k answered
    answered_f1 = np.cumsum(f1) / answered  # [N]
    lower = answered_f1 - margin_se * float(f1.std()) / np.sqrt(answered)  # [N]
    # Only the last of a run of equal confidences is a real cut (ties answer together).
    cut = np.append(conf[1:] < conf[:-1], True)  # [N]
    meets = cut & (lower >= target_answered_f1 - 1e-12)
    if meets.any():
        k = int(np.flatnonzero(meets)[-1])  # the largest k = the lowest threshold
        met = True
    else:
        floor = max(1, math.ceil(fallback_coverage * conf.size))
        allowed = cut & (answered >= floor)
        k = int(np.flatnonzero(allowed)[np.argmax(answered_f1[allowed])])
        met = False
    return ThresholdChoice(float(conf[k]), met, (k + 1) / conf.size, float(answered_f1[k]))


# --- measuring ----------------------------------------------------------------------------


def expected_calibration_error(
    confidences: Sequence[float], outcomes: Sequence[float], bins: int = ECE_BINS
) -> float:
    """ECE: |mean confidence - mean outcome| per equal-width confidence bin, weighted by the
    bin's share of answers (bins: [0, 0.1), ..., [0.9, 1.0])."""
    conf, out = np.asarray(confidences, dtype=np.float64), np.asarray(outcomes, dtype=np.float64)
    if conf.size == 0:
        return 0.0
    index = np.minimum((conf * bins).astype(int), bins - 1)  # [N]
    total = 0.0
    for b in range(bins):
        mask = index == b
        if mask.any():
            total += mask.sum() * abs(float(conf[mask].mean()) - float(out[mask].mean()))
    return total / conf.size


@dataclass(frozen=True)
class RiskPoint:
    """One row of the risk-coverage table: answer when confidence >= threshold."""

    threshold: float
    coverage: float  # share of held-out questions answered
    answered: int
    answered_f1: float | None  # mean F1 of the answered ones (None: none answered)
    answered_exact_match: float | None
    seen_coverage: float | None  # share of seen (trained) questions answered


@dataclass(frozen=True)
class CoveragePoint:
    """Answer only the most confident `coverage` share: what F1 those answers have."""

    coverage: float
    answered: int
    answered_f1: float
    min_mean_logprob: float | None  # the least confident answer kept


@dataclass
class ConfidenceReport:
    """The held-out view of the confidence: risk-coverage table, ranking curve, ECE."""

    calibration: dict | None  # the checkpoint's confidence.json (None: it has none)
    table: list[RiskPoint] = field(default_factory=list)
    chosen: RiskPoint | None = None  # at the calibration's threshold
    by_coverage: list[CoveragePoint] = field(default_factory=list)  # needs no calibration
    ece_heldout: float | None = None
    mean_confidence_heldout: float | None = None
    right_rate_heldout: float | None = None  # share of held-out answers that are right


def risk_point(
    threshold: float,
    confidences: Sequence[float],
    f1s: Sequence[float],
    exact: Sequence[float],
    seen_confidences: Sequence[float] | None = None,
) -> RiskPoint:
    picked = [i for i, c in enumerate(confidences) if c >= threshold]
    n = len(confidences)
    seen = None
    if seen_confidences:
        seen = sum(c >= threshold for c in seen_confidences) / len(seen_confidences)
    return RiskPoint(
        threshold=threshold,
        coverage=round(len(picked) / n, 4) if n else 0.0,
        answered=len(picked),
        answered_f1=_round(sum(f1s[i] for i in picked) / len(picked)) if picked else None,
        answered_exact_match=_round(sum(exact[i] for i in picked) / len(picked))
        if picked
        else None,
        seen_coverage=_round(seen),
    )


def coverage_curve(
    mean_logprobs: Sequence[float | None], f1s: Sequence[float]
) -> list[CoveragePoint]:
    """Answered F1 when answering the top 10%, 20%, ... of questions by mean logprob."""
    ranked = sorted(
        zip(mean_logprobs, f1s, strict=True),
        key=lambda p: p[0] if _finite(p[0]) else -math.inf,
        reverse=True,
    )
    points = []
    for share in COVERAGE_LADDER:
        k = max(1, round(share * len(ranked)))
        top = ranked[:k]
        last = top[-1][0]
        points.append(
            CoveragePoint(
                coverage=share,
                answered=k,
                answered_f1=round(sum(f for _, f in top) / k, 4),
                min_mean_logprob=round(last, 4) if _finite(last) else None,
            )
        )
    return points if ranked else []


def confidence_report(
    calibration: Calibration | None,
    heldout: Sequence[tuple[float | None, float, float]],
    seen_mean_logprobs: Sequence[float | None] = (),
) -> ConfidenceReport:
    """The report on held-out answers, each (mean_logprob, f1, exact_match)."""
    logprobs = [m for m, _, _ in heldout]
    f1s = [f for _, f, _ in heldout]
    report = ConfidenceReport(
        calibration=calibration.to_dict() if calibration else None,
        by_coverage=coverage_curve(logprobs, f1s),
    )
    if calibration is None or not heldout:
        return report
    conf = [calibration.confidence(m) for m in logprobs]
    exact = [e for _, _, e in heldout]
    seen = [calibration.confidence(m) for m in seen_mean_logprobs]
    thresholds = sorted({*LADDER, calibration.threshold})
    report.table = [risk_point(t, conf, f1s, exact, seen) for t in thresholds]
    report.chosen = risk_point(calibration.threshold, conf, f1s, exact, seen)
    right = [float(f >= calibration.right_f1) for f in f1s]
    report.ece_heldout = round(expected_calibration_error(conf, right), 4)
    report.mean_confidence_heldout = round(sum(conf) / len(conf), 4)
    report.right_rate_heldout = round(sum(right) / len(right), 4)
    return report


def report_from_dict(data: Mapping) -> ConfidenceReport:
    chosen = data.get("chosen")
    return ConfidenceReport(
        calibration=data.get("calibration"),
        table=[RiskPoint(**p) for p in data.get("table", [])],
        chosen=RiskPoint(**chosen) if chosen else None,
        by_coverage=[CoveragePoint(**p) for p in data.get("by_coverage", [])],
        ece_heldout=data.get("ece_heldout"),
        mean_confidence_heldout=data.get("mean_confidence_heldout"),
        right_rate_heldout=data.get("right_rate_heldout"),
    )


def format_report(report: ConfidenceReport) -> str:
    """The risk-coverage table (chosen threshold marked *), then ECE and the ranking curve."""
    lines = []
    cal = report.calibration
    if cal is None:
        lines.append("confidence: no calibration in the checkpoint (trained without a validation")
        lines.append("part); ranking held-out answers by mean token logprob only:")
    else:
        met = "met" if cal.get("met_target") else "NOT met (best effort)"
        lines.append(
            f"confidence: P(F1 >= {cal['right_f1']}) = sigmoid({cal['a']:.3f} * mean_logprob "
            f"{cal['b']:+.3f}), fitted on {cal['n']} {cal['fitted_on']} answers"
        )
        lines.append(
            f"default threshold {cal['threshold']:.3f}: on validation it answers "
            f"{cal['validation_coverage']:.0%} with F1 {_num(cal['validation_answered_f1'])} "
            f"(target {cal['target_answered_f1']} less {cal.get('margin_se', 0)} standard "
            f"error: {met})"
        )
        lines.append("")
        lines.append(
            f"{'threshold':>10} {'held-out answered':>18} {'answered F1':>12} "
            f"{'answered EM':>12} {'seen answered':>14}"
        )
        chosen = report.chosen.threshold if report.chosen else None
        for p in report.table:
            mark = "*" if p.threshold == chosen else " "
            lines.append(
                f"{p.threshold:>9.3f}{mark} {_share(p.coverage, p.answered):>18} "
                f"{_num(p.answered_f1):>12} {_pct(p.answered_exact_match):>12} "
                f"{_pct(p.seen_coverage):>14}"
            )
        lines.append(
            f"held-out ECE ({ECE_BINS} bins) {report.ece_heldout:.3f}; mean confidence "
            f"{report.mean_confidence_heldout:.3f} vs share right {report.right_rate_heldout:.3f}"
        )
    if report.by_coverage:
        curve = ", ".join(f"{p.coverage:.0%} {p.answered_f1:.2f}" for p in report.by_coverage)
        lines.append(f"held-out F1 of the most confident share answered: {curve}")
    return "\n".join(lines)


def _share(coverage: float, count: int) -> str:
    return f"{coverage:.1%} ({count})"


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def _round(value: float | None, digits: int = 4) -> float | None:
    return None if value is None else round(value, digits)


def _finite(value: float | None) -> bool:
    return value is not None and math.isfinite(value)


def _logit(p: float) -> float:
    return math.log(p / (1 - p))
