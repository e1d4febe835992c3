"""Turn one QA pair into model inputs: prompt tokens, then answer tokens + eos.

Loss is only on what the model must generate: the labels are -100 on the prompt (and, after
collation, on padding). Prompt and target are tokenized separately, exactly as serving sees
them: the server tokenizes the prompt alone and the model continues with " answer<eos>".
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from export.manifest import PromptTemplate
from training.data import QAExample

IGNORE_INDEX = -100  # the label value torch's cross-entropy skips


class Encoder(Protocol):
    """The slice of a HF tokenizer used here (a fake works in unit tests)."""

    eos_token_id: int | None

    def encode(self, text: str, add_special_tokens: bool = ...) -> list[int]: ...


@dataclass(frozen=True)
class Encoded:
    input_ids: list[int]
    labels: list[int]
    attention_mask: list[int]


def prompt_text(template: PromptTemplate, example: QAExample) -> str:
    return template.format(example.question, example.context)


def target_text(example: QAExample) -> str:
    """The continuation after "Answer:"; the leading space makes it a separate word token."""
    return " " + example.answer.strip()


def encode_example(
    tokenizer: Encoder, template: PromptTemplate, example: QAExample, max_length: int
) -> Encoded | None:
    """Prompt + target + eos, labels masked on the prompt; None if the prompt alone is too long.

    A too-long target is cut at max_length (losing the eos); a row whose prompt fills the
    window has no label to learn from, so the caller drops it.
    """
    if tokenizer.eos_token_id is None:
        raise ValueError("tokenizer has no eos token")
    prompt = tokenizer.encode(prompt_text(template, example), add_special_tokens=False)
    target = tokenizer.encode(target_text(example), add_special_tokens=False)
    target = [*target, tokenizer.eos_token_id]
    if len(prompt) >= max_length:
        return None
    input_ids = (prompt + target)[:max_length]
    labels = ([IGNORE_INDEX] * len(prompt) + target)[:max_length]
    return Encoded(input_ids=input_ids, labels=labels, attention_mask=[1] * len(input_ids))
