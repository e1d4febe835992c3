"""Turn one QA pair into model inputs: prompt tokens, then answer tokens + eos.

Loss is only on what the model must generate: the labels are -100 on the prompt (and, after
collation, on padding). Prompt and target are tokenized separately, exactly as serving sees
them: the server tokenizes the prompt alone and the model continues with " answer<eos>".
A context too long for the window loses words from its start; the question is never cut.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from artifact import PromptTemplate
from training.examples import QAExample

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
    """The whole prompt, context uncut (for tokenizer training and short contexts)."""
    return template.format(example.question, example.context)


def fitted_prompt(
    tokenizer: Encoder, template: PromptTemplate, example: QAExample, max_tokens: int
) -> list[int] | None:
    """Prompt tokens in at most max_tokens (context cut from the left); None if impossible."""
    text = template.fit(
        example.question,
        example.context,
        max_tokens,
        lambda s: len(tokenizer.encode(s, add_special_tokens=False)),
    )
    return None if text is None else tokenizer.encode(text, add_special_tokens=False)


def target_text(example: QAExample) -> str:
    """The continuation after "Answer:"; the leading space makes it a separate word token."""
    return " " + example.answer.strip()


def encode_example(
    tokenizer: Encoder, template: PromptTemplate, example: QAExample, max_length: int
) -> Encoded | None:
    """Prompt + target + eos, labels masked on the prompt; None if the question can't fit.

    The context is cut from the left so that the whole target fits. A target too long even
    for a context-free prompt is cut at max_length (losing the eos); a row whose prompt
    alone fills the window has no label to learn from, so the caller drops it.
    """
    if tokenizer.eos_token_id is None:
        raise ValueError("tokenizer has no eos token")
    target = tokenizer.encode(target_text(example), add_special_tokens=False)
    target = [*target, tokenizer.eos_token_id]
    prompt = fitted_prompt(tokenizer, template, example, max_length - len(target))
    if prompt is None:  # the answer is very long: keep the question, cut the answer instead
        prompt = fitted_prompt(tokenizer, template, example, max_length - 1)
    if prompt is None:
        return None
    input_ids = (prompt + target)[:max_length]
    labels = ([IGNORE_INDEX] * len(prompt) + target)[:max_length]
    return Encoded(input_ids=input_ids, labels=labels, attention_mask=[1] * len(input_ids))
