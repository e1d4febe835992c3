"""The update stage of an engine step: logits -> tokens -> text pieces -> events.

For every model call of the step (server/step.py Batch): pick each row's next token
(server/sampling.py), detokenize it into a streamable piece (server/text_stream.py), and
finish the request on eos, a stop string, its max_new_tokens or the context window.
Requests the plan dropped get their last event here too. Returns the events to deliver and
the step's stats; it never calls the runner or touches the queue.

Failures stay with their requests: a model call that raised fails its own requests, a
sampling error fails that call's requests; the rest of the step goes on.
"""

from __future__ import annotations

import logging
import time
from dataclasses import replace

import numpy as np

from server.logprobs import TokenLogprob, token_logprobs
from server.request import FinishReason, Request, RequestStatus, StreamEvent
from server.sampling import select_tokens
from server.step import Batch, ModelOutput, Scored, StepPlan, StepResult, StepStats
from server.text_stream import Detokenize, TextStream

log = logging.getLogger(__name__)
NO_TOKENS = np.zeros(0, dtype=np.int64)


class Updater:
    def __init__(self, eos_token_id: int, max_context: int, detokenize: Detokenize) -> None:
        self.eos_token_id = eos_token_id
        self.max_context = max_context  # the model's max positions
        self.detokenize = detokenize

    def update(self, plan: StepPlan, output: ModelOutput) -> StepResult:
        admitted = plan.admitted
        stats = StepStats(
            prefill_requests=len(admitted),
            prompt_tokens=sum(len(r.prompt_ids) for r in admitted),
            queue_seconds=[r.scheduled_at - r.arrival for r in admitted],
        )
        result = StepResult(stats=stats)
        now = time.monotonic()
        for request, reason in plan.dropped:
            self._finish(request, reason, now, result)
        for batch in output.failed:  # a call that failed fails its own requests alone
            self._next_tokens(batch, result)
        for scored in output.scored:
            _score_prompt(scored)
        if output.sampled is not None:
            self._next_tokens(output.sampled, result)
        return result

    def fail_all(
        self, requests: list[Request], error: Exception
    ) -> list[tuple[Request, StreamEvent]]:
        """Last events for the requests of a step that crashed (the finished ones had theirs)."""
        result, now = StepResult(), time.monotonic()
        for request in requests:
            if request.status is not RequestStatus.FINISHED:
                self._finish(request, FinishReason.ERROR, now, result, error=_describe(error))
        return result.events

    def _next_tokens(self, batch: Batch, result: StepResult) -> None:
        if batch.error is not None:
            self._fail(batch.requests, batch.error, result)
            return
        for request in batch.requests:  # a first token opens the request's text
            if request.text is None:
                request.text = TextStream(self.detokenize, request.params.stop)
        requests, logits = batch.requests, batch.logits
        if any(r.params.max_new_tokens == 0 for r in requests):
            requests, logits = self._finish_scoring_only(requests, logits, result)
            if not requests:
                return
        # one draw per request per step, taken once: a retry reuses it, so a seeded request's
        # tokens do not depend on whether another's sampling failed
        uniforms = np.array([r.rng.random() for r in requests])
        picked = self._sample_rows(requests, logits, uniforms, result)
        now = time.monotonic()
        result.stats.batch_size += len(picked)
        result.stats.generated_tokens += len(picked)
        for request, token, logprob in picked:
            try:
                self._append(request, token, now, result, logprob)
            except Exception as error:  # its detokenizer or stop rule: this request only
                self._fail([request], error, result)

    def _finish_scoring_only(
        self, requests: tuple[Request, ...], logits: np.ndarray, result: StepResult
    ) -> tuple[tuple[Request, ...], np.ndarray]:
        """Requests that asked for no token (max_new_tokens 0: their prompt is scored) finish
        here; the others and their logits rows go on."""
        now = time.monotonic()
        keep = np.array([r.params.max_new_tokens > 0 for r in requests])
        for request in (r for r, k in zip(requests, keep, strict=True) if not k):
            self._finish(request, FinishReason.LENGTH, now, result)
        return tuple(r for r, k in zip(requests, keep, strict=True) if k), logits[keep]

    def _sample_rows(
        self,
        requests: tuple[Request, ...],
        logits: np.ndarray,
        uniforms: np.ndarray,
        result: StepResult,
    ) -> list[tuple[Request, int, TokenLogprob | None]]:
        """Each request's next token and its logprob. A batch that raises (a sampling bug, an
        odd knob) is retried row by row, so it fails only the requests that cause it."""
        try:
            return self._sample(requests, logits, uniforms)
        except Exception:
            picked = []
            for i, request in enumerate(requests):
                try:
                    picked += self._sample((request,), logits[i : i + 1], uniforms[i : i + 1])
                except Exception as error:
                    self._fail([request], error, result)
            return picked

    @staticmethod
    def _sample(
        requests: tuple[Request, ...], logits: np.ndarray, uniforms: np.ndarray
    ) -> list[tuple[Request, int, TokenLogprob | None]]:
        params = [r.params for r in requests]
        seen = [
            NO_TOKENS if r.params.repetition_penalty == 1.0 else r.seen_tokens for r in requests
        ]
        tokens = select_tokens(logits, params, seen, uniforms)
        logprobs = _sampled_logprobs(requests, logits, tokens)
        return list(zip(requests, tokens.tolist(), logprobs, strict=True))

    def _append(
        self,
        request: Request,
        token: int,
        now: float,
        result: StepResult,
        logprob: TokenLogprob | None = None,
    ) -> None:
        stats = result.stats
        if request.first_token_at is None:
            request.first_token_at = now
            stats.ttft_seconds.append(now - request.arrival)
        else:
            stats.itl_seconds.append(now - request.last_token_at)
        request.last_token_at = now
        request.output_ids.append(token)
        logprobs = () if logprob is None else (logprob,)
        if token == self.eos_token_id and not request.params.ignore_eos:
            self._finish(request, FinishReason.STOP, now, result, "", [token], logprobs=logprobs)
            return
        piece = request.text.push(token)
        reason = self._finish_reason(request)
        if reason is None:
            event = StreamEvent(
                piece,
                [token],
                request.request_id,
                logprobs=logprobs,
                prompt_logprobs=_prompt_logprobs(request),
            )
            result.events.append((request, event))
        else:
            self._finish(request, reason, now, result, piece, [token], logprobs=logprobs)

    def _finish_reason(self, request: Request) -> FinishReason | None:
        if request.text.stopped:
            return FinishReason.STOP
        if len(request.output_ids) >= request.params.max_new_tokens:
            return FinishReason.LENGTH
        if len(request.prompt_ids) + len(request.output_ids) >= self.max_context:
            return FinishReason.LENGTH
        return None

    def _finish(
        self,
        request: Request,
        reason: FinishReason,
        now: float,
        result: StepResult,
        piece: str = "",
        token_ids: list[int] | None = None,
        error: str = "",
        logprobs: tuple[TokenLogprob, ...] = (),
    ) -> None:
        request.status = RequestStatus.FINISHED
        if reason in (FinishReason.STOP, FinishReason.LENGTH):
            piece += request.text.flush()
        result.stats.finished.append(reason)
        event = StreamEvent(
            text=piece,
            token_ids=token_ids or [],
            request_id=request.request_id,
            finish_reason=reason,
            prompt_tokens=len(request.prompt_ids),
            completion_tokens=len(request.output_ids),
            timing=request.timing(now),
            error=error,
            logprobs=logprobs,
            prompt_logprobs=None if error else _prompt_logprobs(request),
        )
        result.events.append((request, event))

    def _fail(self, requests, error: Exception, result: StepResult) -> None:
        ids = [r.request_id for r in requests]
        log.exception("engine step failed for requests %s", ids, exc_info=error)
        now = time.monotonic()
        for request in requests:
            self._finish(request, FinishReason.ERROR, now, result, error=_describe(error))


