"""Context in the prompt: cut from the left to fit the window, never the question."""

from __future__ import annotations

from artifact import PromptTemplate
from training.data import QAExample
from training.formatting import IGNORE_INDEX, encode_example

TEMPLATE = PromptTemplate()


class CharTokenizer:
    """One token per character (id = code point), eos = 0."""

    eos_token_id = 0

    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
        return [ord(c) for c in text]


def count(text: str) -> int:
    return len(text)


def test_fit_keeps_a_short_prompt_whole() -> None:
    assert TEMPLATE.fit("Q?", "one two", 100, count) == TEMPLATE.format("Q?", "one two")


def test_fit_drops_whole_words_from_the_start_of_the_context() -> None:
    context = "w1 w2 w3 w4 w5 w6"
    full = TEMPLATE.format("Why?", context)
    prompt = TEMPLATE.fit("Why?", context, len(full) - 6, count)  # room for 6 chars less
    assert prompt == TEMPLATE.format("Why?", "w3 w4 w5 w6")  # the tail of the context stays
    assert len(prompt) <= len(full) - 6


def test_fit_drops_the_context_entirely_but_never_the_question() -> None:
    bare = TEMPLATE.format("Why is the sky blue?")
    assert TEMPLATE.fit("Why is the sky blue?", "long " * 50, len(bare), count) == bare
    assert TEMPLATE.fit("Why is the sky blue?", "long " * 50, len(bare) - 1, count) is None


def test_long_context_is_cut_so_the_whole_answer_fits() -> None:
    context = " ".join(f"c{i}" for i in range(100))
    ex = QAExample(question="Which one?", answer="c99", context=context)
    enc = encode_example(CharTokenizer(), TEMPLATE, ex, max_length=80)
    text = "".join(chr(t) for t in enc.input_ids if t)
    assert len(enc.input_ids) <= 80
    assert text.endswith("c98 c99\nQuestion: Which one?\nAnswer: c99")  # context cut left
    assert "c0 " not in text
    assert enc.input_ids[-1] == 0  # eos kept: the target was not cut
    answer = [
        t for t, label in zip(enc.input_ids, enc.labels, strict=True) if label != IGNORE_INDEX
    ]
    assert "".join(chr(t) for t in answer[:-1]) == " c99"
