"""training/metrics.py: SQuAD normalisation, exact match and token F1 on hand-checked pairs."""

from __future__ import annotations

import pytest

from training.metrics import exact_match_score, f1_score, normalize_answer, score_answers


def test_normalize_lowercases_strips_punctuation_articles_and_spaces() -> None:
    assert normalize_answer("  The Lumo Hearth,  costs $179!  ") == "lumo hearth costs 179"
    assert normalize_answer("An apple a day") == "apple day"
    assert normalize_answer("theory") == "theory"  # articles only as whole words


def test_exact_match_ignores_case_punctuation_and_articles() -> None:
    assert exact_match_score("the Vellmont Labs.", "Vellmont labs") == 1.0
    assert exact_match_score("Vellmont", "Vellmont Labs") == 0.0


@pytest.mark.parametrize(
    ("prediction", "reference", "f1"),
    [
        ("Vellmont Labs", "Vellmont Labs", 1.0),
        ("Vellmont", "Vellmont Labs", 2 * 1.0 * 0.5 / 1.5),  # p=1, r=1/2
        ("Vellmont Labs in Duluth", "Vellmont Labs", 2 * 0.5 * 1.0 / 1.5),  # p=2/4, r=1
        ("blue", "amber", 0.0),
        ("", "amber", 0.0),
        ("the", "a", 1.0),  # both normalise to nothing
        ("red red blue", "red blue blue", 2 / 3),  # bags: common = {red: 1, blue: 1}
    ],
)
def test_token_f1(prediction: str, reference: str, f1: float) -> None:
    assert f1_score(prediction, reference) == pytest.approx(f1)


def test_score_answers_averages() -> None:
    scores = score_answers(["Vellmont Labs", "Vellmont", "blue"], ["Vellmont Labs"] * 2 + ["x"])
    assert scores.count == 3
    assert scores.exact_match == pytest.approx(1 / 3)
    assert scores.f1 == pytest.approx((1 + 2 / 3 + 0) / 3)
    assert score_answers([], []).count == 0
