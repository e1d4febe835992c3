"""A batch's KV cache: left-padded per-layer past key/values plus the attention mask.

Hand-written because it is the engine's core data structure and no serving library exposes
one for ONNX Runtime. Shapes follow optimum's GPT-2 export: past key/value `[B, H, T, D]` per
layer, `attention_mask` `[B, T]` int64 with 0 on the left padding. Rows are sequences; a
row's real tokens are right-aligned, so every row's next token goes in the same column.
Like TGI's CausalLMBatch: `filter` keeps some rows, `concatenate` merges batches; both trim
padding columns that no row needs, so a long sequence leaving shrinks everyone's past.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class KVCache:
    layers: list[tuple[np.ndarray, np.ndarray]]  # per layer (key, value), each [B, H, T, D]
    mask: np.ndarray  # [B, T] int64, 1 = real token

    @property
    def batch_size(self) -> int:
        return int(self.mask.shape[0])

    @property
    def length(self) -> int:
        return int(self.mask.shape[1])

    @property
    def nbytes(self) -> int:
        return sum(k.nbytes + v.nbytes for k, v in self.layers)

    @classmethod
    def empty(cls, batch: int, num_layers: int, heads: int, head_dim: int, dtype) -> KVCache:
        zeros = np.zeros((batch, heads, 0, head_dim), dtype=dtype)
        return cls([(zeros, zeros)] * num_layers, np.zeros((batch, 0), dtype=np.int64))

    def positions(self) -> np.ndarray:
        """Position id of each row's next token: the count of its real tokens.  # [B, 1]"""
        return self.mask.sum(axis=1, keepdims=True)

    def filter(self, rows: list[int]) -> KVCache:
        """Keep `rows` (in that order) and drop the padding columns none of them needs."""
        idx = np.asarray(rows, dtype=np.int64)
        mask = self.mask[idx]
        start = _first_needed_column(mask)
        layers = [(k[idx, :, start:], v[idx, :, start:]) for k, v in self.layers]
        return KVCache(layers, mask[:, start:])

    @staticmethod
    def concatenate(caches: list[KVCache]) -> KVCache:
        """Stack batches row-wise, left-padding the shorter ones to the longest past."""
        caches = [c for c in caches if c.batch_size]
        if len(caches) == 1:
            return caches[0]
        length = max(c.length for c in caches)
        mask = np.concatenate([_left_pad(c.mask, length, axis=1) for c in caches])
        layers = []
        for i in range(len(caches[0].layers)):
            key = np.concatenate([_left_pad(c.layers[i][0], length, axis=2) for c in caches])
            value = np.concatenate([_left_pad(c.layers[i][1], length, axis=2) for c in caches])
            layers.append((key, value))
        return KVCache(layers, mask)


def _first_needed_column(mask: np.ndarray) -> int:
    """Leading columns that are padding in every row can go."""
    if mask.shape[1] == 0 or mask.shape[0] == 0:
        return 0
    used = mask.any(axis=0)
    return int(np.argmax(used)) if used.any() else mask.shape[1]


def _left_pad(array: np.ndarray, length: int, axis: int) -> np.ndarray:
    missing = length - array.shape[axis]
    if missing == 0:
        return array
    pad = [(0, 0)] * array.ndim
    pad[axis] = (missing, 0)
    return np.pad(array, pad)
