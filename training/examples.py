"""One question/answer row as training sees it, and the checks every source's rows go through.

The readers (training/tabular.py, squad.py, hub.py) turn their format's rows into dicts and
hand them to `to_example`; training/data.py picks the reader for a source.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from training.errors import InputError

REQUIRED = ("question", "answer")
OPTIONAL = ("context", "split", "fact_id")
SPLITS = ("train", "heldout", "validation")  # validation: see training/validation.py
UNANSWERABLE = "unanswerable (no answer given)"  # the skip reason for SQuAD v2-style rows


class DataError(InputError):
    """Unusable training data; the message is one line naming the file (and line) at fault."""


@dataclass(frozen=True)
class QAExample:
    question: str
    answer: str
    context: str = ""
    split: str = "train"
    fact_id: str = ""


@dataclass
class QAData:
    """The usable rows of one source and what was skipped (reason -> count)."""

    source: str
    examples: list[QAExample]
    skipped: Counter[str] = field(default_factory=Counter)


def split_examples(examples: list[QAExample]) -> tuple[list[QAExample], list[QAExample]]:
    """(train rows, heldout rows)."""
    train = [e for e in examples if e.split == "train"]
    heldout = [e for e in examples if e.split == "heldout"]
    return train, heldout


def to_example(where: str, row: dict, default_split: str = "train") -> QAExample:
    """Check one row (a dict of column -> value) and make it a QAExample; `where` names it."""
    values = {}
    for name in REQUIRED + OPTIONAL:
        value = row.get(name)
        if value is None:
            if name in REQUIRED:
                raise DataError(f"{where}: missing '{name}'")
            value = ""
        if isinstance(value, bool) or not isinstance(value, (str, int, float)):
            raise DataError(f"{where}: '{name}' must be a string, got {kind(value)}")
        values[name] = str(value).strip()
    for name in REQUIRED:
        if not values[name]:
            raise DataError(f"{where}: empty '{name}'")
    values["split"] = values["split"] or default_split
    if values["split"] not in SPLITS:
        raise DataError(f"{where}: split must be one of {SPLITS}, got {values['split']!r}")
    return QAExample(**values)


def kind(value: object) -> str:
    """How an error message names a JSON value's type."""
    return {dict: "an object", list: "an array", type(None): "null"}.get(
        type(value), type(value).__name__
    )
