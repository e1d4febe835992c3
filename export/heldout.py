"""The held-out questions the quality gate scores an export on, read and tokenized.

Read straight from the training data file (JSONL or CSV rows with question, answer, optional
context and split): only rows with split == "heldout", the rows training kept out. export/ does
not import training/ (the stages hand off files, not code), hence this small reader.
"""

from __future__ import annotations

import csv
import json
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from artifact import PromptTemplate
from export import ExportError

DEFAULT_DATA = Path(__file__).resolve().parents[1] / "data" / "support_qa.jsonl"
HELDOUT = "heldout"


@dataclass(frozen=True)
class QASample:
    question: str
    answer: str
    context: str = ""


@dataclass(frozen=True)
class Encoded:
    prompt: list[int]
    target: list[int]  # " " + answer, then eos


def encode_sample(
    encode: Callable[[str], list[int]],
    template: PromptTemplate,
    sample: QASample,
    eos: int,
    room: int,
) -> Encoded | None:
    """Tokens as training builds them: the prompt alone, then " " + answer + eos.

    The prompt fits in `room` minus the target (the context loses words from its start);
    None when even the question cannot fit."""

    def count(text: str) -> int:
        return len(encode(text))

    target = [*encode(" " + sample.answer.strip()), eos]
    text = template.fit(sample.question, sample.context, room - len(target), count)
    return None if text is None else Encoded(encode(text), target)


def load_heldout(path: Path, limit: int | None = None) -> list[QASample]:
    """The held-out rows of `path`; with `limit`, that many spread evenly over the file."""
    path = Path(path)
    rows = _read_rows(path)
    samples = [_sample(path, i, row) for i, row in enumerate(rows, 1) if _is_heldout(row)]
    if not samples:
        raise ExportError(f"{path}: no held-out rows (split == {HELDOUT!r}) to check quality on")
    return _spread(samples, limit)


def load_calibration(path: Path, limit: int = 128) -> list[QASample]:
    """Rows to calibrate an int8 KV cache on: the training rows (not the gate's held-out
    ones; all rows when the file has no others), up to `limit`, spread over the file."""
    path = Path(path)
    rows = [r for r in _read_rows(path) if isinstance(r, dict)]
    usable = [r for r in rows if all(isinstance(r.get(k), str) for k in ("question", "answer"))]
    chosen = [r for r in usable if not _is_heldout(r)]
    if not chosen and usable:
        chosen = usable
        print(
            f"warning: {path} has only held-out rows; the int8 KV cache is calibrated "
            "on the rows the quality gate then scores (an optimistic gate)",
            file=sys.stderr,
        )
    if not chosen:
        raise ExportError(f"{path}: no question/answer rows to calibrate the int8 KV cache on")
    picked = _spread(chosen, limit)
    return [QASample(r["question"], r["answer"], str(r.get("context") or "")) for r in picked]


def _spread(items: list, limit: int | None) -> list:
    """`limit` items evenly spaced over the file (every topic, not its head); all if fewer."""
    if limit is None or not 0 < limit < len(items):
        return items
    stride = len(items) / limit
    return [items[int(i * stride)] for i in range(limit)]


def _read_rows(path: Path) -> list[dict]:
    if not path.is_file():
        raise ExportError(f"{path}: no such data file (--data / KVSERVE_DATA)")
    try:
        if path.suffix.lower() == ".csv":
            with path.open(newline="", encoding="utf-8") as f:
                return list(csv.DictReader(f))
        lines = path.read_text(encoding="utf-8").splitlines()
        return [json.loads(line) for line in lines if line.strip()]
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, csv.Error) as e:
        raise ExportError(f"{path}: unreadable as JSONL or CSV ({e})") from None


def _is_heldout(row: object) -> bool:
    return isinstance(row, dict) and str(row.get("split") or "").strip() == HELDOUT


def _sample(path: Path, line: int, row: dict) -> QASample:
    question, answer = row.get("question"), row.get("answer")
    if not isinstance(question, str) or not isinstance(answer, str) or not answer.strip():
        raise ExportError(f"{path}:{line}: a held-out row needs question and answer strings")
    return QASample(question, answer, str(row.get("context") or ""))
