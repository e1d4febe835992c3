"""Measure how far an ONNX graph is from the PyTorch checkpoint on held-out questions.

Two passes over every held-out question, each side by side with PyTorch fp32:
- teacher-forced: prompt, then the reference answer + eos fed one token at a time through
  the server's own runner (batched prefill, slot KV cache, decode steps), exactly as served.
  At every answer position: |logit difference|, whether the next-token argmax agrees, and the
  answer's negative log-likelihood (perplexity on both sides).
- greedy: each side answers on its own (argmax until eos or `max_new_tokens`); the answers
  must be the same token sequence.
Prompts and answers are tokenized as training does: prompt, then " " + answer, then eos.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from export import ExportFailed, onnx_side, torch_side
from export.checkpoint import Checkpoint
from export.heldout import Encoded, QASample, encode_sample
from server.paged_runner import open_runner
from server.runner import OnnxRunner, RunnerConfig

CHUNK = 16  # questions per batch: bounds the [rows, steps, vocab] logits held at once


def gate_threads() -> int:
    """Threads for each side: half the CPUs. A correctness check, not a benchmark: the two
    sides run side by side, and two sessions each asking for every core oversubscribe them."""
    return max(1, min(8, (os.cpu_count() or 2) // 2))


@dataclass
class Totals:
    """Running sums over all answer tokens and questions."""

    tokens: int = 0
    agree: int = 0
    nll_onnx: float = 0.0
    nll_torch: float = 0.0
    max_logit_diff: float = 0.0
    scoring_max_logit_diff: float | None = None  # None: the runner cannot score prompts
    answers: int = 0
    answers_same: int = 0
    mismatches: list[dict] = field(default_factory=list)  # a few differing answers, for people


@dataclass(frozen=True)
class QualityReport:
    provider: str
    samples: int
    tokens: int
    max_logit_diff: float
    token_agreement: float
    ppl_torch: float
    ppl_onnx: float
    answer_match: float
    max_new_tokens: int
    mismatches: list[dict]
    # prompt scoring (prompt_logprobs, echo): logits at every position of prompt + answer in
    # one scoring call; None when the artifact's runner cannot score (the fused graph)
    scoring_max_logit_diff: float | None = None

    @property
    def ppl_delta(self) -> float:
        """Relative perplexity change of the export vs PyTorch (0.01 = 1% worse)."""
        return self.ppl_onnx / self.ppl_torch - 1.0

    def to_dict(self) -> dict:
        return {
            "provider": self.provider,
            "samples": self.samples,
            "tokens": self.tokens,
            "max_logit_diff": self.max_logit_diff,
            "token_agreement": self.token_agreement,
            "ppl_torch": self.ppl_torch,
            "ppl_onnx": self.ppl_onnx,
            "ppl_delta": self.ppl_delta,
            "answer_match": self.answer_match,
            "max_new_tokens": self.max_new_tokens,
            "mismatches": self.mismatches,
            "scoring_max_logit_diff": self.scoring_max_logit_diff,
        }


@dataclass(frozen=True)
class GateRun:
    """What to measure: the artifact dir's graph, the provider to run it on, the questions."""

    model_dir: Path  # the graph files as they will be published (model.onnx or the pieces)
    interface: str  # artifact/graph.py's calling convention: picks the server's runner
    provider: str  # cpu | cuda
    samples: list[QASample]
    max_new_tokens: int = 32


@dataclass(frozen=True)
class Sides:
    """The two models compared, and how answers end."""

    runner: OnnxRunner  # or the paged runner: new_cache, prefill, decode_step alike
    model: object  # transformers' GPT2LMHeadModel, fp32, eval mode
    eos: int
    pad: int
    max_new_tokens: int


def measure(run: GateRun, checkpoint: Checkpoint) -> QualityReport:
    """Score `run.model` against the PyTorch checkpoint on every held-out question."""
    import torch
    from tokenizers import Tokenizer
    from transformers import GPT2LMHeadModel

    threads = gate_threads()
    try:
        config = RunnerConfig(run.provider, threads, spin=True)
        runner = open_runner(run.model_dir, run.interface, checkpoint.architecture, config)
    except Exception as e:  # onnxruntime raises its own types; the user needs one line
        raise ExportFailed(f"ONNX Runtime cannot load {run.model_dir}: {e}") from e
    model = GPT2LMHeadModel.from_pretrained(checkpoint.path, dtype=torch.float32).eval()
    sides = Sides(
        runner, model, checkpoint.eos_token_id, checkpoint.pad_token_id, run.max_new_tokens
    )
    tokenizer = Tokenizer.from_file(str(checkpoint.tokenizer_file))  # as the server tokenizes
    room = checkpoint.architecture.max_positions - run.max_new_tokens
    encoded = encode_samples(tokenizer, checkpoint, run.samples, room)
    totals = Totals()
    progress = tqdm(total=len(encoded), desc="quality gate", unit="question", disable=None)
    torch_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with progress, torch.no_grad():
            for chunk in _chunks(encoded, CHUNK):
                _teacher_forced(sides, chunk, totals)
                _scored(sides, chunk, totals)
                _greedy(sides, chunk, totals, tokenizer)
                progress.update(len(chunk))
    finally:
        torch.set_num_threads(torch_threads)
    return _report(runner.provider, totals, run.max_new_tokens)


