"""training/confidence.py and training/validation.py: the calibrated answer confidence, its
threshold, its measures, the validation part it is fitted on, and `kvserve-train eval`'s
risk-coverage table."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from training.cli import build_parser, main
from training.confidence import (
    CONFIDENCE_FILE,
    Calibration,
    CalibrationError,
    confidence,
    confidence_report,
    expected_calibration_error,
    fit_calibration,
    fit_logistic,
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


def test_calibration_json_round_trips_and_is_the_evaluators_input(tmp_path: Path) -> None:
    cal = fit_calibration([-2.5, -2.0, -1.2, -0.8, -0.3, -0.1], [0.1, 0.0, 0.6, 0.2, 1.0, 0.9])
    path = cal.save(tmp_path)
    assert path.name == CONFIDENCE_FILE
    data = json.loads(path.read_text())
    assert {"kind", "feature", "a", "b", "threshold", "fitted_on", "n"} <= set(data)
    assert (data["kind"], data["feature"], data["fitted_on"]) == (
        "logistic",
        "mean_logprob",
        "validation",
    )
    assert Calibration.load(tmp_path) == cal
    assert confidence(-0.7, data) == cal.confidence(-0.7)  # the dict alone evaluates it
    assert Calibration.load(tmp_path / "nowhere") is None


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"kind": "isotonic"}, "unknown calibration kind"),
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


def test_validation_part_of_the_bundled_data_is_new_phrasings_of_trained_facts() -> None:
    examples = load_data(DATA).examples
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

    config = TrainConfig(data=DATA, out=Path("unused"), validation=0.5)  # the carve is opt-in
    rows = load_rows(config, get_preset("quality"))
    validation = {e.question for e in rows.validation}
    assert len(validation) == 94 and not validation & {e.question for e in rows.heldout}
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
    assert report.chosen is not None and report.chosen.answered == 2
    assert report.chosen.coverage == 0.5 and report.chosen.answered_f1 == pytest.approx(0.9)
    assert report.chosen.seen_coverage == pytest.approx(2 / 3, abs=1e-4)
    assert [p.threshold for p in report.table][:2] == [0.0, 0.1]
    assert 0.55 in [p.threshold for p in report.table]
    answer_all = report.table[0]
    assert answer_all.coverage == 1.0 and answer_all.answered_f1 == pytest.approx(0.5)
    assert report.by_coverage[-1].answered_f1 == pytest.approx(0.5)
    assert report.ece_heldout is not None and 0 <= report.ece_heldout <= 1


@pytest.mark.slow
def test_eval_prints_the_risk_coverage_table(tmp_path: Path, capsys):
    # the carve is opt-in (--validation): this checkpoint is trained with half the facts
    # giving one phrasing to the validation part
    config = TrainConfig(DATA, tmp_path / "ckpt", base="tiny", preset="test", validation=0.5)
    checkpoint = train(config)
    trained = json.loads((checkpoint / "kvserve_train.json").read_text())
    assert trained["validation_examples"] == 94 and trained["eval_split"] == "validation"
    assert (checkpoint / CONFIDENCE_FILE).is_file()
    argv = ["eval", str(checkpoint), "--data", str(DATA), "--max-new-tokens", "2"]
    assert main([*argv, "--samples", "1"]) == 0
    out = capsys.readouterr().out
    assert "held-out answered" in out and "answered F1" in out and "seen answered" in out
    assert "default threshold" in out and "ECE (10 bins)" in out
    report = json.loads((checkpoint / "kvserve_eval.json").read_text())
    splits = report["splits"]
    assert (splits["seen"]["count"], splits["validation"]["count"]) == (567 - 94, 94)
    assert splits["heldout"]["count"] == 189
    section = report["confidence"]
    assert section["calibration"] == json.loads((checkpoint / CONFIDENCE_FILE).read_text())
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
