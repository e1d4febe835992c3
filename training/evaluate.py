"""Run a trained model over QA examples: greedy answers with their token logprobs, and
perplexity of the references.

The same prompt template, context truncation and tokenization as training and serving.
Prompts are left-padded into batches (generate() derives position ids from the attention
mask, so padding is inert); batches are formed from similar lengths to waste little padding.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from artifact import PromptTemplate
from training.collator import PadCollator
from training.confidence import mean_logprob
from training.examples import QAExample
from training.formatting import IGNORE_INDEX, encode_example, fitted_prompt


@dataclass(frozen=True)
class ScoredAnswer:
    """A greedy answer and the logprob of each of its tokens (stop token not included)."""

    text: str
    token_logprobs: tuple[float, ...] = ()

    @property
    def mean_logprob(self) -> float | None:
        return mean_logprob(self.token_logprobs)


@torch.no_grad()
def generate_scored_answers(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    template: PromptTemplate,
    examples: list[QAExample],
    max_new_tokens: int = 48,
    batch_size: int = 64,
    desc: str | None = None,
) -> list[ScoredAnswer]:
    """Greedy answers (stopped at eos, stripped) with their token logprobs, in order.

    The logprobs are the model's own distribution: log-softmax of the raw logits (not the
    processed scores) at each chosen token, in fp32. A prompt that cannot fit even without
    its context gets the answer "" with no tokens. `desc` shows a progress bar with that
    label (None: no bar).
    """
    model.eval()
    eos, pad = tokenizer.eos_token_id, tokenizer.pad_token_id
    budget = model.config.n_positions - max_new_tokens
    prompts = [fitted_prompt(tokenizer, template, e, budget) or [] for e in examples]
    order = sorted((i for i, p in enumerate(prompts) if p), key=lambda i: len(prompts[i]))
    answers = [ScoredAnswer("")] * len(examples)
    starts = range(0, len(order), batch_size)
    # disable=None: no bar unless stderr is a terminal (logs get the scorecard lines only)
    quiet = True if desc is None else None
    for start in tqdm(starts, desc=desc, disable=quiet, leave=False):
        rows = order[start : start + batch_size]
        input_ids, attention_mask = _left_pad([prompts[i] for i in rows], pad)  # [B, T]
        out = model.generate(
            input_ids=input_ids.to(model.device),
            attention_mask=attention_mask.to(model.device),
            max_new_tokens=max_new_tokens,
            do_sample=False,
            eos_token_id=eos,
            pad_token_id=pad,
            output_logits=True,
            return_dict_in_generate=True,
        )
        new_ids = out.sequences[:, input_ids.shape[1] :]  # [B, new]
        logits = torch.stack(out.logits, dim=1).float()  # [B, new, V], raw
        chosen = torch.log_softmax(logits, dim=-1).gather(-1, new_ids[..., None])[..., 0]
        for i, new, logprobs in zip(rows, new_ids.tolist(), chosen.tolist(), strict=True):
            n = new.index(eos) if eos in new else len(new)
            text = tokenizer.decode(new[:n], skip_special_tokens=True).strip()
            answers[i] = ScoredAnswer(text, tuple(logprobs[:n]))
    return answers


@torch.no_grad()
def perplexity(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    template: PromptTemplate,
    examples: list[QAExample],
    batch_size: int = 64,
) -> float | None:
    """exp(mean NLL) of the reference answer tokens + eos given their prompts (teacher forced).

    The same tokens the training loss covers (no label smoothing); None with no examples.
    """
    model.eval()
    n_pos = model.config.n_positions
    rows = [encode_example(tokenizer, template, e, n_pos) for e in examples]
    rows = [asdict(r) for r in rows if r is not None]
    collate = PadCollator(tokenizer.pad_token_id)
    total, count = 0.0, 0
    for start in range(0, len(rows), batch_size):
        batch = {
            k: v.to(model.device) for k, v in collate(rows[start : start + batch_size]).items()
        }
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        labels = batch["labels"][:, 1:]  # token t predicts t+1: [B, T-1]
        nll = F.cross_entropy(
            logits[:, :-1].flatten(0, 1).float(),
            labels.flatten(),
            ignore_index=IGNORE_INDEX,
            reduction="sum",
        )
        total += nll.item()
        count += int((labels != IGNORE_INDEX).sum())
    return math.exp(total / count) if count else None


def _left_pad(rows: list[list[int]], pad: int) -> tuple[torch.Tensor, torch.Tensor]:
    length = max(len(r) for r in rows)
    ids = [[pad] * (length - len(r)) + r for r in rows]
    mask = [[0] * (length - len(r)) + [1] * len(r) for r in rows]
    return torch.tensor(ids, dtype=torch.long), torch.tensor(mask, dtype=torch.long)
