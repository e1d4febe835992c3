"""How sure an answer is: a calibrated probability from its token logprobs, and its measures.

The input is the answer's mean token logprob `m`: the mean, over the greedy answer's tokens
before the stop token (eos not counted), of log-softmax of the model's raw logits at the
chosen token. On the bundled data it ranks right and wrong answers as well as any simple
feature tried (min and first-token logprob, step entropy, top-2 margin, 2-feature
combinations: docs/confidence.md). The calibration maps it to P(right) with a logistic curve
(Platt scaling) on one of two features,

    "mean_logprob":          confidence = sigmoid(a * m + b)
    "log_neg_mean_logprob":  confidence = sigmoid(a * log(max(-m, 1e-6)) + b)

where "right" means a token F1 of at least `right_f1` against the reference. Everything is
fitted at training time on the validation part (never on the held-out part): the feature
(the one with the lower k-fold cross-validated log loss on the validation answers,
`choose_feature`), the curve, and the default threshold (below it the server hands the
question over): the validation F1 rule (`select_threshold`), capped so that at least 95% of
the seen (train) questions are still answered when their answers were scored
(`cap_for_seen`).

Two numbers, a feature name and a threshold, so the server evaluates the same function from
the manifest without numpy or this package: the formula lives in artifact/confidence.py
(`calibrated`), the one evaluator training, the exporter and the server share; this module
fits its inputs and measures its outputs. Hand-written because the fit is one feature and
two parameters (a few Newton steps); scikit-learn would be a large dependency for it, and
isotonic regression a table for the server to carry. An answer with no tokens has no mean:
its confidence is 0.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np

from artifact.confidence import (
    CONFIDENCE_FILE,  # in the checkpoint dir, next to the model
    EPS,
    FEATURE,
    FEATURES,
    KIND,
    LOG_NEG_MEAN_LOGPROB,
    MEAN_LOGPROB,
    CalibrationError,
    calibrated,
    feature_value,
    mean_logprob,  # noqa: F401 (training.evaluate imports it from here)
)
from artifact.confidence import Calibration as ServedCalibration

RIGHT_F1 = 0.5  # an answer with token F1 >= this against the reference counts as right
TARGET_ANSWERED_F1 = 0.75  # the threshold aims at this mean F1 of the answered questions
MARGIN_SE = 1.0  # ... minus this many standard errors (see select_threshold)
FALLBACK_COVERAGE = 0.4  # when no threshold meets it: answer at least this share
SEEN_COVERAGE = 0.95  # ... and never hand over more than 5% of the seen (train) questions
FEATURE_FOLDS = 5  # k of the k-fold log loss that picks the feature
ECE_BINS = 10
LADDER = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)  # thresholds the eval table lists
COVERAGE_LADDER = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)

# threshold_rule in confidence.json: which rule set the default threshold
RULE_TARGET = "validation_target"  # the validation F1 rule met its target
RULE_BEST_EFFORT = "validation_best_effort"  # it did not: best answered F1 at >= 40%
RULE_SEEN_CAP = "seen_coverage_cap"  # lowered so that >= 95% of seen questions are answered


def confidence(mean: float | None, calibration: Mapping) -> float:
    """P(the answer is right) for an answer whose mean token logprob is `mean`.

    `calibration` is the dict of confidence.json (as the manifest carries it); without a
    `feature` key it is "mean_logprob" (files from before the choice). None, NaN or -inf (an
    answer with no tokens) gives 0.0. The formula is artifact.confidence.calibrated, the
    server's.
    """
    feature = calibration.get("feature", FEATURE)
    return calibrated(mean, feature, float(calibration["a"]), float(calibration["b"]))


@dataclass(frozen=True)
class ThresholdChoice:
    """The default threshold and what it gave on the validation part."""

    threshold: float
    met_target: bool  # False: no threshold reached the target; the best effort was kept
    coverage: float  # share of validation questions answered at the threshold
    answered_f1: float | None  # mean F1 of those answered (None: none answered)


@dataclass(frozen=True)
class Calibration:
    """What confidence.json holds, with the fit's record; `to_dict()` is the dict the
    exporter copies into the manifest (artifact.confidence.Calibration reads it there)."""

    a: float
    b: float
    threshold: float
    n: int  # validation answers fitted on
    right_f1: float = RIGHT_F1
    target_answered_f1: float = TARGET_ANSWERED_F1
    margin_se: float = MARGIN_SE
    met_target: bool = False  # the validation F1 rule reached its target (at target_threshold)
    validation_coverage: float = 0.0  # share of validation questions answered at `threshold`
    validation_answered_f1: float | None = None  # their mean F1 (None: none answered)
    validation_ece: float | None = None
    kind: str = KIND
    feature: str = FEATURE
    fitted_on: str = "validation"
    # which rule set `threshold` (RULE_*); None in files written before it was recorded
    threshold_rule: str | None = None
    target_threshold: float | None = None  # the validation F1 rule's threshold, before the cap
    seen_coverage_floor: float = SEEN_COVERAGE
    seen_n: int = 0  # seen answers the cap looked at (0: none were scored, no cap)
    seen_coverage: float | None = None  # share of them answered at `threshold`
    feature_folds: int = 0  # k of the k-fold choice of feature (0: the feature was given)
    feature_log_loss: dict[str, float] = field(default_factory=dict)  # per candidate feature

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping) -> Calibration:
        """The server's checks first (artifact.confidence: kind, feature, finite a, b and a
        threshold in [0, 1]), so a file training reads is one the server reads; then the
        fit's record (`n` is required)."""
        served = ServedCalibration.from_dict(data)
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in data.items() if k in known}
        try:
            return cls(**{**values, "a": served.a, "b": served.b, "threshold": served.threshold})
        except TypeError as e:
            raise CalibrationError(f"bad calibration: {e}") from None

    def served(self) -> ServedCalibration:
        """The calibration as the manifest and the server carry it."""
        return ServedCalibration.from_dict(self.to_dict())

    def confidence(self, mean: float | None) -> float:
        """P(right) of an answer whose mean token logprob is `mean` (the server's formula)."""
        return calibrated(mean, self.feature, self.a, self.b)

    def save(self, directory: Path | str) -> Path:
        path = Path(directory) / CONFIDENCE_FILE
        path.write_text(json.dumps(self.to_dict(), indent=2) + "\n", encoding="utf-8")
        return path

    @classmethod
    def load(cls, directory: Path | str) -> Calibration | None:
        """The checkpoint's calibration; None when it has none (no validation part). The
        exporter reads the same file with artifact.confidence.Calibration.load."""
        served = ServedCalibration.load(directory)
        if served is None:
            return None
        try:
            return cls.from_dict(served.to_dict())
        except CalibrationError as e:
            raise CalibrationError(f"{Path(directory) / CONFIDENCE_FILE}: {e}") from None


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


