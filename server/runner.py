"""The only module that touches ONNX Runtime: run the exported GPT-2 graph with a KV cache.

Inputs and outputs follow optimum's `text-generation-with-past` export, as recorded in the
artifact's manifest: input_ids, attention_mask (int64), position_ids, past_key_values.N.key /
value -> logits, present.N.key / value. A prefill is the same graph with a zero-length past.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort

from export.manifest import Manifest
from server.kv_cache import KVCache

log = logging.getLogger(__name__)
CPU = "CPUExecutionProvider"
CUDA = "CUDAExecutionProvider"


@dataclass(frozen=True)
class RunnerConfig:
    provider: str = "auto"  # auto | cpu | cuda
    intra_op_threads: int = 0  # 0 = ONNX Runtime's default (one per core)


def choose_providers(requested: str, available: list[str], gpu_present: bool) -> list[str]:
    """Execution providers to ask ONNX Runtime for, best first."""
    if requested == "cpu":
        return [CPU]
    if requested == "cuda":
        if CUDA not in available:
            raise RuntimeError(f"--provider cuda: this onnxruntime has no {CUDA} ({available})")
        return [CUDA, CPU]
    if requested != "auto":
        raise ValueError(f"--provider must be auto, cpu or cuda, not {requested!r}")
    return [CUDA, CPU] if CUDA in available and gpu_present else [CPU]


def gpu_present() -> bool:
    """onnxruntime-gpu lists CUDA even on machines without a GPU; look for the device."""
    return Path("/dev/nvidiactl").exists() or bool(os.environ.get("CUDA_VISIBLE_DEVICES"))


class OnnxRunner:
    def __init__(self, model_path: Path, manifest: Manifest, config: RunnerConfig) -> None:
        arch = manifest.architecture
        self.num_layers, self.num_heads, self.head_dim = (
            arch.num_layers,
            arch.num_heads,
            arch.head_dim,
        )
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.intra_op_num_threads = config.intra_op_threads
        providers = choose_providers(config.provider, ort.get_available_providers(), gpu_present())
        self.session = ort.InferenceSession(str(model_path), options, providers=providers)
        self.provider = self.session.get_providers()[0]
        if providers[0] == CUDA and self.provider != CUDA:
            log.warning("CUDA provider could not start; serving on CPU")
        self.dtype = np.float16 if manifest.dtype == "float16" else np.float32
        self._past_names = [
            (f"past_key_values.{i}.key", f"past_key_values.{i}.value")
            for i in range(self.num_layers)
        ]
        present = [(f"present.{i}.key", f"present.{i}.value") for i in range(self.num_layers)]
        self._outputs = ["logits"] + [name for pair in present for name in pair]

    def prefill(self, prompts: list[list[int]]) -> tuple[np.ndarray, KVCache]:
        """Left-padded batch of prompts through the graph with an empty past."""
        length = max(len(p) for p in prompts)
        input_ids = np.zeros((len(prompts), length), dtype=np.int64)  # [n, T]
        mask = np.zeros((len(prompts), length), dtype=np.int64)  # [n, T]
        for row, prompt in enumerate(prompts):
            input_ids[row, length - len(prompt) :] = prompt
            mask[row, length - len(prompt) :] = 1
        positions = np.maximum(np.cumsum(mask, axis=1) - 1, 0)  # [n, T]
        empty = KVCache.empty(
            len(prompts), self.num_layers, self.num_heads, self.head_dim, self.dtype
        )
        return self._run(input_ids, mask, positions, empty)

    def decode(self, cache: KVCache, tokens: np.ndarray) -> tuple[np.ndarray, KVCache]:
        """One new token per row on top of the cache."""
        ones = np.ones((cache.batch_size, 1), dtype=np.int64)
        mask = np.concatenate([cache.mask, ones], axis=1)  # [B, T + 1]
        return self._run(tokens.reshape(-1, 1), mask, cache.positions(), cache)

    def _run(
        self, input_ids: np.ndarray, mask: np.ndarray, positions: np.ndarray, past: KVCache
    ) -> tuple[np.ndarray, KVCache]:
        feed = {"input_ids": input_ids, "attention_mask": mask, "position_ids": positions}
        for (key_name, value_name), (key, value) in zip(self._past_names, past.layers, strict=True):
            feed[key_name], feed[value_name] = key, value
        logits, *present = self.session.run(self._outputs, feed)
        layers = list(zip(present[0::2], present[1::2], strict=True))
        return logits[:, -1, :], KVCache(layers, mask)  # [B, V]
