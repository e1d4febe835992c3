"""Run a step's tokens over the paged KV cache: ONNX Runtime's dense pieces, kvserve's kernel.

The artifact's dense math comes in L+1 pieces cut at attention (artifact/graph.py "paged-v1",
run by server/dense.py); between them `kernels.paged_attention` writes each token's key and
value into its sequence's blocks and attends over the blocks. A step is one flattened batch
`[T, hidden]`: every sequence's chunk back to back, no padding, decoding rows and prompt
chunks alike, and the logits come back only for the rows that pick a next token.

    hidden, qkv = embed(ids, positions)                 # [T, C], [T, 3C]
    for layer: attn = attention(qkv, blocks)            # [T, C], in the kernel
               hidden, qkv = dense(layer + 1, attn, hidden)
    logits = head(attn, hidden, rows to sample)         # [S, V]

`new_cache(rows)`, `prefill` and `decode_step` serve the quality gate and the warm-up with
the slot runner's calling convention, over the same blocks.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

import kernels
from artifact import GRAPH_INTERFACE, KV_SCALES_FILE, PAGED_INTERFACE, Architecture, piece_files
from server.blocks import BlockManager, BlockTable
from server.dense import DenseModel
from server.runner import MODEL_FILE, OnnxRunner, RunnerConfig
from server.step import Chunk


@dataclass
class PagedCache:
    """The block pools of every layer and the one owner of their bookkeeping."""

    blocks: BlockManager
    layers: list[tuple[np.ndarray, np.ndarray]]  # per layer (key, value) [blocks, H, bs, D]

    @property
    def nbytes(self) -> int:
        """Bytes held by sequences' blocks (memory held = tokens held)."""
        return self.blocks.used_blocks * self.block_bytes

    @property
    def capacity_bytes(self) -> int:
        return sum(k.nbytes + v.nbytes for k, v in self.layers)

    @property
    def block_bytes(self) -> int:
        return self.capacity_bytes // max(1, self.blocks.num_blocks)

    @property
    def block_size(self) -> int:
        return self.blocks.block_size

    def reset(self) -> None:
        """Forget every sequence (after a crashed step); the pools stay allocated."""
        self.blocks = self.blocks.cleared()


@dataclass
class Sequence:
    """One sequence's share of a forward call: tokens at positions start.. of its blocks."""

    table: BlockTable
    tokens: list[int]  # the ids at positions start .. start + len(tokens) - 1
    start: int
    sample: bool = True
    score: bool = False  # logits at every position, not only the last (prompt scoring)


@dataclass
class Rows:
    """The gate's and warm-up's cache: rows of whole sequences over a private block pool."""

    cache: PagedCache
    tables: list[BlockTable] = field(default_factory=list)
    lengths: list[int] = field(default_factory=list)


