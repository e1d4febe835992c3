"""Synthetic prompts of given token lengths (and output lengths), as vLLM's random dataset.

Prompts are runs of common words that GPT-2-style BPE tokenizers keep as one token each
(" the", " of", ...), so N words are about N tokens; with --tokenizer (the artifact's
tokenizer.json) only words that really are one token are used and each prompt is checked,
so lengths are exact. The server's reported prompt tokens are in the report either way.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from loadtest.config import LoadConfig
from loadtest.errors import LoadTestError
from loadtest.prompts import Prompt

_COMMON = """the of and to in is you that it for on with as are be this was have or at by not
from but what all an your can more if about which when there will one do has up out so time
my we new use how like other only some could its then them these may now"""
WORDS = tuple(_COMMON.split())
POOL = 4096  # distinct synthetic prompts at most; requests use them in turn


def synthetic_workload(config: LoadConfig) -> list[Prompt]:
    """One Prompt per request of the run (at most POOL, then reused in turn)."""
    assert config.synthetic_input is not None
    rng = np.random.default_rng(config.seed)
    count = min((config.requests or POOL) + config.warmup, POOL)
    inputs = config.synthetic_input.sample(rng, count)
    outputs = (
        config.synthetic_output.sample(rng, count)
        if config.synthetic_output is not None
        else [None] * count
    )
    words = [" " + w for w in WORDS]
    encode = None
    if config.tokenizer is not None:
        encode = tokenizer_counter(config.tokenizer)
        words = [w for w in words if encode(w) == 1]
        if not words:
            raise LoadTestError(f"--tokenizer: {config.tokenizer} keeps no common word whole")
    picks = rng.integers(0, len(words), size=int(np.sum(inputs)))
    prompts, at = [], 0
    for n_in, n_out in zip(inputs, outputs, strict=True):
        text = "".join(words[i] for i in picks[at : at + n_in])
        at += n_in
        if encode is not None:
            text = fit(text, int(n_in), encode)
        prompts.append(Prompt(text, max_new_tokens=None if n_out is None else int(n_out)))
    return prompts


def fit(text: str, tokens: int, encode) -> str:
    """Drop trailing words until `text` is at most `tokens` tokens (merges across words are
    rare but possible)."""
    while encode(text) > tokens and " " in text.strip():
        text = text[: text.rstrip().rfind(" ")]
    return text


def tokenizer_counter(path: Path):
    """text -> token count with the model's tokenizer.json (the `tokenizers` library)."""
    try:
        from tokenizers import Tokenizer
    except ImportError:  # pragma: no cover - a serving install always has it
        raise LoadTestError("--tokenizer needs the `tokenizers` package") from None
    try:
        tokenizer = Tokenizer.from_file(str(path))
    except Exception as e:  # the library raises its own Exception type
        raise LoadTestError(f"--tokenizer: cannot load {path}: {e}") from None
    return lambda text: len(tokenizer.encode(text, add_special_tokens=False).ids)
