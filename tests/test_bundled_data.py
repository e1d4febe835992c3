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
        assert row["split"] in ("train", "heldout"), row


def test_fact_count_and_phrasings() -> None:
    facts = _by_fact(_rows())
    assert len(facts) >= 150
    for fact_id, rows in facts.items():
        assert len(rows) >= 3, fact_id
        splits = [row["split"] for row in rows]
        assert "train" in splits, fact_id
        assert "heldout" in splits, fact_id


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
