"""Incremental detokenization and stop strings, with a byte-level toy decoder."""

from __future__ import annotations

from server.text_stream import TextStream

# token id = one byte; detokenize like a byte-level BPE does, replacing partial UTF-8
detokenize = lambda ids: bytes(ids).decode("utf-8", errors="replace")  # noqa: E731


def stream(text: str, stop: tuple[str, ...] = ()) -> tuple[list[str], TextStream]:
    s = TextStream(detokenize, stop)
    pieces = []
    for b in text.encode():
        pieces.append(s.push(b))
        if s.stopped:
            break
    pieces.append(s.flush())
    return pieces, s


def test_pieces_join_to_the_text():
    pieces, _ = stream("hello world")
    assert "".join(pieces) == "hello world"


def test_never_emits_half_a_utf8_character():
    pieces, _ = stream("héllo €uro 😀!")
    assert "".join(pieces) == "héllo €uro 😀!"
    assert all("\ufffd" not in p for p in pieces)
    assert "😀" in pieces  # released whole, once its 4th byte arrived


def test_stop_string_is_cut_and_not_returned():
    pieces, s = stream("answer: yes\nQuestion: more", stop=("\nQuestion:",))
    assert "".join(pieces) == "answer: yes"
    assert s.stopped


def test_text_that_may_start_a_stop_is_held_back_then_released():
    s = TextStream(detokenize, ("END",))
    out = [s.push(b) for b in b"aE"]
    assert out == ["a", ""]  # "E" might start "END"
    assert s.push(ord("x")) == "Ex"  # it did not


def test_stop_spanning_token_boundaries():
    pieces, s = stream("abcENxEND tail", stop=("END",))
    assert "".join(pieces) == "abcENx"
    assert s.stopped


def test_flush_releases_held_back_text_at_the_end():
    pieces, s = stream("ends with EN", stop=("END",))
    assert "".join(pieces) == "ends with EN"
    assert not s.stopped
