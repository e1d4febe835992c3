"""The reference side of the quality gate: the checkpoint in PyTorch fp32 (transformers)."""

from __future__ import annotations

import numpy as np

from export.heldout import Encoded


def forced_logits(model, chunk: list[Encoded]) -> list[np.ndarray]:
    """The same positions from one right-padded PyTorch forward (padding comes after them)."""
    import torch

    seqs = [e.prompt + e.target[:-1] for e in chunk]
    width = max(len(s) for s in seqs)
    ids = torch.zeros((len(seqs), width), dtype=torch.long)
    mask = torch.zeros_like(ids)
    for row, seq in enumerate(seqs):
        ids[row, : len(seq)] = torch.tensor(seq)
        mask[row, : len(seq)] = 1
    logits = model(input_ids=ids, attention_mask=mask).logits.float().numpy()  # [n, T, V]
    out = []
    for row, enc in enumerate(chunk):
        first = len(enc.prompt) - 1  # the position that predicts the first target token
        out.append(logits[row, first : first + len(enc.target)])
    return out


def greedy_answers(
    model, chunk: list[Encoded], eos: int, pad: int, max_new: int
) -> list[list[int]]:
    """Batched `generate` with left padding (GPT-2 takes its positions from the mask)."""
    import torch
    from transformers import GenerationConfig

    width = max(len(e.prompt) for e in chunk)
    ids = torch.full((len(chunk), width), pad, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for row, enc in enumerate(chunk):
        ids[row, width - len(enc.prompt) :] = torch.tensor(enc.prompt)
        mask[row, width - len(enc.prompt) :] = 1
    config = GenerationConfig(  # explicit: the checkpoint's own may carry sampling settings
        do_sample=False,
        num_beams=1,
        max_new_tokens=max_new,
        bos_token_id=model.config.bos_token_id,
        eos_token_id=eos,
        pad_token_id=pad,
    )
    out = model.generate(input_ids=ids, attention_mask=mask, generation_config=config)
    answers = []
    for row in out[:, width:].tolist():
        answers.append(row[: row.index(eos)] if eos in row else row)
    return answers
