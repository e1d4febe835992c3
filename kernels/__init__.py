"""kvserve's native CPU kernels.

- `paged_attention`: causal attention of a flat batch of query tokens (decoding rows and
  prefill chunks in one call) over fp32 or int8 KV caches kept in blocks
  (kernels/paged_attention.cpp). Hand-written because ONNX Runtime's GroupQueryAttention
  wants one contiguous cache per call and dequantises int8 slowly, and no installable
  library runs attention over block tables on CPU.
- `token_logprobs`: each row's log-softmax of one token plus the row's top-K tokens and
  theirs, in one read of the logits (kernels/top_logprobs.cpp). Hand-written because numpy
  (full log-softmax + argpartition) and ONNX Runtime (ReduceLogSumExp + TopK) both cost
  more than 10 ms for 32 x 50257 with top 5, a third of an engine step; this is under 1 ms.

Both are C++ built by `pip install`: AVX-512 chosen at run time, a portable path otherwise,
the GIL released. kernels.reference is the numpy spec; docs/kernel.md has the layouts,
dispatch and figures.
"""

from __future__ import annotations

import numpy as np

from kernels.reference import Kind, gather, quantize

try:
    from kernels import _logprobs, _native
except ImportError as error:  # a source checkout that was never built (or built before
    # kernels._logprobs existed)
    raise ImportError(
        "kernels._native / kernels._logprobs are not built: run `pip install -e .` in the checkout"
    ) from error

__all__ = [
    "Kind",
    "gather",
    "isa",
    "logprobs_isa",
    "paged_attention",
    "quantize",
    "set_isa",
    "supported",
    "token_logprobs",
]

MAX_TOP = 64  # token_logprobs' bound on `top`


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
    """Write this call's keys/values into their blocks, then attend; `out` is written.

    qkv           float32 [T, 3*H*D], C-contiguous: packed q|k|v per token; tokens of
                  sequence s are rows query_starts[s]..query_starts[s+1]-1
    key_pool,     [num_blocks, H, block_size, D] float32 or int8, written in place (keys are
    value_pool    transposed inside a block-head: read them with `gather`)
    block_tables  int32 [S, max_blocks]: each sequence's block ids in order (tail unused)
    query_starts  int32 [S+1]: 0 first, T last
    context_lens  int32 [S]: tokens of s already in the cache before this call
    out           float32 [T, H*D], C-contiguous
    key_scale,    float32 [H*D], required for int8 pools (value = q * scale[h*D + d])
    value_scale
    threads       threads to split (sequence, head, query group) items over

    Token i of sequence s sits at position context_lens[s] + i and attends to positions
    0..that of its sequence (its cached blocks and its own chunk, causally), reading k/v back
    from the cache (an int8 cache sees its own quantisation). Raises ValueError on a bad
    shape, dtype, layout, block id or table.
    """
    _native.paged_attention(
        qkv,
        key_pool,
        value_pool,
        block_tables,
        query_starts,
        context_lens,
        out,
        key_scale,
        value_scale,
        threads,
    )


def token_logprobs(
    logits: np.ndarray, tokens: np.ndarray, top: int, threads: int = 1
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each row's log-probability of one token, and the row's `top` likeliest tokens.

    logits   float32 [N, V], C-contiguous, V >= 1
    tokens   int64 [N], 0 <= tokens[i] < V
    top      0..min(64, V)
    threads  rows are split over this many threads (results do not depend on it)
    -> (logprob float32 [N]: tokens[i]'s log_softmax(logits[i]),
        top_ids int64 [N, top]: by logprob descending, ties to the lower token id,
        top_logprobs float32 [N, top])

    Logprobs are x - logsumexp(row), to about 1e-6. -inf logits get logprob -inf. A row with
    a NaN or +inf, or only -inf, has no finite logsumexp: all its logprobs are NaN and its
    top ids 0..top-1 (kernels.reference.token_logprobs is the spec). ValueError on a bad
    shape, dtype, layout, token or `top`.
    """
    if isinstance(top, bool) or not isinstance(top, (int, np.integer)):
        raise ValueError(f"top must be an int, got {type(top).__name__}")
    if isinstance(threads, bool) or not isinstance(threads, (int, np.integer)):
        raise ValueError(f"threads must be an int, got {type(threads).__name__}")
    if not -(2**62) < top < 2**62:
        raise ValueError(f"top must be in 0..min({MAX_TOP}, vocab), got {top}")
    if not 1 <= threads <= 64:
        raise ValueError(f"threads must be in 1..64, got {threads}")
    return _logprobs.token_logprobs(logits, tokens, int(top), int(threads))


def set_isa(name: str) -> None:
    """Which path calls take, process-wide, for both kernels (tests and benches): 'auto'
    (the best this CPU runs), 'portable', 'avx512' or 'avx512vnni' (avx512 plus the VNNI
    int8-value decode pass of the attention kernel; token_logprobs has no VNNI pass and takes
    its avx512 path). ValueError for a path this CPU cannot run."""
    _native.set_isa(name)
    _logprobs.set_isa("avx512" if name == "avx512vnni" else name)


def isa() -> str:
    """The path calls take now: 'avx512vnni', 'avx512' or 'portable'. The AVX-512 paths also
    need head_dim in {16, 32, 64, 128} and block_size a multiple of 16 (other shapes run
    portable); the VNNI pass serves int8 decode rows with head_dim 64 or 128."""
    return _native.isa()


def logprobs_isa() -> str:
    """The path token_logprobs calls take now: 'avx512' or 'portable'."""
    return _logprobs.isa()


def supported() -> list[str]:
    """The paths this CPU and OS can run, from 'portable' up."""
    return list(_native.supported())
