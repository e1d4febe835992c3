"""training/confidence.py and training/validation.py: the calibrated answer confidence, its
threshold, its measures, the validation part it is fitted on, and `kvserve-train eval`'s
risk-coverage table."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

import artifact
from artifact.confidence import LOG_NEG_MEAN_LOGPROB, MEAN_LOGPROB
from training.cli import build_parser, main
from training.confidence import (
    CONFIDENCE_FILE,
    RULE_BEST_EFFORT,
    RULE_SEEN_CAP,
    RULE_TARGET,
    Calibration,
    CalibrationError,
    cap_for_seen,
    choose_feature,
    confidence,
    confidence_report,
    expected_calibration_error,
    fit_calibration,
    fit_logistic,
    format_report,
    select_threshold,
)
from training.config import TrainConfig
from training.data import QAExample, load_data
from training.train import train
from training.validation import MIN_ROWS, carve_validation

DATA = Path(__file__).resolve().parents[1] / "data" / "support_qa.jsonl"


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-z))


# --- the fit --------------------------------------------------------------------------------


def test_fit_recovers_a_known_logistic() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(-1.5, 0.8, 20_000)  # mean logprobs
    y = (rng.random(x.size) < _sigmoid(3.0 * x + 4.0)).astype(float)
    a, b = fit_logistic(x, y)
    assert a == pytest.approx(3.0, abs=0.15) and b == pytest.approx(4.0, abs=0.2)


def test_fit_calibration_on_f1_scores_recovers_the_curve_and_is_calibrated() -> None:
    rng = np.random.default_rng(1)
    x = rng.normal(-1.5, 0.8, 20_000)
    right = rng.random(x.size) < _sigmoid(2.0 * x + 3.0)
    f1 = np.where(right, rng.uniform(0.5, 1.0, x.size), rng.uniform(0.0, 0.49, x.size))
    cal = fit_calibration(x.tolist(), f1.tolist())
    assert cal.a == pytest.approx(2.0, abs=0.15) and cal.b == pytest.approx(3.0, abs=0.2)
    assert cal.n == x.size and cal.validation_ece < 0.02


def test_fit_stays_finite_with_one_class_or_separable_classes() -> None:
    all_wrong = fit_calibration([-3.0, -2.0, -1.0], [0.0, 0.1, 0.2])
    assert math.isfinite(all_wrong.a) and math.isfinite(all_wrong.b)
    assert all_wrong.confidence(-2.0) < 0.3  # Platt's targets: about 1 / (3 + 2)
    separable = fit_calibration([-3.0, -2.5, -0.5, -0.2], [0.0, 0.0, 1.0, 1.0])
    assert math.isfinite(separable.a) and separable.a > 0
    assert separable.confidence(-0.2) > 0.5 > separable.confidence(-3.0)


def test_confidence_of_an_answer_without_tokens_is_zero() -> None:
    cal = {"a": 2.0, "b": 3.0}
    assert confidence(None, cal) == confidence(-math.inf, cal) == confidence(math.nan, cal) == 0.0
    assert confidence(-1.5, cal) == pytest.approx(0.5)
    assert confidence(-1000.0, cal) == pytest.approx(0.0) and confidence(1000.0, cal) == 1.0


# --- calibration error ----------------------------------------------------------------------


def test_ece_is_near_zero_for_a_calibrated_set_and_large_for_a_miscalibrated_one() -> None:
    rng = np.random.default_rng(2)
    conf = rng.random(50_000)
    calibrated = (rng.random(conf.size) < conf).astype(float)
    assert expected_calibration_error(conf, calibrated) < 0.01
    overconfident = (rng.random(conf.size) < conf**4).astype(float)  # right far less often
    assert expected_calibration_error(conf, overconfident) > 0.25


def test_ece_by_hand() -> None:
    # one bin [0.9, 1.0): mean confidence 0.95, half right -> 0.45; the 0.15 bin: exact
    conf = [0.95] * 10 + [0.15] * 10
    right = [1.0] * 5 + [0.0] * 5 + [1.0] * 2 + [0.0] * 8
    expected = (10 * 0.45 + 10 * abs(0.15 - 0.2)) / 20
    assert expected_calibration_error(conf, right) == pytest.approx(expected)


# --- threshold -----------------------------------------------------------------------------


def test_threshold_is_the_lowest_whose_answered_f1_meets_the_target() -> None:
    # answered F1 from the top: 1, 1, .833, .875, .7, .583 -> the lowest cut >= .75 is 0.6
    conf, f1 = [0.9, 0.8, 0.7, 0.6, 0.5, 0.4], [1, 1, 0.5, 1, 0, 0]
    choice = select_threshold(conf, f1, 0.75, margin_se=0.0)
    assert (choice.threshold, choice.met_target) == (0.6, True)
    assert choice.coverage == pytest.approx(4 / 6) and choice.answered_f1 == pytest.approx(0.875)


def test_threshold_keeps_a_margin_of_standard_errors() -> None:
    # F1 spread of all six: sd 0.4488. One standard error off: k=4: .875 - .224 < .75;
    # k=2: 1 - .317 < .75; k=1: 1 - .449 < .75 -> nothing meets it with the margin
    conf, f1 = [0.9, 0.8, 0.7, 0.6, 0.5, 0.4], [1, 1, 0.5, 1, 0, 0]
    assert select_threshold(conf, f1, 0.75, margin_se=1.0).met_target is False
    # many sure answers: 40 right on top of 40 wrong; at k=40: 1 - 0.5/sqrt(40) = .92 >= .75
    # while k=48 (mean 40/48 = .833, bound .76) still meets it and k=49 (.816, .745) not
    conf = [1 - i / 100 for i in range(80)]
    choice = select_threshold(conf, [1.0] * 40 + [0.0] * 40, 0.75, margin_se=1.0)
    assert choice.met_target and choice.coverage == pytest.approx(48 / 80)
    assert choice.threshold == pytest.approx(conf[47])


def test_threshold_never_splits_tied_confidences() -> None:
    # at 0.5 both tied answers are answered (F1 2/3); the threshold stays at 0.9
    choice = select_threshold([0.5, 0.9, 0.5], [1.0, 1.0, 0.0], 0.75, margin_se=0.0)
    assert choice.threshold == 0.9 and choice.coverage == pytest.approx(1 / 3)


def test_threshold_best_effort_keeps_the_coverage_floor() -> None:
    # nothing reaches .75; among cuts answering >= 40% (2 of 5) the best answered F1 is at .6
    choice = select_threshold([0.9, 0.8, 0.7, 0.6, 0.5], [0.7, 0.0, 0.6, 0.6, 0.0], 0.75, 1.0)
    assert (choice.threshold, choice.met_target) == (0.6, False)
    assert choice.answered_f1 == pytest.approx(0.475)


# --- the stored JSON ------------------------------------------------------------------------


MEANS = [-2.5, -2.0, -1.2, -0.8, -0.3, -0.1]
F1S = [0.1, 0.0, 0.6, 0.2, 1.0, 0.9]


@pytest.mark.parametrize("feature", [MEAN_LOGPROB, LOG_NEG_MEAN_LOGPROB])
def test_calibration_json_round_trips_and_is_the_evaluators_input(
    tmp_path: Path, feature: str
) -> None:
    cal = fit_calibration(MEANS, F1S, feature=feature, seen_mean_logprobs=[-0.1, -0.2, -1.0])
    path = cal.save(tmp_path)
    assert path.name == CONFIDENCE_FILE
    data = json.loads(path.read_text())
    assert {"kind", "feature", "a", "b", "threshold", "fitted_on", "n"} <= set(data)
    assert {"threshold_rule", "target_threshold", "seen_coverage", "feature_log_loss"} <= set(data)
    assert (data["kind"], data["feature"], data["fitted_on"]) == ("logistic", feature, "validation")
    assert Calibration.load(tmp_path) == cal
    assert confidence(-0.7, data) == cal.confidence(-0.7)  # the dict alone evaluates it
    assert Calibration.load(tmp_path / "nowhere") is None


def test_an_old_confidence_json_without_the_rule_still_loads(tmp_path: Path) -> None:
    old = {"a": 23.4, "b": 0.2, "threshold": 0.54, "n": 189, "met_target": True}
    old |= {"kind": "logistic", "feature": "mean_logprob", "fitted_on": "validation"}
    (tmp_path / CONFIDENCE_FILE).write_text(json.dumps(old))
    cal = Calibration.load(tmp_path)
    assert cal is not None and cal.threshold_rule is None and cal.feature == MEAN_LOGPROB
    assert cal.confidence(-0.01) == pytest.approx(1 / (1 + math.exp(-(23.4 * -0.01 + 0.2))))


@pytest.mark.parametrize("feature", [MEAN_LOGPROB, LOG_NEG_MEAN_LOGPROB])
def test_training_and_the_server_evaluate_one_formula(tmp_path: Path, feature: str) -> None:
    """training.confidence evaluates through artifact.confidence: the number kvserve-train
    eval reports for an answer is the number the server gives it from the manifest."""
    cal = fit_calibration(MEANS, F1S, feature=feature)
    cal.save(tmp_path)
    served = artifact.Calibration.load(tmp_path)  # what the exporter copies into the manifest
    assert served is not None and served == cal.served() and served.feature == feature
    assert served.to_dict() == cal.to_dict() and served.threshold == cal.threshold
    for tokens in ([-0.05, -0.2, -1.1], [-2.0], [-0.01] * 7, [-0.0002, -0.0009], []):
        mean = sum(tokens) / len(tokens) if tokens else None
        by_dict = confidence(mean, served.to_dict())
        assert cal.confidence(mean) == served.confidence(tokens) == by_dict
    assert Calibration.from_dict(served.to_dict()) == cal


def test_the_log_feature_fit_recovers_its_curve() -> None:
    rng = np.random.default_rng(3)
    neg_mean = np.exp(rng.normal(-5.0, 1.5, 20_000))  # -mean logprob, 1e-4 .. 0.1 mostly
    right = rng.random(neg_mean.size) < _sigmoid(-1.2 * np.log(neg_mean) - 6.0)
    cal = fit_calibration((-neg_mean).tolist(), right.astype(float).tolist())
    assert cal.feature == LOG_NEG_MEAN_LOGPROB  # chosen by the k-fold log loss
    assert cal.a == pytest.approx(-1.2, abs=0.08) and cal.b == pytest.approx(-6.0, abs=0.4)
    assert cal.validation_ece < 0.02


@pytest.mark.parametrize(
    ("truth", "expected"),
    [
        (lambda m: 3.0 * m + 2.0, MEAN_LOGPROB),
        (lambda m: -1.5 * np.log(-m) - 4.0, LOG_NEG_MEAN_LOGPROB),
    ],
)
def test_the_feature_with_the_lower_k_fold_log_loss_is_chosen(truth, expected: str) -> None:
    rng = np.random.default_rng(4)
    means = -np.exp(rng.normal(-2.0, 1.5, 3_000))  # spans -3e-4 .. -2 and beyond
    right = rng.random(means.size) < _sigmoid(truth(means))
    choice = choose_feature(means.tolist(), right.tolist())
    assert choice.feature == expected and choice.folds == 5
    assert set(choice.log_loss) == {MEAN_LOGPROB, LOG_NEG_MEAN_LOGPROB}
    other = next(f for f in choice.log_loss if f != expected)
    assert choice.log_loss[expected] < choice.log_loss[other]


def test_too_few_answers_to_compare_keep_the_default_feature() -> None:
    assert choose_feature([-0.5], [True]).feature == MEAN_LOGPROB
    assert choose_feature([-0.5], [True]).folds == 0
    assert choose_feature([-0.5, -0.1, -2.0], [True, True, False]).folds == 3


def test_an_unknown_feature_cannot_be_fitted() -> None:
    with pytest.raises(CalibrationError, match="feature 'entropy'"):
        fit_calibration(MEANS, F1S, feature="entropy")


# --- the seen-coverage cap on the threshold -------------------------------------------------


def test_cap_for_seen_by_hand() -> None:
    seen = [0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1, 0.05]  # 10: 95% needs all 10
    assert cap_for_seen(0.65, seen, 0.95) == (0.05, True)
    assert cap_for_seen(0.65, seen, 0.8) == (0.2, True)  # 8 of 10: the 8th surest
    assert cap_for_seen(0.15, seen, 0.8) == (0.15, False)  # already answers 9 of 10
    assert cap_for_seen(0.65, [], 0.95) == (0.65, False)  # no seen answers scored: no cap
    assert cap_for_seen(0.65, seen, 0.0) == (0.65, False)
    # ties answer together: the cap never splits them
    tied = [0.7] * 19 + [0.2]
    assert cap_for_seen(0.75, tied, 0.95) == (0.7, True)  # 19 of 20 = 95%


def _separated(n: int, seed: int) -> tuple[list[float], list[float]]:
    """Answers whose mean logprob says whether they are right, more or less."""
    rng = np.random.default_rng(seed)
    means = -np.exp(rng.normal(-4.0, 2.0, n))
    right = rng.random(n) < _sigmoid(-1.0 * np.log(-means) - 5.5)
    return means.tolist(), np.where(right, 1.0, 0.0).tolist()


def test_the_threshold_is_capped_to_answer_95_percent_of_seen_questions() -> None:
    means, f1s = _separated(400, 5)
    # seen answers: surer than validation ones, but spread into the range the rule cuts off
    seen = (-np.exp(np.random.default_rng(6).normal(-8.0, 1.5, 500))).tolist()
    free = fit_calibration(means, f1s)  # no seen answers scored: the validation rule alone
    cal = fit_calibration(means, f1s, seen_mean_logprobs=seen)
    assert free.threshold_rule == RULE_TARGET and free.seen_coverage is None
    assert free.target_threshold == free.threshold and free.seen_n == 0
    # the same curve and rule; only the cap differs
    assert (cal.a, cal.b, cal.feature) == (free.a, free.b, free.feature)
    assert cal.target_threshold == free.threshold and cal.met_target
    seen_conf = sorted((cal.confidence(m) for m in seen), reverse=True)
    assert sum(c >= free.threshold for c in seen_conf) < 0.95 * len(seen)  # the rule alone
    assert cal.threshold_rule == RULE_SEEN_CAP and cal.threshold < free.threshold
    answered = sum(c >= cal.threshold for c in seen_conf)
    assert answered >= 0.95 * len(seen) and cal.seen_coverage == round(answered / 500, 4)
    assert cal.threshold == seen_conf[math.ceil(0.95 * 500) - 1]  # the highest such
    assert cal.seen_n == 500 and cal.seen_coverage_floor == 0.95
    # the validation figures are those at the capped threshold: more answered
    assert cal.validation_coverage > free.validation_coverage


def test_no_cap_when_the_rule_already_answers_95_percent_of_seen() -> None:
    means, f1s = _separated(400, 7)
    sure = [-1e-5] * 200  # every seen answer surer than any threshold
    cal = fit_calibration(means, f1s, seen_mean_logprobs=sure)
    assert cal.threshold_rule == RULE_TARGET and cal.threshold == cal.target_threshold
    assert cal.seen_coverage == 1.0 and cal.seen_n == 200


def test_the_rule_says_best_effort_when_the_target_is_out_of_reach() -> None:
    rng = np.random.default_rng(8)
    means = (-rng.random(100)).tolist()
    cal = fit_calibration(means, [0.3] * 100)  # no answer is ever right enough
    assert cal.threshold_rule == RULE_BEST_EFFORT and not cal.met_target


def test_held_out_answers_cannot_reach_the_fit() -> None:
    # the signature takes validation and seen answers only; the same inputs, the same fit
    means, f1s = _separated(300, 9)
    seen = [-0.001] * 50 + [-0.3] * 5
    assert fit_calibration(means, f1s, seen_mean_logprobs=seen) == fit_calibration(
        list(means), list(f1s), seen_mean_logprobs=list(seen)
    )


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"kind": "isotonic"}, "unknown calibration kind"),
        ({"threshold": 1.2}, "threshold must be between 0 and 1"),
        ({"a": "x"}, "a must be a finite number"),
        ({"threshold": None}, "threshold must be a finite number"),
    ],
)
def test_bad_calibration_json_is_refused(tmp_path: Path, change: dict, message: str) -> None:
    data = Calibration(a=1.0, b=0.5, threshold=0.4, n=10).to_dict() | change
    (tmp_path / CONFIDENCE_FILE).write_text(json.dumps(data))
    with pytest.raises(CalibrationError, match=message):
        Calibration.load(tmp_path)


# --- the validation part --------------------------------------------------------------------


def test_a_carve_of_the_bundled_data_is_new_phrasings_of_trained_facts() -> None:
    # the bundled data has its own validation rows; without them, a carve takes train rows
    examples = [e for e in load_data(DATA).examples if e.split != "validation"]
    heldout = {e.question for e in examples if e.split == "heldout"}
    carve = carve_validation(examples, 0.5)
    assert carve.how == "facts" and len(carve.validation) == round(0.5 * 189)
    validation = {e.question for e in carve.validation}
    assert not validation & heldout  # never a held-out (test) row
    assert not validation & {e.question for e in carve.train}
    assert all(e.split == "validation" for e in carve.validation)
    assert len(carve.train) + len(carve.validation) == 567
    trained_facts = {e.fact_id for e in carve.train}
    assert {e.fact_id for e in carve.validation} <= trained_facts  # one phrasing each, kept
    assert len({e.fact_id for e in carve.validation}) == len(carve.validation)
    assert carve_validation(examples, 0.5) == carve  # deterministic, no seed


def test_validation_rows_given_in_the_data_are_used_and_nothing_is_carved() -> None:
    rows = [QAExample(f"q{i}", f"a{i}") for i in range(30)]
    rows += [QAExample("v", "a1", split="validation"), QAExample("h", "a2", split="heldout")]
    carve = carve_validation(rows, 0.5)
    assert carve.how == "given" and [e.question for e in carve.validation] == ["v"]
    assert len(carve.train) == 30


def test_rows_without_repeated_facts_give_a_share_of_rows_and_small_data_gives_none() -> None:
    rows = [QAExample(f"q{i}", f"answer {i}") for i in range(100)]
    carve = carve_validation(rows, 0.3)
    assert carve.how == "rows" and len(carve.validation) == 30 and len(carve.train) == 70
    small = carve_validation(rows[: 2 * MIN_ROWS - 2], 0.5)
    assert small.how == "none" and not small.validation
    assert carve_validation(rows, 0.0).how == "none"


def test_training_never_sees_validation_rows() -> None:
    from training.config import TrainConfig
    from training.presets import get_preset
    from training.train import load_rows

    # the bundled data's split=validation rows: one written phrasing per fact, nothing carved
    rows = load_rows(TrainConfig(data=DATA, out=Path("unused")), get_preset("quality"))
    validation = {e.question for e in rows.validation}
    assert rows.validation_carve == "given"
    assert len(validation) == 189 and not validation & {e.question for e in rows.heldout}
    assert not validation & {e.question for e in rows.train}
    copies = [e for e in rows.extra if e.question in validation]
    assert len(copies) <= 2  # only a keyword question made from an answer can coincide


@pytest.mark.parametrize("value", ["1.5", "-0.1", "nan", "x"])
def test_validation_option_must_be_a_share(value: str, capsys) -> None:
    with pytest.raises(SystemExit) as info:
        build_parser().parse_args(["--data", "d", "--out", "o", "--validation", value])
    assert info.value.code == 2 and "--validation" in capsys.readouterr().err


# --- held-out report and the eval command ---------------------------------------------------


def test_confidence_report_table_at_the_ladder_and_the_chosen_threshold() -> None:
    cal = Calibration(a=4.0, b=4.0, threshold=0.55, n=100)  # 0.5 at mean logprob -1
    heldout = [(-0.1, 1.0, 1.0), (-0.5, 0.8, 0.0), (-1.5, 0.2, 0.0), (None, 0.0, 0.0)]
    report = confidence_report(cal, heldout, seen_mean_logprobs=[-0.05, -0.2, -2.0])
    assert "sigmoid(4.000 * mean_logprob +4.000)" in format_report(report)
    assert report.chosen is not None and report.chosen.answered == 2
    assert report.chosen.coverage == 0.5 and report.chosen.answered_f1 == pytest.approx(0.9)
    assert report.chosen.seen_coverage == pytest.approx(2 / 3, abs=1e-4)
    assert [p.threshold for p in report.table][:2] == [0.0, 0.1]
    assert 0.55 in [p.threshold for p in report.table]
    answer_all = report.table[0]
    assert answer_all.coverage == 1.0 and answer_all.answered_f1 == pytest.approx(0.5)
    assert report.by_coverage[-1].answered_f1 == pytest.approx(0.5)
    assert report.ece_heldout is not None and 0 <= report.ece_heldout <= 1


def test_the_report_names_the_feature_and_the_rule_that_bound() -> None:
    means, f1s = _separated(400, 5)
    seen = (-np.exp(np.random.default_rng(6).normal(-8.0, 1.5, 500))).tolist()
    cal = fit_calibration(means, f1s, seen_mean_logprobs=seen)
    heldout = [(m, f, f) for m, f in zip(*_separated(100, 10), strict=True)]
    text = format_report(confidence_report(cal, heldout, seen))
    assert "log(max(-mean_logprob, 1e-06))" in text
    assert "feature log_neg_mean_logprob: the lower 5-fold log loss" in text
    assert "capped to answer 95% of seen questions" in text
    chosen = next(line for line in text.splitlines() if f"{cal.threshold:.3f}*" in line)
    assert chosen.split()[-1] == f"{cal.seen_coverage:.1%}"  # the table agrees with the fit


@pytest.mark.slow
def test_eval_prints_the_risk_coverage_table(tmp_path: Path, capsys):
    # the bundled data's own validation rows (one written phrasing per fact) fit the curve
    config = TrainConfig(DATA, tmp_path / "ckpt", base="tiny", preset="test")
    checkpoint = train(config)
    trained = json.loads((checkpoint / "kvserve_train.json").read_text())
    assert trained["validation_examples"] == 189 and trained["eval_split"] == "validation"
    assert (checkpoint / CONFIDENCE_FILE).is_file()
    argv = ["eval", str(checkpoint), "--data", str(DATA), "--max-new-tokens", "2"]
    assert main([*argv, "--samples", "1"]) == 0
    out = capsys.readouterr().out
    assert "held-out answered" in out and "answered F1" in out and "seen answered" in out
    assert "default threshold" in out and "ECE (10 bins)" in out
    report = json.loads((checkpoint / "kvserve_eval.json").read_text())
    splits = report["splits"]
    assert (splits["seen"]["count"], splits["validation"]["count"]) == (567, 189)
    assert splits["heldout"]["count"] == 189
    section = report["confidence"]
    calibration = json.loads((checkpoint / CONFIDENCE_FILE).read_text())
    assert section["calibration"] == calibration
    # the test preset scores no seen answers: the validation rule alone, no cap
    assert calibration["feature"] in (MEAN_LOGPROB, LOG_NEG_MEAN_LOGPROB)
    assert calibration["seen_n"] == 0 and calibration["threshold_rule"] != RULE_SEEN_CAP
    assert section["chosen"]["threshold"] == pytest.approx(section["calibration"]["threshold"])
    assert len(section["table"]) >= 10 and 0.0 <= section["ece_heldout"] <= 1.0
    lines = (checkpoint / "kvserve_eval_predictions.jsonl").read_text().splitlines()
    first = json.loads(lines[0])
    assert first["mean_logprob"] <= 0.0 and 0.0 <= first["confidence"] <= 1.0


@pytest.mark.slow
def test_answer_logprobs_are_the_log_softmax_of_the_raw_logits(tiny_checkpoint: Path) -> None:
    import torch
    from transformers import AutoTokenizer, GPT2LMHeadModel

    from artifact import PromptTemplate
    from training.evaluate import generate_scored_answers

    model = GPT2LMHeadModel.from_pretrained(tiny_checkpoint).eval()
    tok = AutoTokenizer.from_pretrained(tiny_checkpoint)
    template = PromptTemplate.load(tiny_checkpoint)
    rows = [QAExample("Where is my order?", "x"), QAExample("Is there a free trial now?", "y")]
    answers = generate_scored_answers(model, tok, template, rows, max_new_tokens=6)
    for row, answer in zip(rows, answers, strict=True):
        assert len(answer.token_logprobs) > 0
        prompt = tok.encode(template.format(row.question), add_special_tokens=False)
        # the answer's tokens again, teacher-forced in one pass without padding
        new = model.generate(
            torch.tensor([prompt]), max_new_tokens=6, do_sample=False, pad_token_id=0
        )[0, len(prompt) :].tolist()
        new = new[: len(answer.token_logprobs)]
        with torch.no_grad():
            logits = model(torch.tensor([prompt + new])).logits[0, len(prompt) - 1 : -1]
        expected = torch.log_softmax(logits.float(), -1)[range(len(new)), new]
        assert answer.token_logprobs == pytest.approx(expected.tolist(), abs=1e-4)
        assert answer.mean_logprob == pytest.approx(float(expected.mean()), abs=1e-4)
