"""The validation part: rows the model does not train on, for the confidence calibration and
for choosing the best epoch, so that the held-out (test) rows are only ever scored.

Data may name it (split=validation). When it does not, it is carved from the train rows,
deterministically (a hash, no seed: every run on the same data carves the same rows). For
the calibration to carry over to held-out questions, validation questions must be like them:
new phrasings of facts the model did learn. So, where facts have several train phrasings
(the bundled data: three per fact, grouped by fact_id, or else by identical answer), one
phrasing of a share of the facts is set aside and the fact keeps its other phrasings. With
no such groups (e.g. SQuAD: one question per answer), a share of the rows is set aside.
Too small a part for a calibration (under MIN_ROWS) is not carved at all.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, replace

from training.examples import QAExample

VALIDATION = "validation"
# of the facts (or rows) that can give one up. Off by default: on the bundled data (before it
# had its own split=validation rows) a carve of 0.5 cost the demo model's held-out F1
# (0.37 -> 0.29), since those facts kept two train phrasings of three (docs/confidence.md)
DEFAULT_FRACTION = 0.0
MIN_ROWS = 20  # fewer validation answers than this cannot fit a curve and a threshold


@dataclass(frozen=True)
class Carve:
    """Which rows stay train rows and which became validation rows, and how."""

    train: list[QAExample]
    validation: list[QAExample]
    how: str  # "given" | "facts" | "rows" | "none"


def carve_validation(rows: list[QAExample], fraction: float = DEFAULT_FRACTION) -> Carve:
    """Split train rows into (train, validation); rows with split=validation are kept as such
    and nothing is carved. fraction <= 0 carves nothing."""
    given = [r for r in rows if r.split == VALIDATION]
    train = [r for r in rows if r.split == "train"]
    if given:
        return Carve(train, given, "given")
    if fraction <= 0:
        return Carve(train, [], "none")
    groups: dict[str, list[int]] = {}
    for i, row in enumerate(train):
        groups.setdefault(_fact_key(row), []).append(i)
    several = {k: v for k, v in groups.items() if len(v) >= 2}
    pool, how = (several, "facts") if several else (groups, "rows")
    count = round(min(fraction, 1.0) * len(pool))
    if how == "rows":
        count = min(count, len(pool) - 1)  # something must be left to train on
    if count < MIN_ROWS:
        return Carve(train, [], "none")
    picked = sorted(pool, key=_digest)[:count]
    # within a fact, the phrasing with the smallest hash: styles come out mixed, as held-out
    taken = {min(pool[k], key=lambda i: _digest(train[i].question)) for k in picked}
    validation = [replace(train[i], split=VALIDATION) for i in sorted(taken)]
    kept = [r for i, r in enumerate(train) if i not in taken]
    return Carve(kept, validation, how)


def _fact_key(row: QAExample) -> str:
    return f"id:{row.fact_id}" if row.fact_id else f"answer:{row.context}\n{row.answer}"


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()
