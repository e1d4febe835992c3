"""artifact/confidence.py, the one confidence evaluator training, the exporter and the server
share: both features' formulas by hand, the round trip through confidence.json and the
manifest, old artifacts' "mean_logprob" still read, unknown kinds and features refused on
one line."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from artifact import read_manifest
from artifact.confidence import (
    CONFIDENCE_FILE,
    EPS,
    FEATURES,
    LOG_NEG_MEAN_LOGPROB,
    MEAN_LOGPROB,
    Calibration,
    CalibrationError,
    calibrated,
    feature_value,
)
from tests.support.handover import calibrated_copy

# as training writes it for the new feature: a < 0 (a smaller -mean is a surer answer)
LOG_CURVE = {
    "a": -0.664,
    "b": -3.525,
    "threshold": 0.423,
    "n": 189,
    "threshold_rule": "seen_coverage_cap",
    "feature_log_loss": {MEAN_LOGPROB: 0.5693, LOG_NEG_MEAN_LOGPROB: 0.5037},
    "kind": "logistic",
    "feature": LOG_NEG_MEAN_LOGPROB,
    "fitted_on": "validation",
}


def sigmoid(z: float) -> float:
    return 1 / (1 + math.exp(-z))


@pytest.mark.parametrize(
    "tokens", [[-0.0004, -0.0011, -0.0002], [-0.02], [-0.3, -2.5, -0.01, -0.7], [-7.0, -9.0]]
)
def test_log_neg_mean_logprob_is_the_formula(tokens: list[float]) -> None:
    cal = Calibration.from_dict(LOG_CURVE)
    mean = sum(tokens) / len(tokens)
    expected = sigmoid(-0.664 * math.log(-mean) - 3.525)
    assert cal.confidence(tokens) == pytest.approx(expected, rel=1e-12)
    assert cal.confidence_of_mean(mean) == cal.confidence(tokens)
    assert calibrated(mean, LOG_NEG_MEAN_LOGPROB, -0.664, -3.525) == cal.confidence(tokens)


def test_a_surer_answer_gets_a_higher_confidence_under_the_log_feature() -> None:
    cal = Calibration.from_dict(LOG_CURVE)
    sure, unsure = cal.confidence([-0.0003]), cal.confidence([-0.05])
    assert sure > 0.6 > 0.3 > unsure  # the top of the range is spread, not flat at sigmoid(b)


def test_log_feature_edges_no_tokens_zero_mean_and_infinities() -> None:
    cal = Calibration.from_dict(LOG_CURVE)
    assert cal.confidence([]) == 0.0  # no tokens, no mean
    assert cal.confidence_of_mean(None) == 0.0
    assert cal.confidence_of_mean(-math.inf) == cal.confidence_of_mean(math.nan) == 0.0
    # every token certain: mean 0, clamped to EPS instead of log(0)
    at_eps = sigmoid(-0.664 * math.log(EPS) - 3.525)
    assert cal.confidence([0.0, 0.0]) == pytest.approx(at_eps)
    assert cal.confidence([-1e-9]) == pytest.approx(at_eps)  # under EPS: the same clamp
    assert feature_value(LOG_NEG_MEAN_LOGPROB, -0.01) == pytest.approx(math.log(0.01))
    assert feature_value(MEAN_LOGPROB, -0.01) == -0.01
    assert feature_value(LOG_NEG_MEAN_LOGPROB, None) is None
    # a huge curve value does not overflow either way
    steep = Calibration(a=-1e6, b=0.0, threshold=0.5, feature=LOG_NEG_MEAN_LOGPROB)
    assert steep.confidence([-1e-5]) == 1.0 and steep.confidence([-50.0]) == 0.0


def test_an_old_mean_logprob_calibration_reads_and_evaluates_as_before() -> None:
    old = {"a": 23.42, "b": 0.199, "threshold": 0.539, "n": 189}
    old |= {"kind": "logistic", "feature": "mean_logprob", "fitted_on": "validation"}
    cal = Calibration.from_dict(old)
    assert cal.feature == MEAN_LOGPROB and cal.to_dict() == old
    assert cal.confidence([-0.01, -0.03]) == pytest.approx(sigmoid(23.42 * -0.02 + 0.199))


def test_new_feature_round_trips_through_confidence_json(tmp_path: Path) -> None:
    (tmp_path / CONFIDENCE_FILE).write_text(json.dumps(LOG_CURVE))
    cal = Calibration.load(tmp_path)
    assert cal is not None and cal.feature == LOG_NEG_MEAN_LOGPROB
    assert cal.to_dict() == LOG_CURVE  # the record (rule, log losses) travels with it
    assert Calibration.from_dict(json.loads(json.dumps(cal.to_dict()))) == cal


@pytest.mark.slow
def test_new_feature_round_trips_through_the_manifest(tiny_artifact: Path, tmp_path: Path) -> None:
    cal = Calibration.from_dict(LOG_CURVE)
    copy = calibrated_copy(tiny_artifact, tmp_path / "artifact", cal)
    read = read_manifest(copy).confidence  # hashes verified: what the server loads
    assert read == cal and read.feature == LOG_NEG_MEAN_LOGPROB
    assert read.confidence([-0.001, -0.004]) == cal.confidence([-0.001, -0.004])


@pytest.mark.parametrize("feature", ["min_logprob", "log_mean_logprob", "", 3, None])
def test_an_unknown_feature_is_refused_on_one_line(feature: object) -> None:
    with pytest.raises(CalibrationError) as error:
        Calibration.from_dict({**LOG_CURVE, "feature": feature})
    message = str(error.value)
    assert f"feature {feature!r}" in message and "\n" not in message
    assert all(repr(f) in message for f in FEATURES)  # says what this version evaluates


def test_an_unknown_kind_or_feature_cannot_be_built_or_evaluated_either() -> None:
    with pytest.raises(CalibrationError, match="feature 'entropy'"):
        Calibration(a=1.0, b=0.0, threshold=0.5, feature="entropy")
    with pytest.raises(CalibrationError, match="kind 'isotonic'"):
        Calibration(a=1.0, b=0.0, threshold=0.5, kind="isotonic")
    with pytest.raises(CalibrationError, match="feature 'entropy'"):
        calibrated(-0.1, "entropy", 1.0, 0.0)
