"""Load question/answer pairs from JSONL or CSV, with one-line errors that name file and line.

Columns: question, answer (required); context, split ("train" | "heldout"), fact_id (optional).
A row without a split is a training row.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from training.errors import InputError

REQUIRED = ("question", "answer")
SPLITS = ("train", "heldout")


class DataError(InputError):
    """Unusable training data; the message is one line naming the file (and line) at fault."""


@dataclass(frozen=True)
class QAExample:
    question: str
    answer: str
    context: str = ""
    split: str = "train"
    fact_id: str = ""


def load_examples(path: Path | str) -> list[QAExample]:
    """Every row of a .jsonl or .csv file as QAExample; raise DataError on any bad row."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: no such file")
    if not path.is_file():
        raise DataError(f"{path}: not a file")
    rows = _csv_rows(path) if path.suffix.lower() == ".csv" else _jsonl_rows(path)
    try:
        examples = [_to_example(path, line, row) for line, row in rows]
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not UTF-8 text ({e.reason})") from None
    if not examples:
        raise DataError(f"{path}: no examples (the file is empty)")
    if not any(e.split == "train" for e in examples):
        raise DataError(f"{path}: no rows with split 'train' (nothing to train on)")
    return examples


def split_examples(examples: list[QAExample]) -> tuple[list[QAExample], list[QAExample]]:
    """(train rows, heldout rows)."""
    train = [e for e in examples if e.split == "train"]
    heldout = [e for e in examples if e.split == "heldout"]
    return train, heldout


def _jsonl_rows(path: Path) -> Iterator[tuple[int, dict]]:
    with open(path, encoding="utf-8") as f:
        for line_no, line in enumerate(f, start=1):
            if not line.strip():
                continue  # blank lines (e.g. a trailing newline) are not rows
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(f"{path}:{line_no}: not valid JSON ({e.msg})") from None
            if not isinstance(row, dict):
                raise DataError(f"{path}:{line_no}: expected a JSON object, got {_kind(row)}")
            yield line_no, row


def _csv_rows(path: Path) -> Iterator[tuple[int, dict]]:
    with open(path, encoding="utf-8", newline="") as f:
        reader = csv.DictReader(f)
        columns = reader.fieldnames or []
        if not columns:
            return
        for name in REQUIRED:
            if name not in columns:
                raise DataError(f"{path}: missing column '{name}' (columns: {', '.join(columns)})")
        for row in reader:
            yield reader.line_num, row  # line_num: the line the row ended on, 1-based


def _to_example(path: Path, line: int, row: dict) -> QAExample:
    where = f"{path}:{line}"
    values = {}
    for name in ("question", "answer", "context", "split", "fact_id"):
        value = row.get(name)
        if value is None:
            if name in REQUIRED:
                raise DataError(f"{where}: missing '{name}'")
            value = ""
        if isinstance(value, bool) or not isinstance(value, (str, int, float)):
            raise DataError(f"{where}: '{name}' must be a string, got {_kind(value)}")
        values[name] = str(value).strip()
    for name in REQUIRED:
        if not values[name]:
            raise DataError(f"{where}: empty '{name}'")
    values["split"] = values["split"] or "train"
    if values["split"] not in SPLITS:
        raise DataError(f"{where}: split must be one of {SPLITS}, got {values['split']!r}")
    return QAExample(**values)


def _kind(value: object) -> str:
    return {dict: "an object", list: "an array", type(None): "null"}.get(
        type(value), type(value).__name__
    )
