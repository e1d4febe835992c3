"""The prompt template: one, used identically by training, evaluation, export checks and `Answer`.

A training checkpoint stores it as `kvserve_prompt.json`; the export copies it into the manifest.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

PROMPT_FILE = "kvserve_prompt.json"  # the template as stored in a training checkpoint


@dataclass(frozen=True)
class PromptTemplate:
    """One template, used identically by training, evaluation, export checks and `Answer`."""

    question: str = "Question: {question}\nAnswer:"
    with_context: str = "Context: {context}\nQuestion: {question}\nAnswer:"

    def format(self, question: str, context: str = "") -> str:
        if context:
            return self.with_context.format(question=question.strip(), context=context.strip())
        return self.question.format(question=question.strip())

    def fit(
        self, question: str, context: str, max_tokens: int, count_tokens: Callable[[str], int]
    ) -> str | None:
        """The prompt in at most `max_tokens`, dropping whole words from the context's start.

        The question is never cut: None when even the prompt without context is too long.
        `count_tokens` is the model's tokenizer (prompt text -> number of tokens).
        """
        if count_tokens(self.format(question, context)) <= max_tokens:
            return self.format(question, context)
        words = context.split()
        lo, hi = 1, len(words)  # find the fewest words to drop (hi = all: no context)
        while lo < hi:
            mid = (lo + hi) // 2
            if count_tokens(self.format(question, " ".join(words[mid:]))) <= max_tokens:
                hi = mid
            else:
                lo = mid + 1
        prompt = self.format(question, " ".join(words[hi:]))
        return prompt if count_tokens(prompt) <= max_tokens else None

    def to_dict(self) -> dict[str, str]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> PromptTemplate:
        return cls(**{k: data[k] for k in ("question", "with_context") if k in data})

    def save(self, directory: Path) -> None:
        (Path(directory) / PROMPT_FILE).write_text(json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def load(cls, directory: Path) -> PromptTemplate:
        """The template saved in a checkpoint dir; the default when the dir has none."""
        path = Path(directory) / PROMPT_FILE
        return cls.from_dict(json.loads(path.read_text())) if path.exists() else cls()