@dataclass(frozen=True)
class FeatureChoice:
    """The feature the curve is fitted on, and why: each candidate's k-fold log loss."""

    feature: str
    log_loss: dict[str, float]  # mean over the validation answers, held out fold by fold
    folds: int  # 0: too few answers to compare (the default feature)


def choose_feature(
    mean_logprobs: Sequence[float], right: Sequence[bool], folds: int = FEATURE_FOLDS
) -> FeatureChoice:
    """The candidate feature (artifact.confidence.FEATURES) whose curve predicts held-out
    validation answers best: k-fold cross-validated log loss (answer i in fold i mod k, no
    seed; each fold's curve fitted as the final one is, on Platt's targets; scored against
    the 0/1 outcomes). Ties keep the earlier candidate ("mean_logprob"). Every mean must be
    finite (answers with no tokens take no part: their confidence is 0 under any feature)."""
    n = len(mean_logprobs)
    k = min(folds, n)
    if k < 2:
        return FeatureChoice(FEATURE, {}, 0)
    y = np.asarray(right, dtype=np.float64)  # [N]
    fold = np.arange(n) % k  # [N]
    losses: dict[str, float] = {}
    for feature in FEATURES:
        x = np.asarray([feature_value(feature, m) for m in mean_logprobs], dtype=np.float64)
        p = np.empty(n)  # [N]: each answer's P(right) from the curve fitted without its fold
        for j in range(k):
            train = fold != j
            a, b = fit_logistic(x[train], platt_targets(y[train].astype(bool).tolist()))
            p[~train] = 1.0 / (1.0 + np.exp(-(a * x[~train] + b)))
        p = np.clip(p, 1e-12, 1 - 1e-12)
        losses[feature] = round(float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p))), 6)
    best = min(FEATURES, key=lambda f: losses[f])  # min keeps the first of equal ones
    return FeatureChoice(best, losses, k)


