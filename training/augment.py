"""Cheap, deterministic data augmentation for question/answer pairs without context.

A model trained from scratch on three phrasings per fact mostly learns those exact strings.
Two kinds of extra training rows teach it to key on content words instead (both sometimes
with a distractor or two: question words common to many facts, so the answer must come from
the words that single the fact out):
- noisy copies of each train question: words dropped at random, sometimes lowercased and
  stripped of punctuation (users type "serial number location" or "wifi" as often as full
  questions with "Wi-Fi");
- keyword questions made from the answer itself: a few of its content words, in order,
  sometimes after a common question opener ("How do I ..."). A user asking about a fact
  tends to reuse the answer's own words ("founded", "warranty", "Wi-Fi").
Only train rows are used, never heldout ones. Rows with a context are left alone (their
answers are spans of the context, not facts to retrieve).
"""

from __future__ import annotations

import random
import re
from collections.abc import Iterable
from dataclasses import dataclass, replace

from training.examples import QAExample

# Words too common to identify a fact; the rest of an answer is its "content".
_STOPWORDS = """a an the and or but if of to in on at by for from with without into onto over
under is are was were be been being has have had do does did can could will would should may
might must shall it its this that these those there their they them you your yours i me my we
our us he she his her so as than then also not no yes up out about after before while until
each any all some more most other only own same such too very just"""
STOPWORDS = frozenset(_STOPWORDS.split())
_QUESTION_WORDS = "how what what's where when why which who can is does do will much many long"
QUESTION_WORDS = frozenset(_QUESTION_WORDS.split())
_NOT_CONTENT = STOPWORDS | QUESTION_WORDS
_WORD = re.compile(r"[A-Za-z0-9][A-Za-z0-9'\-\.]*[A-Za-z0-9]|[A-Za-z0-9]")


@dataclass(frozen=True)
class Augmentation:
    """How many extra rows to make; all zero (the default) means no augmentation."""

    question_copies: int = 0  # noisy copies of every train question
    answer_questions: int = 0  # keyword questions per distinct answer
    word_dropout: float = 0.2  # chance to drop each word of a noisy copy
    lowercase: float = 0.5  # chance a new question is lowercased, punctuation stripped
    max_keywords: int = 4  # keyword questions take 1..max_keywords content words
    distractors: float = 0.0  # chance a new question gets 1-2 common words of other facts

    @property
    def enabled(self) -> bool:
        return self.question_copies > 0 or self.answer_questions > 0


def augment(rows: list[QAExample], spec: Augmentation, seed: int) -> list[QAExample]:
    """The extra rows for `rows` (train rows), deterministic for a given seed."""
    rng = random.Random(seed)
    plain = [r for r in rows if r.split == "train" and not r.context]
    openers = sorted({_opener(r.question) for r in plain} - {""})
    common = _common_words(plain)
    extra: list[QAExample] = []
    for row in plain:
        for _ in range(spec.question_copies):
            question = _noisy(row.question, spec, rng)
            extra.append(replace(row, question=_distract(question, common, spec, rng)))
    by_answer = {r.answer: r for r in plain}  # one representative row per distinct answer
    words_of = {answer: content_words(answer) for answer in by_answer}
    rarity = {w: 1.0 / n for w, n in _answers_per_word(words_of.items()).items()}
    for answer, row in by_answer.items():
        words = words_of[answer]
        for _ in range(spec.answer_questions if words else 0):
            question = _distract(_keywords(words, rarity, spec, rng), common, spec, rng)
            if openers and rng.random() < 0.5:
                question = f"{rng.choice(openers)} {question}?"
            extra.append(replace(row, question=_maybe_lower(question, spec, rng)))
    return extra


def content_words(text: str) -> list[str]:
    """The words of `text` that are not stopwords or question words, in order, unpunctuated."""
    return [w for w in _WORD.findall(text) if w.lower() not in _NOT_CONTENT]


def _noisy(question: str, spec: Augmentation, rng: random.Random) -> str:
    words = question.split()
    kept = [w for w in words if rng.random() >= spec.word_dropout] or [rng.choice(words)]
    return _maybe_lower(" ".join(kept), spec, rng)


def _common_words(rows: list[QAExample]) -> tuple[list[str], list[int]]:
    """Question words asked about 3+ different facts, weighted by how many: the generic ones."""
    counts = _answers_per_word((r.answer, content_words(r.question)) for r in rows)
    words = sorted(w for w, n in counts.items() if n >= 3)
    return words, [counts[w] for w in words]


def _answers_per_word(pairs: Iterable[tuple[str, list[str]]]) -> dict[str, int]:
    """For each lowercased word, how many distinct answers have it among their words.

    Over the answers' own words it is rarity ("Lumo" is in many answers and says little,
    "Duluth" a lot); over the questions' words, how generic a question word is."""
    answers_of: dict[str, set[str]] = {}
    for answer, words in pairs:
        for w in words:
            answers_of.setdefault(w.lower(), set()).add(answer)
    return {w: len(answers) for w, answers in answers_of.items()}


def _distract(
    question: str, common: tuple[list[str], list[int]], spec: Augmentation, rng: random.Random
) -> str:
    """Sometimes insert words that are common across facts ("code", "meaning"): the answer
    must come from the words that single out the fact, not from whatever else is there."""
    words, weights = common
    if spec.distractors <= 0 or not words or rng.random() >= spec.distractors:
        return question
    tokens = question.split()
    for extra in rng.choices(words, weights, k=rng.randint(1, 2)):
        tokens.insert(rng.randint(0, len(tokens)), extra)
    return " ".join(tokens)


def _keywords(
    words: list[str], rarity: dict[str, float], spec: Augmentation, rng: random.Random
) -> str:
    """1..max_keywords of the answer's words, rarer ones likelier, in the answer's order."""
    k = rng.randint(1, min(spec.max_keywords, len(words)))
    weights = [rarity[w.lower()] for w in words]
    picked: set[int] = set()
    while len(picked) < k:
        picked.add(rng.choices(range(len(words)), weights)[0])
    return " ".join(words[i] for i in sorted(picked))


def _maybe_lower(question: str, spec: Augmentation, rng: random.Random) -> str:
    """Sometimes typed the lazy way: lowercase, no punctuation, "Wi-Fi" as wifi or "wi fi"."""
    if rng.random() >= spec.lowercase:
        return question
    lazy = " ".join(_WORD.findall(question.lower())) or question
    return lazy.replace("-", rng.choice(("-", "", " ")))


def _opener(question: str) -> str:
    """A question's leading question/function words ("How do I", "What's the"), or ""."""
    words = question.split()
    if not words or words[0].lower() not in QUESTION_WORDS:
        return ""
    n = 1
    while n < min(len(words) - 1, 3) and words[n].lower() in STOPWORDS | QUESTION_WORDS:
        n += 1
    return " ".join(words[:n])
