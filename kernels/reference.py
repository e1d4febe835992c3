"""The numpy references of kvserve's native kernels: this module IS the spec they are tested
against. kernels.paged_attention: same arguments, same in-place cache writes, output in
float64 then rounded to float32, plus the cache layout's one reader, `gather`.
kernels.token_logprobs: `token_logprobs` below, a float64 log-softmax.

Slow by design (a loop over sequences, whole positions gathered per call); never served.

Layout of a pool `[num_blocks, H, block_size, D]`:
- values: token-major, as the shape says: `value_pool[b, h, slot, :]` is one token's value;
- keys: channel-major within each block-head, so the kernel scores 16 tokens with one vector
  per channel and no horizontal sums: the bytes of a float32 `key_pool[b, h]` hold a
  `[D, block_size]` array; an int8 one holds `[D/2, block_size, 2]` (channel pairs, so one
  16-bit multiply-add takes 16 tokens x 2 channels). `key_slots(pool)` views either as
  `[num_blocks, H, block_size, D/g, g]`.
int8 pools hold q with value = q * scale[h * D + d]; `quantize` is the one rounding rule.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

INT8_MAX = 127

Kind = Literal["key", "value"]


def quantize(x: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """float32 -> int8: round half to even of x / scale, saturated to [-127, 127], NaN -> 0."""
    q = np.rint(np.asarray(x, np.float32) / np.asarray(scale, np.float32))
    q = np.where(np.isnan(q), 0, q)
    return np.clip(q, -INT8_MAX, INT8_MAX).astype(np.int8)


def key_slots(key_pool: np.ndarray) -> np.ndarray:
    """A writeable token-major view `[num_blocks, H, block_size, D/g, g]` of a key pool's
    bytes: g = 1 for float32 pools, 2 (channel pairs) for int8 ones."""
    blocks, heads, block_size, dim = key_pool.shape
    group = 2 if key_pool.dtype == np.int8 else 1
    shape = (blocks, heads, dim // group, block_size, group)
    return key_pool.reshape(shape).transpose(0, 1, 3, 2, 4)


def slots_view(pool: np.ndarray, kind: Kind) -> np.ndarray:
    """`[num_blocks, H, block_size, D/g, g]`: a pool's tokens, as the kernel lays them out."""
    if kind == "key":
        return key_slots(pool)
    if kind == "value":
        return pool[..., None]
    raise ValueError(f"kind must be 'key' or 'value', got {kind!r}")


