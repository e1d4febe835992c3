"""kvserve's CPU paged-attention kernel: causal attention of a flat batch of query tokens
(decoding rows and prefill chunks in one call) over fp32 or int8 KV caches kept in blocks.

The work is C++ (kernels/paged_attention.cpp, built by `pip install`): AVX-512 (and VNNI)
chosen at run time, a portable path otherwise, its own sleeping thread pool, the GIL
released. Hand-written because ONNX Runtime's GroupQueryAttention wants one contiguous
cache per call and dequantises int8 slowly, and no installable library runs attention over
block tables on CPU.
kernels.reference is the numpy spec; docs/kernel.md has the layout, dispatch and figures.
"""

from __future__ import annotations

import numpy as np

from kernels.reference import Kind, gather, quantize

try:
    from kernels import _native
except ImportError as error:  # a source checkout that was never built
    raise ImportError(
        "kernels._native is not built: run `pip install -e .` in the checkout"
    ) from error

__all__ = [
    "Kind",
    "gather",
    "isa",
    "paged_attention",
    "quantize",
    "set_isa",
    "supported",
]


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


def set_isa(name: str) -> None:
    """Which path calls take, process-wide (tests and benches): 'auto' (the best this CPU
    runs), 'portable', 'avx512' or 'avx512vnni' (avx512 plus the VNNI int8-value decode
    pass). ValueError for a path this CPU cannot run."""
    _native.set_isa(name)


def isa() -> str:
    """The path calls take now: 'avx512vnni', 'avx512' or 'portable'. The AVX-512 paths also
    need head_dim in {16, 32, 64, 128} and block_size a multiple of 16 (other shapes run
    portable); the VNNI pass serves int8 decode rows with head_dim 64 or 128."""
    return _native.isa()


def supported() -> list[str]:
    """The paths this CPU and OS can run, from 'portable' up."""
    return list(_native.supported())
