"""Token ids -> text pieces for streaming: incremental detokenization and stop strings.

Hand-written because `tokenizers` detokenizes whole sequences only. Byte-level BPE can split one
UTF-8 character over several tokens, so a piece is released only once it detokenizes without a
replacement character (the offset scheme TGI and vLLM use). Text that could be the start of
a stop string is held back until it is clear, and the stop text itself is never returned.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tokenizers import Tokenizer

Detokenize = Callable[[Sequence[int]], str]  # token ids -> text, special tokens skipped
REPLACEMENT = "\ufffd"
CONTEXT_TOKENS = 6  # tokens detokenized again with the new ones, so merges at the seam come right


def detokenizer(tokenizer: Tokenizer) -> Detokenize:
    """The served tokenizer's ids -> text, special tokens skipped (streamed text never shows
    eos or padding tokens)."""
    return lambda ids: tokenizer.decode(list(ids), skip_special_tokens=True)


@dataclass
class TextStream:
    detokenize: Detokenize
    stop: tuple[str, ...] = ()
    tokens: list[int] = field(default_factory=list)
    text: str = ""  # all text so far (before stop truncation)
    emitted: int = 0  # characters of `text` already returned
    stopped: bool = False
    _prefix: int = 0  # tokens[_prefix:_read] is the context detokenized before the next piece
    _read: int = 0

    def push(self, token_id: int) -> str:
        """Add one token; return the text that is now safe to send (maybe empty)."""
        self.tokens.append(token_id)
        before = self.detokenize(self.tokens[self._prefix : self._read])
        after = self.detokenize(self.tokens[self._prefix :])
        if after.endswith(REPLACEMENT) or len(after) < len(before):
            return ""  # in the middle of a UTF-8 character
        self.text += after[len(before) :]
        self._prefix = max(0, len(self.tokens) - CONTEXT_TOKENS)
        self._read = len(self.tokens)
        return self._release()

    def flush(self) -> str:
        """At the end: whatever is still held back (no stop string can complete now)."""
        if self.stopped:
            return ""
        tail = self.detokenize(self.tokens[self._prefix :])[
            len(self.detokenize(self.tokens[self._prefix : self._read])) :
        ]
        self.text += tail
        piece, self.emitted = self.text[self.emitted :], len(self.text)
        return piece

    def _release(self) -> str:
        if self.stop:
            hit = self._find_stop()
            if hit is not None:
                self.stopped = True
                piece, self.emitted = self.text[self.emitted : hit], hit
                return piece
        safe = len(self.text) - self._held_back()
        if safe <= self.emitted:
            return ""
        piece, self.emitted = self.text[self.emitted : safe], safe
        return piece

    def _find_stop(self) -> int | None:
        longest = max(len(s) for s in self.stop)
        start = max(0, self.emitted - longest)
        hits = [i for i in (self.text.find(s, start) for s in self.stop) if i >= 0]
        return min(hits) if hits else None

    def _held_back(self) -> int:
        """Length of the longest text suffix that is a proper prefix of a stop string."""
        best = 0
        for s in self.stop:
            for n in range(min(len(s) - 1, len(self.text)), best, -1):
                if self.text.endswith(s[:n]):
                    best = n
                    break
        return best
