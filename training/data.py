"""Load question/answer pairs from a file or a dataset, with one-line errors naming the source.

Sources, chosen by what `source` is:
- `*.csv`: a header row with question, answer (optional context, split, fact_id);
- `*.json`: SQuAD v1.1 / v2.0 (context + question -> first answer; unanswerable skipped);
- a directory or a hub dataset id: `datasets.load_dataset` (see training/hub.py);
- any other file: JSON Lines, one object per line with the CSV's columns.
A row without a split gets `default_split` ("train" unless the caller says otherwise).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from training.errors import InputError

REQUIRED = ("question", "answer")
OPTIONAL = ("context", "split", "fact_id")
SPLITS = ("train", "heldout")
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


def load_data(source: Path | str, default_split: str = "train") -> QAData:
    """Every row of `source` as QAExample; raise DataError on any bad row or no rows."""
    from training import hub, squad, tabular  # each imports only what its format needs

    path = Path(source)
    if path.is_dir() or (not path.exists() and hub.looks_like_hub_id(str(source))):
        data = hub.load(str(source), default_split)
    elif not path.exists():
        raise DataError(f"{path}: no such file")
    elif not path.is_file():
        raise DataError(f"{path}: not a file")
    elif path.suffix.lower() == ".json":
        data = squad.load(path, default_split)
    else:
        data = tabular.load(path, default_split)
    if not data.examples:
        why = "every row was skipped" if data.skipped else "the file is empty"
        raise DataError(f"{data.source}: no examples ({why})")
    return data


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
