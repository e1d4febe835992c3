"""The only module that touches ONNX Runtime: run the served GPT-2 graph over the slot cache.

The graph's calling convention is artifact/graph.py: control inputs and per-layer past
key/values in, logits out, each new key/value written in place: past and present are bound
(IOBinding, by address) to the same cache buffer, in host memory or on the GPU
(server/memory.py), so nothing is copied between steps.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort

from artifact import (
    CACHE_TYPES,
    CONTROL_INPUTS,
    LOGITS,
    Architecture,
    layer_names,
)
from server.kv_cache import SlotCache
from server.memory import memory_for

log = logging.getLogger(__name__)
CPU = "CPUExecutionProvider"
CUDA = "CUDAExecutionProvider"


@dataclass(frozen=True)
class RunnerConfig:
    provider: str  # auto | cpu | cuda
    intra_op_threads: int  # 0 = ONNX Runtime's default (one per core)
    # spinning pool threads busy-wait for the next op: on a few shared cores they take CPU
    # from the service thread, the engine's Python and each other (bench/engine_ab.py)
    spin: bool


def choose_providers(requested: str, available: list[str], gpu_present: bool) -> list[str]:
    """Execution providers to ask ONNX Runtime for, best first."""
    if requested == "cpu":
        return [CPU]
    if requested == "cuda":
        if CUDA not in available:
            raise RuntimeError(f"--provider cuda: this onnxruntime has no {CUDA} ({available})")
        if not gpu_present:  # asked for by name: refuse rather than quietly serve on CPU
            raise RuntimeError("--provider cuda: no GPU on this machine (use cpu or auto)")
        return [CUDA, CPU]
    if requested != "auto":
        raise ValueError(f"--provider must be auto, cpu or cuda, not {requested!r}")
    return [CUDA, CPU] if CUDA in available and gpu_present else [CPU]


def gpu_present() -> bool:
    """onnxruntime-gpu lists CUDA even on machines without a GPU; look for the device."""
    return Path("/dev/nvidiactl").exists()


def cache_dtype(session: ort.InferenceSession) -> type:
    """The KV cache's element type, as the graph declares it: fp32, fp16, or int8 (the graph
    quantizes and dequantizes an int8 cache itself; export/kv_scales.py)."""
    past_name = layer_names(0, "key")[0]
    past = next(i for i in session.get_inputs() if i.name == past_name)
    if past.type not in CACHE_TYPES:
        raise RuntimeError(f"unsupported KV cache type {past.type} ({past.name})")
    return np.dtype(CACHE_TYPES[past.type]).type


def session_options(config: RunnerConfig) -> ort.SessionOptions:
    """The served graph's session options (the benches profile the same ones)."""
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = config.intra_op_threads
    options.add_session_config_entry("session.intra_op.allow_spinning", str(int(config.spin)))
    # flush denormals to zero: tiny attention weights otherwise slow float math 5x+ here
    options.add_session_config_entry("session.set_denormal_as_zero", "1")
    return options


class OnnxRunner:
    def __init__(self, model_path: Path, architecture: Architecture, config: RunnerConfig) -> None:
        self.architecture = architecture
        options = session_options(config)
        providers = choose_providers(config.provider, ort.get_available_providers(), gpu_present())
        self.session = ort.InferenceSession(str(model_path), options, providers=providers)
        self.provider = self.session.get_providers()[0]
        if providers[0] == CUDA and self.provider != CUDA:
            if config.provider == "cuda":
                raise RuntimeError("--provider cuda: the CUDA provider could not start")
            log.warning("CUDA provider could not start; serving on CPU")
        self.dtype = cache_dtype(self.session)
        # the KV cache on the provider's device
        self.memory = memory_for(self.provider, ort.OrtValue.ortvalue_from_shape_and_type)

    def new_cache(self, max_rows: int) -> SlotCache:
        arch = self.architecture
        return SlotCache(
            arch.num_layers,
            arch.num_heads,
            arch.head_dim,
            max_rows,
            arch.max_positions,
            self.dtype,
            self.memory,
        )

    def prefill(self, cache: SlotCache, prompts: list[list[int]]) -> np.ndarray:
        """Append one row per prompt to the cache; logits at each prompt's last token [n, V].

        The rows are appended only once the graph ran: a failed call leaves the cache as it
        was."""
        lengths = np.array([len(p) for p in prompts], dtype=np.int64)
        width = int(lengths.max())
        start, stop = cache.size, cache.size + len(prompts)
        cache.reserve(stop, width)
        input_ids = np.zeros((len(prompts), width), dtype=np.int64)  # [n, T] right-padded
        for row, prompt in enumerate(prompts):
            input_ids[row, : len(prompt)] = prompt
        controls = {
            "input_ids": input_ids,
            "position_ids": np.broadcast_to(np.arange(width), input_ids.shape),
            "last_index": lengths - 1,
            "seqlens_k": lengths - 1,  # each row's length after this call, minus one
            "total_sequence_length": width,
        }
        logits = self._run(cache, start, stop, controls)
        cache.append(lengths)
        return logits

    def decode_step(self, cache: SlotCache, tokens: np.ndarray) -> np.ndarray:
        """Feed one token to each of the first len(tokens) rows; their logits [B, V]."""
        n = len(tokens)
        cache.reserve(n, int(cache.lengths[:n].max()) + 1)
        lengths = cache.lengths[:n]  # the new token's position in each row (read after reserve)
        controls = {
            "input_ids": tokens.reshape(n, 1),
            "position_ids": lengths[:, None],
            "last_index": np.zeros(n),
            "seqlens_k": lengths,
            "total_sequence_length": int(lengths.max()) + 1,
        }
        logits = self._run(cache, 0, n, controls)
        cache.advance(n)
        return logits

    def _run(self, cache: SlotCache, start: int, stop: int, controls: dict) -> np.ndarray:
        """Run rows start..stop-1; their past and present bound to the cache's own buffers."""
        binding = self.session.io_binding()
        for name, value in controls.items():
            binding.bind_cpu_input(name, np.ascontiguousarray(value, dtype=CONTROL_INPUTS[name]))
        memory, shape = cache.memory, cache.block_shape(start, stop)
        where = (memory.device, memory.device_id, cache.dtype, shape)
        for i, (key, value) in enumerate(cache.addresses(start, stop)):
            for kind, address in (("key", key), ("value", value)):  # same memory in and out
                past, present = layer_names(i, kind)
                binding.bind_input(past, *where, address)
                binding.bind_output(present, *where, address)
        binding.bind_output(LOGITS)
        self.session.run_with_iobinding(binding)
        return binding.get_outputs()[-1].numpy()  # [n, V]; the cache stays where it is


MODEL_FILE = "model.onnx"  # the fused graph's file in an artifact dir (gqa-slots-v1)