class PagedRunner:
    def __init__(
        self,
        dense,
        architecture: Architecture,
        cache_dtype: type,
        kv_scales: np.ndarray | None = None,
        threads: int = 0,
        block_size: int = 16,
    ) -> None:
        """`dense`: a server/dense.py DenseModel; `kv_scales`: [L, 2, H*D] for an int8 cache."""
        self.dense = dense
        self.architecture = architecture
        self.dtype = np.dtype(cache_dtype).type
        self.kv_scales = kv_scales
        self.threads = threads or os.cpu_count() or 1
        self.block_size = block_size
        self.provider = dense.provider
        self.scores_prompts = True  # logits at any position: the head takes `logit_index`

    def block_bytes(self) -> int:
        arch = self.architecture
        per_layer = 2 * arch.num_heads * self.block_size * arch.head_dim
        return arch.num_layers * per_layer * np.dtype(self.dtype).itemsize

    def new_pool(
        self, memory_bytes: int, prefix_caching: bool = True, cache_bytes: int | None = None
    ) -> PagedCache:
        """Block pools holding up to `memory_bytes` of keys and values (untouched pages cost
        no memory until a sequence writes them); the prefix cache keeps up to `cache_bytes` of
        free blocks before it reuses its oldest rather than touch new ones (None: no bound)."""
        arch = self.architecture
        num_blocks = max(1, memory_bytes // self.block_bytes())
        cache_blocks = None if cache_bytes is None else cache_bytes // self.block_bytes()
        shape = (num_blocks, arch.num_heads, self.block_size, arch.head_dim)
        layers = [
            (np.zeros(shape, self.dtype), np.zeros(shape, self.dtype))
            for _ in range(arch.num_layers)
        ]
        manager = BlockManager(num_blocks, self.block_size, prefix_caching, cache_blocks)
        return PagedCache(manager, layers)

    def run_chunks(self, cache: PagedCache, chunks: tuple[Chunk, ...]) -> np.ndarray:
        """One engine step: logits `[S, V]` of the chunks that sample, in their order."""
        sequences = [
            Sequence(
                c.request.blocks,
                c.request.tokens_at(c.start, c.length),
                c.start,
                c.sample,
                c.score,
            )
            for c in chunks
        ]
        return self.forward(cache, sequences)

    def forward(self, cache: PagedCache, sequences: list[Sequence]) -> np.ndarray:
        """Write every sequence's tokens into its blocks; logits `[R, V]`, in sequence order:
        a scoring sequence's at each of its tokens, another's at its last token if it samples."""
        lengths = np.array([len(s.tokens) for s in sequences], dtype=np.int32)
        starts = np.array([s.start for s in sequences], dtype=np.int32)
        query_starts = np.zeros(len(sequences) + 1, dtype=np.int32)
        np.cumsum(lengths, out=query_starts[1:])
        ids = np.fromiter(
            (t for s in sequences for t in s.tokens), dtype=np.int64, count=int(query_starts[-1])
        )  # [T]
        positions = np.concatenate(
            [
                np.arange(s.start, s.start + n, dtype=np.int64)
                for s, n in zip(sequences, lengths, strict=True)
            ]
        )  # [T]
        width = max(len(s.table.blocks) for s in sequences)
        tables = np.zeros((len(sequences), width), dtype=np.int32)  # [S, max_blocks]
        for row, s in enumerate(sequences):
            tables[row, : len(s.table.blocks)] = s.table.blocks
        logit_index = _logit_rows(sequences, query_starts)  # [R]
        hidden, qkv = self.dense.embed(ids, positions)
        attn = self.dense.attn_buffer(len(ids))  # [T, C], read in place by the next piece
        last = self.architecture.num_layers - 1
        for layer, (keys, values) in enumerate(cache.layers):
            scales = {} if self.kv_scales is None else self._scales(layer)
            kernels.paged_attention(
                qkv, keys, values, tables, query_starts, starts, attn,
                threads=self.threads, **scales,
            )  # fmt: skip
            if layer < last:
                hidden, qkv = self.dense.layer(layer + 1, attn, hidden)
        return self.dense.head(attn, hidden, logit_index)

    def _scales(self, layer: int) -> dict[str, np.ndarray]:
        return {"key_scale": self.kv_scales[layer, 0], "value_scale": self.kv_scales[layer, 1]}

    def score(self, sequences: list[list[int]]) -> list[np.ndarray]:
        """Logits at every position of each sequence, `[len, V]` each (row i predicts token
        i + 1): prompt scoring as the engine runs it, in one call over a private pool (the
        quality gate holds it to PyTorch)."""
        rows = self.new_cache(len(sequences))
        tables = _admit_rows(rows, sequences)
        inputs = [
            Sequence(t, list(ids), 0, sample=False, score=True)
            for t, ids in zip(tables, sequences, strict=True)
        ]
        logits = self.forward(rows.cache, inputs)
        ends = np.cumsum([len(ids) for ids in sequences])[:-1]
        return [part.copy() for part in np.split(logits, ends)]

    # the slot runner's calling convention, for the quality gate and the warm-up

    def new_cache(self, max_rows: int) -> Rows:
        """A private pool for `max_rows` sequences of up to the model's context."""
        tokens = max_rows * self.architecture.max_positions
        blocks = -(-tokens // self.block_size)
        return Rows(self.new_pool(blocks * self.block_bytes(), prefix_caching=False))

    def prefill(self, rows: Rows, prompts: list[list[int]]) -> np.ndarray:
        """A row per prompt; logits at each prompt's last token `[n, V]`."""
        tables = _admit_rows(rows, prompts)
        sequences = [Sequence(t, list(p), 0) for t, p in zip(tables, prompts, strict=True)]
        logits = self.forward(rows.cache, sequences)
        rows.tables += tables
        rows.lengths += [len(p) for p in prompts]
        return logits

    def decode_step(self, rows: Rows, tokens: np.ndarray) -> np.ndarray:
        """One token to each of the first `len(tokens)` rows; their logits `[n, V]`."""
        manager = rows.cache.blocks
        sequences = []
        for row, token in enumerate(tokens.tolist()):
            table, length = rows.tables[row], rows.lengths[row]
            if not manager.reserve(table, length + 1):
                raise MemoryError("the rows' block pool is full")
            sequences.append(Sequence(table, [int(token)], length))
        logits = self.forward(rows.cache, sequences)
        for row in range(len(sequences)):
            rows.lengths[row] += 1
        return logits


def _admit_rows(rows: Rows, prompts: list[list[int]]) -> list[BlockTable]:
    """Block tables holding each whole prompt in the rows' private pool (no prefix cache)."""
    manager = rows.cache.blocks
    tables = [manager.admit(prompt) for prompt in prompts]
    for table, prompt in zip(tables, prompts, strict=True):
        if not manager.reserve(table, len(prompt)):
            raise MemoryError("the rows' block pool is full")
    return tables


def _logit_rows(sequences: list[Sequence], query_starts: np.ndarray) -> np.ndarray:
    """The flattened positions whose logits come back.  # [R] int64"""
    if not any(s.score for s in sequences):  # generation: the sampling rows' last tokens
        sample = np.array([s.sample for s in sequences], dtype=bool)
        return (query_starts[1:][sample] - 1).astype(np.int64)
    rows = []
    for s, begin, end in zip(sequences, query_starts[:-1], query_starts[1:], strict=True):
        if s.score:
            rows.append(np.arange(begin, end, dtype=np.int64))
        elif s.sample:
            rows.append(np.array([end - 1], dtype=np.int64))
    return np.concatenate(rows) if rows else np.zeros(0, np.int64)


def open_paged_runner(
    model_dir: Path, architecture: Architecture, config: RunnerConfig, block_size: int = 16
) -> PagedRunner:
    """The runner of a paged-v1 artifact dir: its dense pieces, and an int8 KV cache when
    the dir holds its scales (artifact/graph.py names both)."""
    if config.provider == "cuda":
        raise ValueError(
            "--provider cuda: this artifact runs attention in kvserve's CPU kernel (exported "
            "with --attention kernel); export it with --target cuda to serve on a GPU"
        )
    dense = DenseModel(model_dir, piece_files(architecture.num_layers), config)
    scales_path = Path(model_dir) / KV_SCALES_FILE
    scales = np.load(scales_path).astype(np.float32) if scales_path.exists() else None
    cache_dtype = np.float32 if scales is None else np.int8
    threads = config.intra_op_threads
    return PagedRunner(dense, architecture, cache_dtype, scales, threads, block_size)


def open_runner(
    model_dir: Path, interface: str, architecture: Architecture, config: RunnerConfig
) -> OnnxRunner | PagedRunner:
    """The runner for an artifact dir's graph interface (artifact/graph.py).

    The quality gate opens the artifact it is about to publish through here, so it runs
    through the runner the server will use. ValueError for an interface this server lacks."""
    if interface == GRAPH_INTERFACE:
        return OnnxRunner(Path(model_dir) / MODEL_FILE, architecture, config)
    if interface == PAGED_INTERFACE:
        return open_paged_runner(Path(model_dir), architecture, config)
    raise ValueError(f"no runner for graph interface {interface!r}")