def gather(
    pool: np.ndarray,
    block_table: np.ndarray,
    length: int,
    kind: Kind,
    scale: np.ndarray | None = None,
) -> np.ndarray:
    """Positions 0..length-1 of one sequence, dequantised: float32 `[H, length, D]`.

    `block_table`: that sequence's block ids in order; `scale` `[H*D]`: int8 pools only."""
    _, heads, block_size, dim = pool.shape
    view = slots_view(pool, kind)
    positions = np.arange(length)
    blocks = np.asarray(block_table)[positions // block_size]
    tokens = view[blocks, :, positions % block_size].reshape(length, heads, dim)
    tokens = tokens.transpose(1, 0, 2)  # [H, length, D]
    if pool.dtype == np.int8:
        if scale is None:
            raise ValueError("an int8 pool needs its scale to be read")
        return (tokens.astype(np.float32) * scale.reshape(heads, 1, dim)).astype(np.float32)
    return tokens.astype(np.float32)


def paged_attention(
    qkv: np.ndarray,
    key_pool: np.ndarray,
    value_pool: np.ndarray,
    block_tables: np.ndarray,
    query_starts: np.ndarray,
    context_lens: np.ndarray,
    out: np.ndarray,
    key_scale: np.ndarray | None = None,
    value_scale: np.ndarray | None = None,
    threads: int = 1,
) -> None:
    """What kernels.paged_attention computes (see kernels/__init__.py for the arguments).

    First every token's k and v go into their slots (quantised for int8), then each token
    attends causally to its sequence's positions 0..p, read back from the cache."""
    del threads  # the reference is single-threaded
    _, heads, block_size, dim = key_pool.shape
    hidden = heads * dim
    int8 = key_pool.dtype == np.int8
    keys, values = slots_view(key_pool, "key"), slots_view(value_pool, "value")
    sequences = len(context_lens)
    for s in range(sequences):
        rows = slice(int(query_starts[s]), int(query_starts[s + 1]))
        positions = int(context_lens[s]) + np.arange(rows.stop - rows.start)
        blocks = block_tables[s][positions // block_size]
        slots = positions % block_size
        k = qkv[rows, hidden : 2 * hidden].reshape(-1, heads, dim)  # [n, H, D]
        v = qkv[rows, 2 * hidden :].reshape(-1, heads, dim)
        if int8:
            k = quantize(k, key_scale.reshape(heads, dim))
            v = quantize(v, value_scale.reshape(heads, dim))
        keys[blocks, :, slots] = k.reshape(keys[blocks, :, slots].shape)
        values[blocks, :, slots] = v[..., None]
    for s in range(sequences):
        first, last = int(query_starts[s]), int(query_starts[s + 1])
        if first == last:
            continue
        length = int(context_lens[s]) + last - first
        k = gather(key_pool, block_tables[s], length, "key", key_scale).astype(np.float64)
        v = gather(value_pool, block_tables[s], length, "value", value_scale).astype(np.float64)
        q = qkv[first:last, :hidden].reshape(-1, heads, dim).transpose(1, 0, 2)  # [H, n, D]
        scores = q.astype(np.float64) @ k.transpose(0, 2, 1) / np.sqrt(dim)  # [H, n, length]
        query_positions = int(context_lens[s]) + np.arange(last - first)
        future = np.arange(length)[None, :] > query_positions[:, None]  # [n, length]
        scores = np.where(future[None], -np.inf, scores)
        weights = np.exp(scores - scores.max(axis=-1, keepdims=True))
        weights /= weights.sum(axis=-1, keepdims=True)
        out[first:last] = (weights @ v).transpose(1, 0, 2).reshape(-1, hidden).astype(np.float32)


MAX_TOP = 64  # kernels.token_logprobs' bound on `top`


def token_logprobs(
    logits: np.ndarray, tokens: np.ndarray, top: int, threads: int = 1
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """What kernels.token_logprobs computes: (logprob float32 [N], top_ids int64 [N, top],
    top_logprobs float32 [N, top]) for logits [N, V] and tokens [N].

    logprob = x - logsumexp(row) in float64, rounded once to float32. The top ids are ordered
    by logit descending (the same order as logprob, without the rounding), ties to the lower
    id. A row whose logsumexp is NaN (a NaN or +inf in it, or only -inf) is NaN throughout;
    its logprobs all tie, so its top ids are 0..top-1."""
    del threads  # the reference is single-threaded
    x = np.asarray(logits, np.float32)
    n, vocab = x.shape
    wide = x.astype(np.float64)
    with np.errstate(invalid="ignore", over="ignore"):
        peak = wide.max(axis=1, keepdims=True) if vocab else np.zeros((n, 1))
        lse = peak + np.log(np.exp(wide - peak).sum(axis=1, keepdims=True))  # [N, 1]
        logprobs = wide - lse  # [N, V]; NaN rows are NaN throughout
        rows = np.arange(n)
        picked = logprobs[rows, np.asarray(tokens, np.int64)].astype(np.float32)
        order = np.argsort(-x, axis=1, kind="stable")[:, :top]  # logit desc, then id
        order[np.isnan(lse[:, 0])] = np.arange(top)
        values = np.take_along_axis(logprobs, order, axis=1).astype(np.float32)
    return picked, order.astype(np.int64), values
