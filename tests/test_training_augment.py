"""training/augment.py: deterministic extra rows from train rows only."""

from __future__ import annotations

from training.augment import Augmentation, augment, content_words
from training.data import QAExample

RESET = "Hold the dial for ten seconds to reset."
ROWS = [
    QAExample("How do I reset the thermostat?", RESET, fact_id="f1"),
    QAExample("thermostat reset", RESET, fact_id="f1"),
    QAExample("Which app do I use?", "Download the Vellmont Home app.", fact_id="f2"),
    QAExample("What is the app?", "Download the Vellmont Home app.", split="heldout", fact_id="f2"),
    QAExample("Who?", "Vellmont Labs", context="Vellmont Labs makes it.", fact_id="f3"),
]
SPEC = Augmentation(question_copies=2, answer_questions=3)


def test_no_augmentation_by_default() -> None:
    assert not Augmentation().enabled
    assert augment(ROWS, Augmentation(), seed=0) == []


def test_counts_answers_and_determinism() -> None:
    extra = augment(ROWS, SPEC, seed=1)
    # 3 plain train rows x 2 copies + 2 distinct answers x 3 keyword questions
    assert len(extra) == 3 * 2 + 2 * 3
    assert extra == augment(ROWS, SPEC, seed=1)
    assert extra != augment(ROWS, SPEC, seed=2)
    assert {e.split for e in extra} == {"train"}
    assert {(e.answer, e.fact_id) for e in extra} == {
        (RESET, "f1"),
        ("Download the Vellmont Home app.", "f2"),
    }


def test_heldout_and_context_rows_are_never_used() -> None:
    extra = augment(ROWS, Augmentation(question_copies=5, word_dropout=0.0, lowercase=0.0), 0)
    questions = {e.question for e in extra}
    assert "What is the app?" not in questions  # the heldout phrasing
    assert "Who?" not in questions  # the context row
    assert questions == {
        "How do I reset the thermostat?",
        "thermostat reset",
        "Which app do I use?",
    }


def test_keyword_questions_use_the_answers_content_words() -> None:
    extra = augment(ROWS, Augmentation(answer_questions=20, lowercase=0.0), seed=0)
    words = set(content_words("Download the Vellmont Home app.")) | {"How", "do", "I", "Which"}
    words |= {"What", "is", "the", "reset", "thermostat", "app", "use"}
    for e in extra:
        if e.answer.startswith("Download"):
            assert set(e.question.rstrip("?").split()) <= words, e.question
    assert content_words("Hold the dial for ten seconds.") == ["Hold", "dial", "ten", "seconds"]