def fit_calibration(
    mean_logprobs: Sequence[float | None],
    f1s: Sequence[float],
    right_f1: float = RIGHT_F1,
    target_answered_f1: float = TARGET_ANSWERED_F1,
    margin_se: float = MARGIN_SE,
    seen_mean_logprobs: Sequence[float | None] = (),
    seen_coverage_floor: float = SEEN_COVERAGE,
    feature: str | None = None,
    folds: int = FEATURE_FOLDS,
) -> Calibration:
    """Fit the curve on validation answers, then pick the default threshold on them too.

    The feature is `feature`, or with None the candidate with the lower k-fold log loss on
    these answers (choose_feature). "Right" is F1 >= right_f1; Platt's smoothed targets
    (platt_targets). Answers with no tokens take no part in the fit (their confidence is 0
    whatever a, b). The threshold: select_threshold on the validation answers, then lowered
    where needed so that `seen_coverage_floor` of the seen (train) answers are still answered
    (cap_for_seen; only when `seen_mean_logprobs` are given). Held-out answers play no part.
    """
    pairs = [(m, f) for m, f in zip(mean_logprobs, f1s, strict=True) if _finite(m)]
    if not pairs:
        raise ValueError("no validation answer has a token to score")
    means = [m for m, _ in pairs]
    right = [f >= right_f1 for _, f in pairs]
    choice = FeatureChoice(feature, {}, 0) if feature else choose_feature(means, right, folds)
    x = [feature_value(choice.feature, m) for m in means]
    a, b = fit_logistic(x, platt_targets(right))
    confidences = [calibrated(m, choice.feature, a, b) for m in mean_logprobs]
    target = select_threshold(confidences, f1s, target_answered_f1, margin_se)
    seen = [calibrated(m, choice.feature, a, b) for m in seen_mean_logprobs]
    threshold, capped = cap_for_seen(target.threshold, seen, seen_coverage_floor)
    rule = RULE_SEEN_CAP if capped else RULE_TARGET if target.met_target else RULE_BEST_EFFORT
    coverage, answered_f1 = answered_at(threshold, confidences, f1s)
    outcomes = [float(f >= right_f1) for f in f1s]
    return Calibration(
        a=a,
        b=b,
        threshold=threshold,
        n=len(f1s),
        right_f1=right_f1,
        target_answered_f1=target_answered_f1,
        margin_se=margin_se,
        met_target=target.met_target,
        validation_coverage=round(coverage, 4),
        validation_answered_f1=_round(answered_f1),
        validation_ece=round(expected_calibration_error(confidences, outcomes), 4),
        feature=choice.feature,
        threshold_rule=rule,
        target_threshold=target.threshold,
        seen_coverage_floor=seen_coverage_floor,
        seen_n=len(seen),
        seen_coverage=_round(sum(c >= threshold for c in seen) / len(seen)) if seen else None,
        feature_folds=choice.folds,
        feature_log_loss=choice.log_loss,
    )


def cap_for_seen(
    threshold: float, seen_confidences: Sequence[float], floor: float = SEEN_COVERAGE
) -> tuple[float, bool]:
    """(threshold, capped): `threshold`, or lower where it would answer fewer than `floor` of
    the seen (train) questions: then the confidence of the k-th most confident seen answer,
    k = ceil(floor * seen), the highest threshold that still answers k of them.

    The validation rule looks at validation answers only, and seen answers sit in the same
    flat top of the curve, so a threshold chosen there can hand over a fifth of the questions
    the model was trained on (docs/confidence.md). Seen questions are not test rows: this
    uses no held-out answer. No seen confidences: no cap."""
    if not seen_confidences or floor <= 0.0:
        return threshold, False
    ranked = sorted(seen_confidences, reverse=True)
    k = min(len(ranked), math.ceil(floor * len(ranked) - 1e-9))
    cap = ranked[k - 1]
    return (cap, True) if threshold > cap else (threshold, False)


def answered_at(
    threshold: float, confidences: Sequence[float], f1s: Sequence[float]
) -> tuple[float, float | None]:
    """(share answered, their mean F1) when answering confidence >= threshold."""
    picked = [f for c, f in zip(confidences, f1s, strict=True) if c >= threshold]
    share = len(picked) / len(confidences) if confidences else 0.0
    return share, (sum(picked) / len(picked) if picked else None)


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
        feature = cal.get("feature", FEATURE)
        lines.append(
            f"confidence: P(F1 >= {cal['right_f1']}) = sigmoid({cal['a']:.3f} * "
            f"{FORMULAS.get(feature, feature)} {cal['b']:+.3f}), fitted on {cal['n']} "
            f"{cal['fitted_on']} answers"
        )
        losses = cal.get("feature_log_loss") or {}
        if losses:
            listed = ", ".join(f"{f} {v:.4f}" for f, v in losses.items())
            lines.append(
                f"feature {feature}: the lower {cal['feature_folds']}-fold log loss on the "
                f"validation answers ({listed})"
            )
        lines.append(
            f"default threshold {cal['threshold']:.3f} ({_rule(cal)}): on validation it "
            f"answers {cal['validation_coverage']:.0%} with F1 "
            f"{_num(cal['validation_answered_f1'])}"
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


FORMULAS = {  # how the report prints each feature
    MEAN_LOGPROB: "mean_logprob",
    LOG_NEG_MEAN_LOGPROB: f"log(max(-mean_logprob, {EPS:g}))",
}


def _rule(cal: Mapping) -> str:
    """Which rule set the default threshold, in words."""
    target = (
        f"validation answered F1 >= {cal['target_answered_f1']} less "
        f"{cal.get('margin_se', 0)} standard error"
    )
    met = "met" if cal.get("met_target") else "NOT met, best effort"
    rule = cal.get("threshold_rule")
    if rule == RULE_SEEN_CAP:
        return (
            f"capped to answer {cal['seen_coverage_floor']:.0%} of seen questions; the rule "
            f"{target} gave {cal['target_threshold']:.3f}, {met}"
        )
    seen = cal.get("seen_coverage")
    seen_part = f"; seen answered {seen:.1%}, no cap needed" if seen is not None else ""
    return f"{target}: {met}{seen_part}"


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
