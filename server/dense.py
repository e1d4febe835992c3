"""The dense part of a "paged-v1" artifact: its num_layers + 1 ONNX pieces, called in turn
around kvserve's own attention kernel (artifact/graph.py has the contract).

One ONNX Runtime session per piece, with the served graph's session options
(server/runner.py) but no spinning: after its run a spinning pool keeps its threads busy
waiting for work that now goes to the next session's pool (or to the attention kernel), and
on a few cores 13 pools starve each other (a step 2-4x as long, bench/cut_overhead.py).
The sessions share one memory arena (ONNX Runtime's environment allocator): with an arena
each, every piece keeps its own intermediate tensors, 13 sets of them (after a 576-token
prefill ~280 MB more than one shared arena), and each piece's come in cold from memory;
with one, piece k+1 reuses what piece k just freed, as layers do inside one graph.
Every call writes into buffers this class owns, bound by address (IOBinding), so a step
allocates nothing: `embed` and `layer` return views of them, valid until the next call that
writes the same buffer; the attention kernel reads `qkv` in place and writes into
`attn_buffer(T)`, which the next `layer` or `head` call reads in place.

A weight several pieces read (the token table: the embedding in piece 0, the lm_head in piece
L) is stored once on disk (manifest `shared_weights`) but each session loads its own copy:
handing both sessions one mapped copy (SessionOptions.add_initializer) was measured to cost a
table more (bench/cut_overhead.py): ONNX Runtime prepacks the lm_head's weight into a copy of
its own and frees the loaded one only when it owns it, so per-session loading holds the raw
table once (piece 0's embedding) and the packed one once (piece L).
Hand-written: ONNX Runtime has no API for running a chain of graphs; this is that chain.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np
import onnxruntime as ort

from artifact import LOGITS, PAGED_INTERFACE, Manifest
from artifact.graph import ATTN, HIDDEN, HIDDEN_OUT, INPUT_IDS, LOGIT_INDEX, POSITION_IDS, QKV
from server.runner import CPU, RunnerConfig, session_options

POOLS = ("session", "global")  # one intra-op pool per session | ONNX Runtime's process pool
# off: pool threads sleep as soon as they run out of work; run: they spin while a run lasts
# and stop when it returns (session.force_spinning_stop); on: they keep spinning after it
SPINS = ("off", "run", "on")
# shared: one arena registered with ONNX Runtime's environment for every session that asks
# (session.use_env_allocators); session: each session's own
ARENAS = ("shared", "session")


class DenseModel:
    """`embed` -> (attention) -> `layer(1)` -> ... -> `layer(L-1)` -> (attention) -> `head`."""

    def __init__(
        self,
        model_dir: Path,
        piece_files: Sequence[str],
        config: RunnerConfig,
        *,
        pool: str = "session",
        spin: str = "off",
        arena: str = "shared",
    ) -> None:
        """`pool`: "global" runs every piece on ONNX Runtime's one process-wide intra-op pool
        (sized once per process by the first DenseModel; it spins whatever `spin` says: the
        Python API exposes no spinning control for it). `spin` (SPINS): for benchmarks;
        `config.spin` is not used (see the module's docstring). `arena` (ARENAS)."""
        if len(piece_files) < 2:
            raise ValueError(f"a dense model has at least 2 pieces, not {len(piece_files)}")
        if pool not in POOLS or spin not in SPINS or arena not in ARENAS:
            raise ValueError(f"pool must be one of {POOLS}, spin of {SPINS}, arena of {ARENAS}")
        if config.provider == "cuda":
            raise ValueError("dense pieces run on the CPU provider (cuda keeps the fused graph)")
        model_dir = Path(model_dir)
        self.sessions = [
            ort.InferenceSession(
                str(model_dir / name), self._options(config, pool, spin, arena), providers=[CPU]
            )
            for name in piece_files
        ]
        self.provider = CPU
        self.num_layers = len(piece_files) - 1
        qkv = next(o for o in self.sessions[0].get_outputs() if o.name == QKV)
        vocab = self.sessions[-1].get_outputs()[0].shape[-1]
        self.hidden_size = int(qkv.shape[-1]) // 3
        self.vocab_size = int(vocab)
        self._bindings = [s.io_binding() for s in self.sessions]
        self._tokens = 0  # rows the activation buffers hold
        self._rows = 0  # rows the logits buffer holds
        self._grow(16, 16)

    @classmethod
    def from_manifest(cls, model_dir: Path, manifest: Manifest, config: RunnerConfig, **kw):
        """The pieces a paged-v1 manifest lists (`kw`: pool, spin)."""
        if manifest.interface != PAGED_INTERFACE:
            raise ValueError(f"{manifest.interface!r} artifacts have no dense pieces")
        return cls(model_dir, manifest.pieces, config, **kw)

    @staticmethod
    def _options(config: RunnerConfig, pool: str, spin: str, arena: str) -> ort.SessionOptions:
        options = session_options(replace(config, spin=spin != "off"))
        if arena == "shared":
            use_shared_arena()
            options.add_session_config_entry("session.use_env_allocators", "1")
        if spin == "run":
            options.add_session_config_entry("session.force_spinning_stop", "1")
        if pool == "global":
            use_global_pool(config.intra_op_threads)
            options.use_per_session_threads = False
            options.intra_op_num_threads = 0  # the global pool's size rules (else a warning)
        return options

    def attn_buffer(self, tokens: int) -> np.ndarray:
        """Where the attention kernel writes its output for `tokens` rows.  # [T, C]"""
        self._grow(tokens, self._rows)
        return self._attn[:tokens]

    def embed(self, input_ids: np.ndarray, position_ids: np.ndarray) -> tuple[np.ndarray, ...]:
        """Piece 0: the residual stream after the embeddings, and layer 0's packed q|k|v.

        input_ids, position_ids [T] int64 -> (hidden [T, C], qkv [T, 3C])"""
        tokens = len(input_ids)
        self._grow(tokens, self._rows)
        hidden, qkv = self._hidden[0][:tokens], self._qkv[:tokens]
        inputs = {INPUT_IDS: _int64(input_ids), POSITION_IDS: _int64(position_ids)}
        self._run(0, inputs, {HIDDEN_OUT: hidden, QKV: qkv})
        return hidden, qkv

    def layer(self, k: int, attn: np.ndarray, hidden: np.ndarray) -> tuple[np.ndarray, ...]:
        """Piece k (1 <= k < L): layer k-1 after its attention, then layer k up to its own.

        attn [T, C] (layer k-1's attention output), hidden [T, C] -> (hidden, qkv [T, 3C])"""
        if not 1 <= k < self.num_layers:
            raise ValueError(f"layer pieces are 1..{self.num_layers - 1}, not {k}")
        tokens = len(hidden)
        self._grow(tokens, self._rows)
        out = self._hidden[1] if np.may_share_memory(hidden, self._hidden[0]) else self._hidden[0]
        out, qkv = out[:tokens], self._qkv[:tokens]
        self._run(k, {ATTN: _float(attn), HIDDEN: _float(hidden)}, {HIDDEN_OUT: out, QKV: qkv})
        return out, qkv

    def head(self, attn: np.ndarray, hidden: np.ndarray, logit_index: np.ndarray) -> np.ndarray:
        """Piece L: the last layer after its attention, ln_f and the lm_head at `logit_index`.

        attn, hidden [T, C], logit_index [S] int64 -> logits [S, V] float32 (a view, valid
        until the next head call)"""
        rows = len(logit_index)
        if rows > KEPT_LOGIT_ROWS:  # prompt scoring: this call's own array, not kept
            logits = np.empty((rows, self.vocab_size), np.float32)
        else:
            self._grow(self._tokens, rows)
            logits = self._logits[:rows]
        inputs = {ATTN: _float(attn), HIDDEN: _float(hidden), LOGIT_INDEX: _int64(logit_index)}
        self._run(self.num_layers, inputs, {LOGITS: logits})
        return logits

    def _run(self, k: int, inputs: dict[str, np.ndarray], outputs: dict[str, np.ndarray]) -> None:
        binding = self._bindings[k]
        for name, array in inputs.items():
            binding.bind_input(name, "cpu", 0, array.dtype, array.shape, array.ctypes.data)
        for name, array in outputs.items():
            binding.bind_output(name, "cpu", 0, array.dtype, array.shape, array.ctypes.data)
        self.sessions[k].run_with_iobinding(binding)

    def _grow(self, tokens: int, rows: int) -> None:
        """Make the buffers hold `tokens` activation rows and `rows` logits rows (doubling,
        so a growing step size reallocates a few times, not every step)."""
        c = self.hidden_size
        if tokens > self._tokens:
            self._tokens = _doubled(self._tokens, tokens)
            self._hidden = [np.empty((self._tokens, c), np.float32) for _ in range(2)]
            self._qkv = np.empty((self._tokens, 3 * c), np.float32)
            self._attn = np.empty((self._tokens, c), np.float32)
        if rows > self._rows:
            self._rows = _doubled(self._rows, rows)
            self._logits = np.empty((self._rows, self.vocab_size), np.float32)


# logits rows the reused buffer may grow to (a step's sampling rows); beyond, a scoring call's
# logits (every prompt position: up to --max-step-tokens rows, 200 KB each) are not kept
KEPT_LOGIT_ROWS = 256


def _doubled(have: int, need: int) -> int:
    size = max(have, 1)
    while size < need:
        size *= 2
    return size


def _int64(array: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(array, dtype=np.int64)


def _float(array: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(array, dtype=np.float32)


_shared_arena = False


def use_shared_arena() -> None:
    """Register one CPU arena with ONNX Runtime's environment (once per process)."""
    global _shared_arena
    if not _shared_arena:
        cpu = ort.OrtMemoryInfo(
            "Cpu", ort.OrtAllocatorType.ORT_ARENA_ALLOCATOR, 0, ort.OrtMemType.DEFAULT
        )
        ort.create_and_register_allocator(cpu, ort.OrtArenaCfg({}))
        _shared_arena = True


_global_pool_threads: int | None = None


def use_global_pool(threads: int) -> None:
    """ONNX Runtime's process-wide pools can be sized once; a second size is refused."""
    global _global_pool_threads
    if _global_pool_threads is None:
        ort.set_global_thread_pool_sizes(threads, 1)
        _global_pool_threads = threads
    elif _global_pool_threads != threads:
        raise ValueError(
            f"the global thread pool already has {_global_pool_threads} threads, not {threads}"
        )
