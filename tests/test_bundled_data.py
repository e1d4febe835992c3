"""The bundled data/support_qa.jsonl: its shape, its split rule, and that it is regenerable."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "data" / "support_qa.jsonl"
BUILD = ROOT / "data" / "build_support_qa.py"
KEYS = {"question", "answer", "fact_id", "split"}


def _rows() -> list[dict]:
    lines = DATA.read_text(encoding="utf-8").splitlines()
    assert lines, "support_qa.jsonl is empty"
    return [json.loads(line) for line in lines]


def _by_fact(rows: list[dict]) -> dict[str, list[dict]]:
    facts: dict[str, list[dict]] = defaultdict(list)
    for row in rows:
        facts[row["fact_id"]].append(row)
    return facts


def test_keys_and_values() -> None:
    for row in _rows():
        assert set(row) == KEYS, row
        for key in KEYS:
            assert isinstance(row[key], str), row
            assert row[key].strip(), row
        assert row["split"] in ("train", "heldout", "validation"), row


def test_fact_count_and_phrasings() -> None:
    facts = _by_fact(_rows())
    assert len(facts) >= 150
    for fact_id, rows in facts.items():
        splits = [row["split"] for row in rows]
        # three to train on, one held out (test), one validation (the confidence fit)
        assert sorted(splits) == ["heldout", "train", "train", "train", "validation"], fact_id


def test_split_rule_heldout_rotates_and_validation_comes_last() -> None:
    for index, rows in enumerate(_by_fact(_rows()).values()):
        splits = [row["split"] for row in rows]
        assert splits.index("heldout") == index % 4, rows[0]["fact_id"]
        assert splits[-1] == "validation", rows[0]["fact_id"]


def test_training_takes_the_validation_rows_and_carves_nothing() -> None:
    from training.data import load_data
    from training.validation import carve_validation

    examples = load_data(DATA).examples
    carve = carve_validation(examples, 0.5)  # a fraction is ignored when the data has them
    assert carve.how == "given" and len(carve.validation) == len(_by_fact(_rows()))
    assert len(carve.train) == 3 * len(carve.validation)
    questions = {e.question for e in carve.validation}
    assert not questions & {e.question for e in examples if e.split != "validation"}


def test_questions_unique() -> None:
    questions = [" ".join(row["question"].lower().split()) for row in _rows()]
    assert len(questions) == len(set(questions))


def test_answers_identical_within_fact_and_distinct_between() -> None:
    facts = _by_fact(_rows())
    answers = []
    for fact_id, rows in facts.items():
        distinct = {row["answer"] for row in rows}
        assert len(distinct) == 1, fact_id
        answers.append(distinct.pop())
    assert len(answers) == len(set(answers))


def test_build_script_reproduces_committed_file(tmp_path: Path) -> None:
    out = tmp_path / "support_qa.jsonl"
    result = subprocess.run(
        [sys.executable, str(BUILD), str(out)], cwd=ROOT, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert out.read_bytes() == DATA.read_bytes(), (
        "data/support_qa.jsonl is stale: run python data/build_support_qa.py"
    )
