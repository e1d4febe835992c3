"""Greedy-decode answers and score exact match: does the model say the reference answer?

The same prompt template and tokenization as training and serving; prompts are left-padded
into batches (generate() derives position ids from the attention mask, so padding is inert).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from tqdm.auto import tqdm
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from export.manifest import PromptTemplate
from training.data import QAExample
from training.formatting import prompt_text


@dataclass(frozen=True)
class ExactMatch:
    correct: int
    total: int

    @property
    def fraction(self) -> float:
        return self.correct / self.total if self.total else 0.0


@torch.no_grad()
def generate_answers(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    template: PromptTemplate,
    examples: list[QAExample],
    max_new_tokens: int = 32,
    batch_size: int = 64,
    desc: str | None = None,
) -> list[str]:
    """Greedy answers (stopped at eos, stripped), one per example, in order.

    `desc` shows a progress bar with that label (None: no bar).
    """
    model.eval()
    eos, pad = tokenizer.eos_token_id, tokenizer.pad_token_id
    answers: list[str] = []
    starts = range(0, len(examples), batch_size)
    for start in tqdm(starts, desc=desc, disable=desc is None, leave=False):
        batch = examples[start : start + batch_size]
        prompts = [
            tokenizer.encode(prompt_text(template, e), add_special_tokens=False) for e in batch
        ]
        input_ids, attention_mask = _left_pad(prompts, pad)  # [B, T]
        out = model.generate(
            input_ids=input_ids.to(model.device),
            attention_mask=attention_mask.to(model.device),
            max_new_tokens=max_new_tokens,
            do_sample=False,
            eos_token_id=eos,
            pad_token_id=pad,
        )
        for row in out[:, input_ids.shape[1] :].tolist():  # [B, new]
            row = row[: row.index(eos)] if eos in row else row
            answers.append(tokenizer.decode(row, skip_special_tokens=True).strip())
    return answers


def exact_match(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    template: PromptTemplate,
    examples: list[QAExample],
    max_new_tokens: int = 32,
    desc: str | None = None,
) -> ExactMatch:
    answers = generate_answers(model, tokenizer, template, examples, max_new_tokens, desc=desc)
    correct = sum(a == e.answer.strip() for a, e in zip(answers, examples, strict=True))
    return ExactMatch(correct=correct, total=len(examples))


def _left_pad(rows: list[list[int]], pad: int) -> tuple[torch.Tensor, torch.Tensor]:
    length = max(len(r) for r in rows)
    ids = [[pad] * (length - len(r)) + r for r in rows]
    mask = [[0] * (length - len(r)) + [1] * len(r) for r in rows]
    return torch.tensor(ids, dtype=torch.long), torch.tensor(mask, dtype=torch.long)
