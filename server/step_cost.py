"""How long an engine step will take, learnt from the steps the engine ran: the scheduler's
time budget (`--itl-target-ms`) for the steps that decoding sequences wait on.

A step's time is modelled as a + b * tokens + c * attended: a the per-step cost (every
weight streamed once, the calls), b the dense work per token, c the attention work per
(query, key) pair, attended = the sum over chunks of length x the mean position it attends
to. A least-squares fit over the last WINDOW steps follows the machine and the load (int8 or
fp32, a busy box); a term the data cannot see (no step varied it) or that comes out negative
is left out, down to time proportional to tokens, which overrates a small step's cost and so
errs towards shorter steps. Until MIN_STEPS steps are seen the model predicts nothing and the
token budget alone rules.
Hand-written: a three-term linear fit is numpy's lstsq; what is ours is which terms.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np

WINDOW = 256  # steps the fit remembers
MIN_STEPS = 2  # steps seen before the model is used (a burst's first steps need it)
UNBOUNDED = 1 << 30  # tokens: more than any step runs
PAIRS_UNIT = 1000.0  # attended pairs per unit of the fit's third feature (its conditioning)


def attended(start: int, length: int) -> float:
    """(query, key) pairs a chunk of `length` tokens from position `start` attends to."""
    return length * (start + (length + 1) / 2)


@dataclass(frozen=True)
class StepCostFit:
    per_step_s: float
    per_token_s: float
    per_pair_s: float  # per attended (query, key) pair

    def seconds(self, tokens: float, pairs: float) -> float:
        return self.per_step_s + self.per_token_s * tokens + self.per_pair_s * pairs

    def chunk_within(self, start: int, seconds: float) -> int:
        """The longest chunk from `start` whose own cost (tokens and attention) fits
        `seconds`: b n + c (n start + n (n + 1) / 2) <= seconds, solved for n."""
        if seconds <= 0:
            return 0
        if not np.isfinite(seconds):
            return UNBOUNDED
        c = self.per_pair_s
        b = self.per_token_s + c * (start + 0.5)  # linear in n
        a2 = c / 2  # quadratic in n
        if a2 <= 0:
            return int(min(seconds / b, UNBOUNDED)) if b > 0 else UNBOUNDED
        return int((-b + np.sqrt(b * b + 4 * a2 * seconds)) / (2 * a2))


class StepCostModel:
    def __init__(self) -> None:
        self._steps: deque[tuple[float, float, float]] = deque(maxlen=WINDOW)
        self.fit: StepCostFit | None = None

    def observe(self, tokens: int, pairs: float, seconds: float) -> None:
        """One step ran `tokens` tokens attending to `pairs` (query, key) pairs in `seconds`."""
        if tokens <= 0 or seconds <= 0:
            return
        self._steps.append((float(tokens), pairs / PAIRS_UNIT, seconds))
        if len(self._steps) >= MIN_STEPS:
            self.fit = _fit(np.array(self._steps))


def _fit(steps: np.ndarray) -> StepCostFit:
    """Least squares over the first set of terms the steps determine (full rank) with no
    negative coefficient: all three, else the intercept with tokens, else with attention,
    else time proportional to tokens (always determined: every step has tokens)."""
    features = np.column_stack([np.ones(len(steps)), steps[:, 0], steps[:, 1]])
    seconds = steps[:, 2]
    for keep in ((0, 1, 2), (0, 1), (0, 2), (1,)):
        coef, _, rank, _ = np.linalg.lstsq(features[:, keep], seconds, rcond=None)
        if rank == len(keep) and (coef >= 0).all():
            full = np.zeros(3)
            full[list(keep)] = coef
            return StepCostFit(float(full[0]), float(full[1]), float(full[2]) / PAIRS_UNIT)
    raise AssertionError("unreachable: time per token of positive times is positive")


class StepClock:
    """One step's time for prompt chunks. Decoding chunks come first and always run; the
    first prompt chunk then learns what is left of `target_s` after them. A target the
    machine cannot keep is not chased at the prompts' cost: when the decoding part alone is
    predicted over half the target (fp32 at a full batch), or there is no decoding chunk
    (nobody waits on this step), prompt chunks take the token budget alone. Whatever the
    cap says, prompt chunks get `floor_tokens` a step, so waiting requests always move."""

    def __init__(self, fit: StepCostFit, target_s: float, floor_tokens: int) -> None:
        self.fit = fit
        self.target_s = target_s
        self.floor_tokens = floor_tokens
        self._decode_tokens = 0
        self._decode_pairs = 0.0
        self._left_s: float | None = None  # set at the first prompt chunk
        self._prompt_tokens = 0

    def decode(self, start: int) -> None:
        """A decoding chunk (one token at position `start`) joins the step."""
        self._decode_tokens += 1
        self._decode_pairs += attended(start, 1)

    def prompt_chunk(self, start: int, length: int) -> int:
        """How much of a `length`-token prompt chunk from `start` fits (0: none); it is
        counted as taken."""
        if self._decode_tokens == 0:
            return length
        if self._left_s is None:
            decoding_s = self.fit.seconds(self._decode_tokens, self._decode_pairs)
            capped = decoding_s <= self.target_s / 2
            self._left_s = self.target_s - decoding_s if capped else float("inf")
        if self._left_s == float("inf"):
            return length
        fits = self.fit.chunk_within(start, self._left_s)
        n = min(length, max(fits, self.floor_tokens - self._prompt_tokens, 0))
        self._left_s -= n * self.fit.per_token_s + attended(start, n) * self.fit.per_pair_s
        self._prompt_tokens += n
        return n
