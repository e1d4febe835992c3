"""Next-token selection: pure numpy over a batch of logits, each row with its own knobs.

Hand-written because the serving image has no torch and ONNX Runtime has no sampler op for
this graph. Every function takes `[B, V]` logits and per-row parameter arrays, so a batch
mixing greedy and sampled requests needs no Python loop over rows. Randomness comes in as
one uniform number per row, drawn from that request's own generator: the same seed gives
the same text whatever else shares the batch.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

NEG_INF = np.float32(-np.inf)


@dataclass(frozen=True)
class SamplingParams:
    max_new_tokens: int  # always the request's (or the server's default, see Limits)
    temperature: float = 0.0  # 0 = greedy
    top_k: int = 0  # 0 = off
    top_p: float = 1.0  # 1 = off
    repetition_penalty: float = 1.0  # 1 = off
    stop: tuple[str, ...] = ()
    seed: int | None = None
    ignore_eos: bool = False
    # None = off; N (0-20) = each sampled token's logprob and its N likeliest alternatives
    logprobs: int | None = None
    # None = off; N (0-20) = every prompt token's logprob (the first has none) and N
    # alternatives; a request that sets it may ask for max_new_tokens 0 (score the prompt)
    prompt_logprobs: int | None = None

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0


def apply_repetition_penalty(
    logits: np.ndarray, penalties: np.ndarray, seen: list[np.ndarray]
) -> np.ndarray:
    """CTRL-style penalty on tokens already in each row's prompt or output.  # [B, V]"""
    out = logits
    for row, (penalty, tokens) in enumerate(zip(penalties, seen, strict=True)):
        if penalty == 1.0 or len(tokens) == 0:
            continue
        if out is logits:
            out = logits.copy()
        picked = out[row, tokens]
        out[row, tokens] = np.where(picked > 0, picked / penalty, picked * penalty)
    return out


def top_k_filter(logits: np.ndarray, top_k: np.ndarray) -> np.ndarray:
    """Keep each row's k best logits (k = 0 keeps all).  # [B, V]"""
    vocab = logits.shape[1]
    k = np.where((top_k <= 0) | (top_k >= vocab), vocab, top_k).astype(np.int64)
    if (k == vocab).all():
        return logits
    kth = -np.sort(-logits, axis=1)[np.arange(len(k)), k - 1]  # [B]
    return np.where(logits < kth[:, None], NEG_INF, logits)


def top_p_filter(logits: np.ndarray, top_p: np.ndarray) -> np.ndarray:
    """Keep each row's smallest set of tokens whose probability reaches p.  # [B, V]"""
    if (top_p >= 1.0).all():
        return logits
    order = np.argsort(-logits, axis=1)
    sorted_probs = softmax(np.take_along_axis(logits, order, axis=1))
    before = np.cumsum(sorted_probs, axis=1) - sorted_probs  # mass of better tokens
    drop_sorted = before >= top_p[:, None]
    drop = np.zeros_like(drop_sorted)
    np.put_along_axis(drop, order, drop_sorted, axis=1)
    return np.where(drop, NEG_INF, logits)


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=1, keepdims=True)


def sample_from(probs: np.ndarray, uniforms: np.ndarray) -> np.ndarray:
    """Inverse-CDF draw: one token per row from its own uniform number.  # [B]"""
    cdf = np.cumsum(probs, axis=1)
    picks = (cdf <= uniforms[:, None] * cdf[:, -1:]).sum(axis=1)  # zero-mass tokens never win
    return np.minimum(picks, probs.shape[1] - 1)


def select_tokens(
    logits: np.ndarray, params: list[SamplingParams], seen: list[np.ndarray], uniforms: np.ndarray
) -> np.ndarray:
    """The next token of every row: greedy rows take the argmax, others sample.  # [B]"""
    logits = logits.astype(np.float32, copy=False)
    penalties = np.array([p.repetition_penalty for p in params], dtype=np.float32)
    logits = apply_repetition_penalty(logits, penalties, seen)
    tokens = logits.argmax(axis=1)
    rows = np.array([i for i, p in enumerate(params) if not p.greedy], dtype=np.int64)
    if len(rows) == 0:
        return tokens
    chosen = [params[i] for i in rows]
    temps = np.array([p.temperature for p in chosen], dtype=np.float32)
    scaled = logits[rows] / temps[:, None]
    scaled = top_k_filter(scaled, np.array([p.top_k for p in chosen]))
    scaled = top_p_filter(scaled, np.array([p.top_p for p in chosen], dtype=np.float32))
    tokens[rows] = sample_from(softmax(scaled), uniforms[rows])
    return tokens
