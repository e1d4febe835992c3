"""The workload: what each request asks, from --prompt, a JSONL --prompts-file, the bundled
data or synthetic lengths; then fitted to the RPC the run sends.

Synthetic prompts have given token lengths (and output lengths), as vLLM's random dataset.

Prompts are runs of common words that GPT-2-style BPE tokenizers keep as one token each
(" the", " of", ...), so N words are about N tokens; with --tokenizer (the artifact's
tokenizer.json) only words that really are one token are used and each prompt is checked,
so lengths are exact. The server's reported prompt tokens are in the report either way.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from loadtest.config import LoadConfig
from loadtest.errors import LoadTestError

# The bundled sample data ships with the source tree (data/ beside this package).
BUNDLED = Path(__file__).resolve().parents[1] / "data" / "support_qa.jsonl"


class PromptsError(LoadTestError):
    """A prompts file that cannot be used; the message is one line naming file and line."""


@dataclass(frozen=True)
class Prompt:
    """A raw prompt (Generate/GenerateStream) or a question (the Answer RPC, or streamed once
    formatted with the model's template). `max_new_tokens` overrides the run's (synthetic)."""

    text: str
    question: bool = False
    context: str = ""
    max_new_tokens: int | None = None


def load_workload(config: LoadConfig) -> list[Prompt]:
    if config.synthetic_input is not None:
        return synthetic_workload(config)
    if config.bundled:
        return read_bundled(BUNDLED)
    if config.prompts_file is None:
        return [Prompt(config.prompt)]
    return read_prompts_file(config.prompts_file)


def for_rpc(workload: list[Prompt], rpc: str, template: str) -> list[Prompt]:
    """Streaming runs send questions as prompts formatted with the model's template (from
    GetModelInfo), so they get TTFT/ITL too. Questions with a context, or when the server
    gives no template, stay Answer calls: ModelInfo carries only the plain template."""
    if rpc != "stream" or "{question}" not in template:
        return workload
    return [
        replace(p, text=template.replace("{question}", p.text.strip()), question=False)
        if p.question and not p.context
        else p
        for p in workload
    ]


def read_bundled(path: Path) -> list[Prompt]:
    if not path.is_file():
        raise PromptsError(
            f"--bundled: {path} is not there (the bundled data ships with the kvserve source "
            "tree); use --prompts-file"
        )
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]
    return [Prompt(r["question"], question=True) for r in rows if _text(r.get("question"))]


def read_prompts_file(path: Path) -> list[Prompt]:
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise PromptsError(f"--prompts-file: no such file: {path}") from None
    except (OSError, UnicodeDecodeError) as e:
        raise PromptsError(f"--prompts-file: cannot read {path}: {e}") from None
    prompts = [parse_line(path, n, line) for n, line in enumerate(lines, 1) if line.strip()]
    if not prompts:
        raise PromptsError(f"--prompts-file: {path} holds no prompts")
    return prompts


def parse_line(path: Path, number: int, line: str) -> Prompt:
    where = f"{path} line {number}"
    try:
        row = json.loads(line)
    except json.JSONDecodeError as e:
        raise PromptsError(f"{where}: not JSON ({e.msg})") from None
    if isinstance(row, dict) and _text(row.get("prompt")):
        return Prompt(row["prompt"])
    if isinstance(row, dict) and _text(row.get("question")):
        context = row.get("context") or ""
        if not isinstance(context, str):
            raise PromptsError(f'{where}: "context" must be a string')
        return Prompt(row["question"], question=True, context=context)
    raise PromptsError(f'{where}: expected {{"prompt": "..."}} or {{"question": "..."}}')


def _text(value: object) -> bool:
    return isinstance(value, str) and bool(value.strip())


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
