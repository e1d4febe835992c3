"""What one token looks like on the wire: its bytes, its text, and where it starts in the text.

The doors report logprobs per token, and a GPT-2 byte-level token is a run of bytes, not
always whole characters (an emoji is often four one-byte tokens). Each token gets:
- `bytes_of(id)`: its exact UTF-8 bytes (OpenAI's chat `bytes` field exists for this: a
  client joins the bytes of neighbouring tokens to get the characters back); None for a
  special token such as `<|endoftext|>`, which has no bytes of its own.
- `text_of(id)`: the bytes decoded, an incomplete character as U+FFFD (what vLLM returns
  and what `tokenizer.decode([id])` gives); a special token as its own name.
- `Offsets`: the character offset of each token in the text the tokens decode to (the
  completions `text_offset`): an incremental UTF-8 decoder over the tokens' bytes, so a
  token that continues a character points at that character's start, and a stream's
  offsets run on across its chunks. A special token is as wide as its name where the text
  shows it (an echoed prompt: `<|endoftext|>` is 13 characters) and takes no room where it
  does not (an answer: the engine's text skips special tokens).

Hand-written because `tokenizers` exposes only strings: a byte-level vocabulary stores each
byte as a printable stand-in character (GPT-2's table), and no public call maps a token back
to its raw bytes; the table is rebuilt here from its rule.
"""

from __future__ import annotations

import codecs
from collections.abc import Iterable
from functools import lru_cache

from tokenizers import Tokenizer, decoders


def _byte_of_stand_in() -> dict[str, int]:
    """GPT-2's byte-level table, inverted: the printable stand-in character -> the byte.

    The rule: the bytes that are printable Latin-1 ('!'..'~', '¡'..'¬', '®'..'ÿ') stand for
    themselves; every other byte, in increasing order, gets the next code point from 256."""
    printable = [*range(ord("!"), ord("~") + 1), *range(0xA1, 0xAC + 1), *range(0xAE, 0xFF + 1)]
    table = {chr(b): b for b in printable}
    extra = 0
    for b in range(256):
        if b not in printable:
            table[chr(256 + extra)] = b
            extra += 1
    return table


class TokenText:
    """Token ids -> bytes and text, for one tokenizer (cached: a vocabulary is a few MB)."""

    def __init__(self, tokenizer: Tokenizer, cache_size: int = 65_536) -> None:
        self._tokenizer = tokenizer
        self._byte_level = isinstance(tokenizer.decoder, decoders.ByteLevel)
        self._table = _byte_of_stand_in()
        added = tokenizer.get_added_tokens_decoder()
        self.special = frozenset(i for i, token in added.items() if token.special)
        self.bytes_of = lru_cache(maxsize=cache_size)(self._bytes_of)  # type: ignore[method-assign]
        self.text_of = lru_cache(maxsize=cache_size)(self._text_of)  # type: ignore[method-assign]

    def _bytes_of(self, token_id: int) -> bytes | None:
        if token_id in self.special:
            return None
        piece = self._tokenizer.id_to_token(token_id)
        if piece is None:  # outside the vocabulary (a model whose head is wider)
            return None
        if self._byte_level and all(ch in self._table for ch in piece):
            return bytes(self._table[ch] for ch in piece)
        return self._tokenizer.decode([token_id]).encode("utf-8")

    def _text_of(self, token_id: int) -> str:
        raw = self.bytes_of(token_id)
        if raw is None:
            piece = self._tokenizer.id_to_token(token_id)
            return piece if piece is not None else ""
        return raw.decode("utf-8", errors="replace")

    def offsets(self, start_chars: int = 0) -> Offsets:
        return Offsets(self, start_chars)


class Offsets:
    """Character offsets of consecutive tokens in the text they decode to, counted from
    `start_chars`; keep one per text (a stream's choice) and feed it every token in order."""

    def __init__(self, text: TokenText, start_chars: int = 0) -> None:
        self._text = text
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self.chars = start_chars  # characters complete so far

    def take(self, token_ids: Iterable[int], shows_special: bool = True) -> list[int]:
        """Each token's start: the characters complete before it (a token that finishes a
        character begun earlier starts where that character starts). `shows_special`:
        whether the text shows a special token's name (a prompt decoded for echo does; an
        answer's text, detokenized with special tokens skipped, does not)."""
        starts = []
        for token_id in token_ids:
            starts.append(self.chars)
            raw = self._text.bytes_of(token_id)
            if raw:
                self.chars += len(self._decoder.decode(raw))
            elif raw is None and shows_special:
                self.chars += len(self._text.text_of(token_id))
        return starts
