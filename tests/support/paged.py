"""A reference for "paged-v1" artifacts: causal attention in numpy between the dense pieces
(server/dense.py), and a runner built on it with the fused runner's calling convention
(new_cache / prefill / decode_step), so the export's quality gate can run a kernel artifact
before the real paged runner exists, and tests can compare pieces with the fused graph.

The int8 KV cache is stored as the kernel stores it: round half to even of x / scale,
clipped to [-127, 127], read back as q * scale (per layer, per key/value, per channel).
ONNX Runtime's GroupQueryAttention saturates to [-128, 127] instead (`low=-128` mimics it):
the two differ only for values past 127.5 scales, beyond calibration's margin.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from artifact import KV_SCALES_FILE, Architecture, piece_files
from server.dense import DenseModel
from server.runner import RunnerConfig

INT8_MAX = 127


def quantized(x: np.ndarray, scale: np.ndarray, low: int = -INT8_MAX) -> np.ndarray:
    """x as an int8 cache holds it, dequantized."""
    return np.clip(np.rint(x / scale), low, INT8_MAX) * scale


@dataclass
class NumpyKV:
    """Per row, per layer, the keys and values so far  # [n, H, D] each."""

    layers: int
    keys: list[list[np.ndarray]] = field(default_factory=list)  # [row][layer]
    values: list[list[np.ndarray]] = field(default_factory=list)

    def add_row(self, heads: int, head_dim: int) -> int:
        empty = np.zeros((0, heads, head_dim), np.float32)
        self.keys.append([empty] * self.layers)
        self.values.append([empty] * self.layers)
        return len(self.keys) - 1

    def length(self, row: int) -> int:
        return len(self.keys[row][0])


def attention(
    qkv: np.ndarray,
    spans: list[tuple[int, slice]],
    cache: NumpyKV,
    layer: int,
    heads: int,
    scales: np.ndarray | None,
    out: np.ndarray,
    low: int = -INT8_MAX,
) -> None:
    """Causal attention of each span's tokens (cache row, rows of T) over that row's cache,
    appending the span's keys/values first.  qkv [T, 3C] -> out [T, C]"""
    c = qkv.shape[1] // 3
    d = c // heads
    for row, rows in spans:
        q, k, v = (part.reshape(-1, heads, d) for part in np.split(qkv[rows], 3, axis=1))
        if scales is not None:  # [L, 2, H * D]
            k = quantized(k, scales[layer, 0].reshape(heads, d), low)
            v = quantized(v, scales[layer, 1].reshape(heads, d), low)
        keys = np.concatenate([cache.keys[row][layer], k])
        values = np.concatenate([cache.values[row][layer], v])
        cache.keys[row][layer], cache.values[row][layer] = keys, values
        new, total = len(q), len(keys)
        scores = np.einsum("thd,nhd->htn", q, keys) / np.sqrt(d)  # [H, new, total]
        future = np.arange(total)[None, :] > (total - new + np.arange(new))[:, None]
        scores = np.where(future[None], -np.inf, scores)
        weights = np.exp(scores - scores.max(-1, keepdims=True))
        weights /= weights.sum(-1, keepdims=True)
        out[rows] = np.einsum("htn,nhd->thd", weights, values).reshape(new, c)


class NumpyPagedRunner:
    """The dense pieces with numpy attention, called like server.runner.OnnxRunner."""

    provider = "CPUExecutionProvider"
    int8_low = -INT8_MAX  # the kernel's clip; -128: ONNX Runtime's

    def __init__(self, model_dir: Path, architecture: Architecture, config: RunnerConfig):
        self.arch = architecture
        self.dense = DenseModel(model_dir, piece_files(architecture.num_layers), config)
        scales = Path(model_dir) / KV_SCALES_FILE
        self.scales = np.load(scales) if scales.exists() else None

    def new_cache(self, max_rows: int) -> NumpyKV:
        del max_rows  # rows are added as prompts come
        return NumpyKV(self.arch.num_layers)

    def prefill(self, cache: NumpyKV, prompts: list[list[int]]) -> np.ndarray:
        rows = [cache.add_row(self.arch.num_heads, self.arch.head_dim) for _ in prompts]
        return self.step(cache, list(zip(rows, prompts, strict=True)))

    def decode_step(self, cache: NumpyKV, tokens: np.ndarray) -> np.ndarray:
        return self.step(cache, [(row, [int(t)]) for row, t in enumerate(tokens)])

    def step(self, cache: NumpyKV, work: list[tuple[int, list[int]]]) -> np.ndarray:
        """Feed each (cache row, tokens) in one flattened batch; logits at each one's last
        token  # [len(work), V]"""
        ids, positions, spans, last = [], [], [], []
        for row, tokens in work:
            start, past = len(ids), cache.length(row)
            ids += tokens
            positions += range(past, past + len(tokens))
            spans.append((row, slice(start, len(ids))))
            last.append(len(ids) - 1)
        hidden, qkv = self.dense.embed(np.array(ids), np.array(positions))
        for k in range(1, self.arch.num_layers + 1):
            attn = self.dense.attn_buffer(len(ids))
            heads, scales = self.arch.num_heads, self.scales
            attention(qkv, spans, cache, k - 1, heads, scales, attn, self.int8_low)
            if k == self.arch.num_layers:
                return self.dense.head(attn, hidden, np.array(last)).copy()
            hidden, qkv = self.dense.layer(k, attn, hidden)
        raise AssertionError("unreachable")