def _sampled_logprobs(
    requests: tuple[Request, ...], logits: np.ndarray, tokens: np.ndarray
) -> list[TokenLogprob | None]:
    """The sampled tokens' logprobs for the requests that asked (one log-softmax over their
    rows only: a batch where nobody asked pays nothing)."""
    asked = [i for i, r in enumerate(requests) if r.params.logprobs is not None]
    out: list[TokenLogprob | None] = [None] * len(requests)
    if not asked:
        return out
    top = max(requests[i].params.logprobs for i in asked)
    for i, logprob in zip(asked, token_logprobs(logits[asked], tokens[asked], top), strict=True):
        out[i] = _trimmed(logprob, requests[i].params.logprobs)
    return out


def _score_prompt(scored: Scored) -> None:
    """Log-probabilities of the prompt tokens a scoring chunk's positions predict, kept on
    the request until its first event (a chunk recomputed after a preemption adds nothing)."""
    request, prompt = scored.request, scored.request.prompt_ids
    if request.prompt_scores is None:
        request.prompt_scores = [None]  # the first prompt token has no context to score it
    done = len(request.prompt_scores)  # prompt positions scored so far
    first = max(done - 1, scored.start)  # row i predicts the token at start + i + 1
    last = min(scored.start + len(scored.logits), len(prompt) - 1)
    if first >= last:
        return
    rows = scored.logits[first - scored.start : last - scored.start]
    targets = np.asarray(prompt[first + 1 : last + 1], dtype=np.int64)
    request.prompt_scores += token_logprobs(rows, targets, request.params.prompt_logprobs)


def _prompt_logprobs(request: Request) -> tuple[TokenLogprob | None, ...] | None:
    """The prompt's logprobs for the request's first event (None after, or when not asked)."""
    if request.params.prompt_logprobs is None or request.prompt_scores_sent:
        return None
    request.prompt_scores_sent = True
    scores = request.prompt_scores or [None]
    return tuple(scores)


def _trimmed(logprob: TokenLogprob, top: int) -> TokenLogprob:
    return logprob if len(logprob.top) == top else replace(logprob, top=logprob.top[:top])


def _describe(error: Exception) -> str:
    return str(error) or repr(error)
