"""SQuAD v1.1 / v2.0 JSON: every question with its paragraph as context and its first answer.

v2.0's unanswerable questions (is_impossible, or no answers) have nothing to learn to say, so
they are skipped and counted. Errors name the file and the JSON path of the bad item.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

from training.examples import UNANSWERABLE, DataError, QAData, QAExample, kind, to_example


def load(path: Path, default_split: str = "train") -> QAData:
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not UTF-8 text ({e.reason})") from None
    except json.JSONDecodeError as e:
        raise DataError(f"{path}:{e.lineno}: not valid JSON ({e.msg})") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("data"), list):
        raise DataError(f"{path}: not SQuAD JSON (expected an object with a 'data' list)")
    examples: list[QAExample] = []
    skipped: Counter[str] = Counter()
    for i, article in enumerate(doc["data"]):
        for j, paragraph in enumerate(_items(path, f"data[{i}]", article, "paragraphs")):
            where = f"data[{i}].paragraphs[{j}]"
            context = paragraph.get("context")
            for k, qa in enumerate(_items(path, where, paragraph, "qas")):
                answer = _first_answer(path, f"{where}.qas[{k}]", qa)
                if answer is None:
                    skipped[UNANSWERABLE] += 1
                    continue
                row = {"question": qa.get("question"), "answer": answer, "context": context}
                row["fact_id"] = str(qa.get("id", ""))
                examples.append(to_example(f"{path}: {where}.qas[{k}]", row, default_split))
    return QAData(source=str(path), examples=examples, skipped=skipped)


def _items(path: Path, where: str, parent: object, key: str) -> list[dict]:
    """parent[key] checked to be a list of objects."""
    if not isinstance(parent, dict):
        raise DataError(f"{path}: {where}: expected an object, got {kind(parent)}")
    items = parent.get(key)
    if not isinstance(items, list):
        raise DataError(f"{path}: {where}: missing '{key}' list")
    for n, item in enumerate(items):
        if not isinstance(item, dict):
            raise DataError(f"{path}: {where}.{key}[{n}]: expected an object, got {kind(item)}")
    return items


def _first_answer(path: Path, where: str, qa: dict) -> str | None:
    """The first answer's text; None when the question is unanswerable."""
    if qa.get("is_impossible"):
        return None
    answers = qa.get("answers")
    if not isinstance(answers, list):
        raise DataError(f"{path}: {where}: missing 'answers' list")
    if not answers:
        return None  # v2 marks unanswerable with an empty list too
    first = answers[0]
    if not isinstance(first, dict) or not isinstance(first.get("text"), str):
        raise DataError(f"{path}: {where}.answers[0]: expected an object with a 'text' string")
    return first["text"]
