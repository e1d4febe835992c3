"""Datasets that `datasets.load_dataset` reads: a hub id ("rajpurkar/squad") or a local dir.

Columns: question, and answer (a string) or SQuAD-style answers ({"text": [...]}, first one
used; empty = unanswerable, skipped and counted); context optional. Split names map to ours:
train -> train; validation/valid/dev (or test, when there is no validation split) -> heldout.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable

from training.examples import UNANSWERABLE, DataError, QAData, QAExample, to_example

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.\-]*(/[\w.\-]+)?$")
_FILE_SUFFIXES = (".jsonl", ".ndjson", ".json", ".csv", ".tsv", ".txt")
_HELDOUT_NAMES = ("validation", "valid", "dev", "test")


def looks_like_hub_id(source: str) -> bool:
    """'squad' or 'owner/name', not something that names a missing local file."""
    return bool(_HUB_ID.match(source)) and not source.lower().endswith(_FILE_SUFFIXES)


def load(source: str, default_split: str = "train") -> QAData:
    import datasets  # heavy; only when a dataset is asked for

    try:
        splits = datasets.load_dataset(source)
    except Exception as e:  # network, missing repo, bad files: all "cannot load"
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise DataError(f"{source}: cannot load dataset ({first})") from None
    examples: list[QAExample] = []
    skipped: Counter[str] = Counter()
    for name, ours in split_map(list(splits), default_split).items():
        columns = splits[name].column_names
        if "question" not in columns or not {"answer", "answers"} & set(columns):
            have = ", ".join(columns)
            raise DataError(f"{source}[{name}]: needs 'question' and 'answer(s)' (has: {have})")
        examples += _rows(source, name, splits[name], ours, skipped)
    return QAData(source=source, examples=examples, skipped=skipped)


def split_map(names: list[str], default_split: str = "train") -> dict[str, str]:
    """Dataset split name -> ours. Asked for heldout data only, the train split is left out."""
    heldout = next((n for n in _HELDOUT_NAMES if n in names), None)
    mapping = {"train": "train"} if "train" in names and default_split == "train" else {}
    if heldout is not None:
        mapping[heldout] = "heldout"
    if not mapping and names:  # one oddly named split: take it as the caller's split
        mapping[names[0]] = default_split
    return mapping


def _rows(
    source: str, name: str, rows: Iterable[dict], split: str, skipped: Counter[str]
) -> list[QAExample]:
    examples = []
    for i, row in enumerate(rows):
        where = f"{source}[{name}] row {i}"
        answer = row.get("answer") if "answer" in row else _first(where, row.get("answers"))
        if answer is None:
            skipped[UNANSWERABLE] += 1
            continue
        fields = {"question": row.get("question"), "answer": answer, "split": split}
        fields["context"], fields["fact_id"] = row.get("context"), row.get("id")
        examples.append(to_example(where, fields, split))
    return examples


def _first(where: str, answers: object) -> str | None:
    """The first of SQuAD-style answers: {"text": [...]} or a plain list; None if none."""
    texts = answers.get("text") if isinstance(answers, dict) else answers
    if not isinstance(texts, list):
        raise DataError(f"{where}: 'answers' must be {{'text': [...]}} or a list")
    return str(texts[0]) if texts else None
