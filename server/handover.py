"""The hand-over: judge an answer by its confidence, and hand the question to a person when
the model is not sure enough.

`HandOver` holds the artifact's calibration (the manifest's `confidence`, fitted at training
time: artifact/confidence.py), the server's threshold (`--handover-threshold`, default the
manifest's) and its hand-over text (`--handover-text`). A door that answers a question
(the Answer RPC, chat completions) asks the engine for the answer's token logprobs, calls
`judge`, and when the verdict says so replies with `text` instead of the guess; the verdict
also goes to `Metrics.observe_answer`.

Threshold: an answer is given when its confidence >= threshold, handed over below it.
0 never hands over; 1 always does. An artifact without a calibration (exported before
issue 21, or trained without a validation part) gives no confidence and never hands over.
Hand-written: it is a comparison and a sentence; what matters is that every door uses it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from artifact.confidence import Calibration
from server.validation import InvalidArgument

DEFAULT_TEXT = "I'm not sure about that one. Let me get a person to help you."


@dataclass(frozen=True)
class Verdict:
    """What a door learns about one answer."""

    confidence: float | None  # P(right); None when the artifact has no calibration
    handed_over: bool  # True: reply with the hand-over text, not the answer


NO_VERDICT = Verdict(confidence=None, handed_over=False)


def check_threshold(value: float, field: str) -> float:
    """A hand-over threshold from a request or an option: a number in [0, 1]; anything else
    (NaN included) is InvalidArgument naming `field`."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InvalidArgument(field, f"must be a number between 0 and 1, got {value!r}")
    if not (math.isfinite(value) and 0.0 <= value <= 1.0):
        raise InvalidArgument(
            field, f"must be between 0 and 1 (0 = never hand over, 1 = always), got {value}"
        )
    return float(value)


class HandOver:
    """The server's hand-over policy: one per server, shared by both doors."""

    def __init__(
        self,
        calibration: Calibration | None,
        threshold: float | None = None,
        text: str = DEFAULT_TEXT,
    ) -> None:
        if threshold is not None:
            threshold = check_threshold(threshold, "handover_threshold")
        self.calibration = calibration
        # None = the manifest's default; no calibration: nothing to compare against
        if threshold is None and calibration is not None:
            threshold = calibration.threshold
        self.threshold = threshold
        self.text = text

    @property
    def enabled(self) -> bool:
        """Whether answers get a confidence at all (the artifact has a calibration)."""
        return self.calibration is not None

    def judge(self, token_logprobs: Sequence[float], threshold: float | None = None) -> Verdict:
        """The verdict on one answer from its tokens' logprobs (the stop token excluded: see
        `answer_logprobs`), against `threshold` (a request's own, already checked) or the
        server's."""
        if self.calibration is None:
            return NO_VERDICT
        confidence = self.calibration.confidence(token_logprobs)
        limit = self.threshold if threshold is None else threshold
        handed_over = limit is not None and limit > 0.0 and (limit >= 1.0 or confidence < limit)
        return Verdict(confidence=confidence, handed_over=handed_over)


def answer_logprobs(
    token_ids: Sequence[int], logprobs: Sequence[float], eos_token_id: int
) -> list[float]:
    """The logprobs the confidence is computed over: one per answer token, the eos token
    left out (training's feature stops before the stop token). `token_ids` and `logprobs`
    pair up one to one, as StreamEvent's do."""
    if len(token_ids) != len(logprobs):
        raise ValueError(f"{len(token_ids)} tokens but {len(logprobs)} logprobs")
    return [lp for t, lp in zip(token_ids, logprobs, strict=True) if t != eos_token_id]
