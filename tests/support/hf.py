"""HF transformers as the reference for kvserve's logprobs: log-softmax of the checkpoint's
own logits, and the prompts the agreement tests run (support-QA shaped, ragged lengths)."""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np

PROMPTS = [
    "How do I reset my password?",
    "What is the refund policy for annual plans?",
    "Can I change the celsius setting?",
    "Where do I find my invoices",
    "hello",
    "Is there a mobile app, and does it work offline when the network drops?",
    "Question: who can see my profile?\nAnswer:",
    "Why was my card declined twice in a row yesterday evening?",
]


@functools.cache
def _model(checkpoint: Path):
    import torch
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(checkpoint, dtype=torch.float32).eval()


def hf_logprobs(checkpoint: Path, sequences: list[list[int]]) -> list[np.ndarray]:
    """log_softmax of HF's logits at every position of each sequence, float64  # [n, V] each
    (the model is loaded once per checkpoint)."""
    import torch

    model = _model(Path(checkpoint))
    out = []
    with torch.no_grad():
        for ids in sequences:
            logits = model(torch.tensor([ids])).logits[0].double()
            out.append(torch.log_softmax(logits, dim=-1).numpy())
    return out