def encode_samples(
    tokenizer, checkpoint: Checkpoint, samples: list[QASample], room: int
) -> list[Encoded]:
    """Samples tokenized as the server and training do (those that cannot fit are left out)."""
    encode = lambda text: tokenizer.encode(text).ids  # noqa: E731
    template, eos = checkpoint.prompt_template, checkpoint.eos_token_id
    encoded = (encode_sample(encode, template, s, eos, room) for s in samples)
    return [e for e in encoded if e is not None]


def _chunks(items: list[Encoded], size: int) -> Iterator[list[Encoded]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _teacher_forced(sides: Sides, chunk: list[Encoded], totals: Totals) -> None:
    onnx_steps = onnx_side.forced_logits(sides.runner, chunk, sides.eos)  # [len(target), V]
    torch_steps = torch_side.forced_logits(sides.model, chunk)
    for enc, ours, ref in zip(chunk, onnx_steps, torch_steps, strict=True):
        target = np.array(enc.target)
        totals.tokens += len(target)
        totals.max_logit_diff = max(totals.max_logit_diff, float(np.abs(ours - ref).max()))
        totals.agree += int((ours.argmax(-1) == ref.argmax(-1)).sum())
        totals.nll_onnx += _nll(ours, target)
        totals.nll_torch += _nll(ref, target)


def _scored(sides: Sides, chunk: list[Encoded], totals: Totals) -> None:
    """Prompt scoring: every position of prompt + answer in one call, against PyTorch's
    logits over the same sequence (runners that cannot score are skipped)."""
    if not getattr(sides.runner, "scores_prompts", False):
        return
    import torch

    sequences = [e.prompt + e.target for e in chunk]
    ours = sides.runner.score(sequences)
    for ids, logits in zip(sequences, ours, strict=True):
        ref = sides.model(torch.tensor([ids])).logits[0].float().numpy()
        diff = float(np.abs(logits - ref).max())
        totals.scoring_max_logit_diff = max(totals.scoring_max_logit_diff or 0.0, diff)


def _nll(logits: np.ndarray, target: np.ndarray) -> float:
    """Sum of -log p(target) under softmax(logits), computed stably in float64."""
    z = logits.astype(np.float64)
    z = z - z.max(-1, keepdims=True)
    log_probs = z - np.log(np.exp(z).sum(-1, keepdims=True))
    return float(-log_probs[np.arange(len(target)), target].sum())


def _greedy(sides: Sides, chunk: list[Encoded], totals: Totals, tokenizer) -> None:
    ours = onnx_side.greedy_answers(sides.runner, chunk, sides.eos, sides.max_new_tokens)
    refs = torch_side.greedy_answers(sides.model, chunk, sides.eos, sides.pad, sides.max_new_tokens)
    for enc, a, b in zip(chunk, ours, refs, strict=True):
        totals.answers += 1
        if a == b:
            totals.answers_same += 1
        elif len(totals.mismatches) < 5:  # a few examples for people reading the manifest
            texts = {"onnx": tokenizer.decode(a), "torch": tokenizer.decode(b)}
            totals.mismatches.append({"prompt": tokenizer.decode(enc.prompt), **texts})


def _report(provider: str, totals: Totals, max_new: int) -> QualityReport:
    tokens = max(totals.tokens, 1)
    return QualityReport(
        provider=provider,
        samples=totals.answers,
        tokens=totals.tokens,
        max_logit_diff=totals.max_logit_diff,
        token_agreement=totals.agree / tokens,
        ppl_torch=math.exp(totals.nll_torch / tokens),
        ppl_onnx=math.exp(totals.nll_onnx / tokens),
        answer_match=totals.answers_same / max(totals.answers, 1),
        scoring_max_logit_diff=totals.scoring_max_logit_diff,
        max_new_tokens=max_new,
        mismatches=totals.mismatches,
    )
