"""The workload: what each request asks, from --prompt, a JSONL --prompts-file, the bundled
data or synthetic lengths (synthetic.py); then fitted to the RPC the run sends."""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path

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
        from loadtest.synthetic import synthetic_workload  # numpy + maybe tokenizers: on demand

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
