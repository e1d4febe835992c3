"""Log-probabilities of tokens: the model's own distribution, as the doors report it.

`log_softmax` of the raw logits (fp32), before temperature, penalties or top-k/top-p: what
a token's probability is under the model, whatever the request's sampling knobs (vLLM's
default `raw_logprobs`). The update stage (server/update.py) computes them only for the
requests that ask, so a request that does not ask pays nothing.

`token_logprobs` runs kvserve's native kernel (kernels.token_logprobs: max, top-K and
sum of exp in one read of each row, without writing the log-softmax out; its figures against
numpy's log-softmax + argpartition are in docs/kernel.md); `log_softmax` stays the plain
numpy definition.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

import kernels

MAX_TOP_LOGPROBS = 20  # alternatives per token at most (OpenAI's chat `top_logprobs` bound)


@dataclass(frozen=True)
class TokenLogprob:
    """One token's log-probability and the `top` most likely tokens at its position."""

    token_id: int
    logprob: float
    top: tuple[tuple[int, float], ...] = ()  # (token id, logprob), most likely first


def log_softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise log-softmax in float32 (a stable max shift).  # [N, V] -> [N, V]"""
    logits = logits.astype(np.float32, copy=False)
    shifted = logits - logits.max(axis=1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))


def token_logprobs(logits: np.ndarray, token_ids: np.ndarray, top: int) -> list[TokenLogprob]:
    """Each row's `token_ids[row]` log-probability, with the row's `top` best tokens.

    logits [N, V], token_ids [N] -> N TokenLogprobs. Ties among the top ones go to the lower
    token id (a stable order, so a result never depends on the batch); a vocabulary smaller
    than `top` gives them all. A row whose logits hold a NaN or +inf has NaN logprobs."""
    logits = np.ascontiguousarray(logits, dtype=np.float32)
    tokens = np.ascontiguousarray(token_ids, dtype=np.int64)
    top = min(max(top, 0), logits.shape[1]) if logits.ndim == 2 else top
    picked, best, values = kernels.token_logprobs(logits, tokens, top)
    if top <= 0:
        return [TokenLogprob(t, lp) for t, lp in zip(tokens.tolist(), picked.tolist(), strict=True)]
    return [
        TokenLogprob(t, lp, tuple(zip(ids, vals, strict=True)))
        for t, lp, ids, vals in zip(
            tokens.tolist(), picked.tolist(), best.tolist(), values.tolist(), strict=True
        )
    ]
