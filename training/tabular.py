"""JSON Lines and CSV files of question/answer rows (see training/data.py for the columns)."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from pathlib import Path

from training.examples import REQUIRED, DataError, QAData, kind, to_example


def load(path: Path, default_split: str = "train") -> QAData:
    rows = _csv_rows(path) if path.suffix.lower() == ".csv" else _jsonl_rows(path)
    try:
        examples = [to_example(f"{path}:{line}", row, default_split) for line, row in rows]
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not UTF-8 text ({e.reason})") from None
    return QAData(source=str(path), examples=examples)


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
                raise DataError(f"{path}:{line_no}: expected a JSON object, got {kind(row)}")
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
