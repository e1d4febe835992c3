"""The ONNX side of the quality gate: the graph run through the server's own runner.

Batched prefill, then decode steps over the slot KV cache, exactly as the server serves it.
"""

from __future__ import annotations

import numpy as np

from export.heldout import Encoded


def forced_logits(runner, chunk: list[Encoded], eos: int) -> list[np.ndarray]:
    """Logits before each target token, feeding the reference answer (rows done feed eos)."""
    cache = runner.new_cache(max_rows=len(chunk))
    logits = runner.prefill(cache, [e.prompt for e in chunk]).astype(np.float32)  # [n, V]
    steps = [[row] for row in logits]
    for t in range(max(len(e.target) for e in chunk) - 1):
        fed = np.array([e.target[t] if t < len(e.target) else eos for e in chunk], np.int64)
        logits = runner.decode_step(cache, fed).astype(np.float32)
        for row, enc in enumerate(chunk):
            if t + 1 < len(enc.target):
                steps[row].append(logits[row])
    return [np.stack(rows) for rows in steps]


def greedy_answers(runner, chunk: list[Encoded], eos: int, max_new: int) -> list[list[int]]:
    """Argmax answers (eos not included) of up to `max_new` tokens for every prompt."""
    cache = runner.new_cache(max_rows=len(chunk))
    logits = runner.prefill(cache, [e.prompt for e in chunk])
    answers: list[list[int]] = [[] for _ in chunk]
    done = np.zeros(len(chunk), dtype=bool)
    for step in range(max_new):
        tokens = logits.argmax(-1).astype(np.int64)
        tokens[done] = eos
        for row in np.flatnonzero(~done):
            if tokens[row] == eos:
                done[row] = True
            else:
                answers[row].append(int(tokens[row]))
        if done.all() or step == max_new - 1:
            break
        logits = runner.decode_step(cache, tokens)
    return answers
