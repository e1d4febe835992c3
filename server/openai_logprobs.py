"""Token logprobs in OpenAI's shapes: the completions `logprobs` object and the chat
`logprobs.content` list, from the engine's TokenLogprobs.

Which tokens are listed: a completion lists every token the engine generated, the eos that
ended it included (its text adds nothing to `text`, as with vLLM; lm-evaluation-harness reads
`token_logprobs[ctxlen:-1]` of an echo + max_tokens 1 reply, so the one generated token must
be there whatever it is); chat lists the answer's tokens without that eos (it is no part of
the message). A token's text, bytes and offset come from server/token_text.py. Hand-written:
the shapes are OpenAI's, the numbers the engine's; no library renders one from the other.
"""

from __future__ import annotations

from collections.abc import Sequence

from server.logprobs import TokenLogprob
from server.request import FinishReason
from server.token_text import Offsets, TokenText

UNLIKELY = -9999.0  # OpenAI's stand-in for a logprob JSON cannot carry (-inf)

ScoredToken = tuple[int, TokenLogprob | None]  # a token and its logprob (None: the prompt's first)


def json_logprob(logprob: float) -> float:
    """A logprob JSON can carry: -inf (and NaN) -> -9999.0."""
    return logprob if logprob >= UNLIKELY else UNLIKELY


class LogprobRenderer:
    """The logprobs of one request's tokens, rendered with `top` alternatives per token."""

    def __init__(self, token_text: TokenText, eos_token_id: int, top: int) -> None:
        self.token_text = token_text
        self.eos_token_id = eos_token_id
        self.top = top  # alternatives shown per token

    @staticmethod
    def scored(token_ids: Sequence[int], logprobs: Sequence[TokenLogprob]) -> list[ScoredToken]:
        """Generated tokens with their logprobs, every one (a completion's, eos included)."""
        return list(zip(token_ids, logprobs, strict=True))

    def chat_answer(
        self,
        token_ids: Sequence[int],
        logprobs: Sequence[TokenLogprob],
        finish: FinishReason | None,
    ) -> list[ScoredToken]:
        """A chat answer's tokens with their logprobs, without the eos that ended it: it is
        no part of the message (OpenAI shows none)."""
        scored = self.scored(token_ids, logprobs)
        if finish is FinishReason.STOP and scored and scored[-1][0] == self.eos_token_id:
            scored.pop()
        return scored

    @staticmethod
    def prompt(
        prompt_ids: Sequence[int], logprobs: Sequence[TokenLogprob | None] | None
    ) -> list[ScoredToken]:
        return [] if logprobs is None else list(zip(prompt_ids, logprobs, strict=True))

    def completion(
        self, prompt: Sequence[ScoredToken], answer: Sequence[ScoredToken], offsets: Offsets
    ) -> dict:
        """Completions' `logprobs` of the echoed prompt's tokens (maybe none) then the
        answer's: tokens, token_logprobs, top_logprobs (the N likeliest and the chosen token:
        up to N + 1 entries, as OpenAI's reference says), and text_offset (each token's first
        character, counted from the prompt's start; `offsets` runs on across a stream)."""
        text_of = self.token_text.text_of
        tokens, token_logprobs, top_logprobs = [], [], []
        for token_id, lp in (*prompt, *answer):
            tokens.append(text_of(token_id))
            if lp is None:  # the prompt's first token: nothing before it to predict it
                token_logprobs.append(None)
                top_logprobs.append(None)
                continue
            token_logprobs.append(json_logprob(lp.logprob))
            top: dict[str, float] = {}
            for alternative, logprob in lp.top[: self.top]:
                top.setdefault(text_of(alternative), json_logprob(logprob))
            top.setdefault(text_of(lp.token_id), json_logprob(lp.logprob))
            top_logprobs.append(top)
        # the echoed prompt's text shows special tokens by name; the answer's skips them
        text_offset = offsets.take(t for t, _ in prompt)
        text_offset += offsets.take((t for t, _ in answer), shows_special=False)
        return {
            "tokens": tokens,
            "token_logprobs": token_logprobs,
            "top_logprobs": top_logprobs,
            "text_offset": text_offset,
        }

    def chat(self, scored: Sequence[ScoredToken]) -> dict:
        """Chat's `logprobs`: content[] with token, logprob, bytes (the token's own UTF-8
        bytes: an emoji split over tokens joins back from them) and top_logprobs."""
        content = []
        for token_id, lp in scored:
            assert lp is not None  # answers' tokens all have one
            entry = self._chat_entry(token_id, lp.logprob)
            entry["top_logprobs"] = [
                self._chat_entry(t, logprob) for t, logprob in lp.top[: self.top]
            ]
            content.append(entry)
        return {"content": content, "refusal": None}

    def _chat_entry(self, token_id: int, logprob: float) -> dict:
        raw = self.token_text.bytes_of(token_id)
        return {
            "token": self.token_text.text_of(token_id),
            "logprob": json_logprob(logprob),
            "bytes": None if raw is None else list(raw),
        }
