"""Load question/answer pairs from a file or a dataset, with one-line errors naming the source.

Sources, chosen by what `source` is:
- `*.csv`: a header row with question, answer (optional context, split, fact_id);
- `*.json`: SQuAD v1.1 / v2.0 (context + question -> first answer; unanswerable skipped);
- a directory or a hub dataset id: `datasets.load_dataset` (see training/hub.py);
- any other file: JSON Lines, one object per line with the CSV's columns.
A row without a split gets `default_split` ("train" unless the caller says otherwise).
"""

from __future__ import annotations

from pathlib import Path

from training import hub, squad, tabular
from training.examples import (
    UNANSWERABLE,
    DataError,
    QAData,
    QAExample,
    split_examples,
)

__all__ = [
    "UNANSWERABLE",
    "DataError",
    "QAData",
    "QAExample",
    "load_data",
    "split_examples",
]


def load_data(source: Path | str, default_split: str = "train") -> QAData:
    """Every row of `source` as QAExample; raise DataError on any bad row or no rows."""
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
