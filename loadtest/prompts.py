"""The workload: what each request asks, from --prompt or a JSONL --prompts-file."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from loadtest.config import LoadConfig
from loadtest.errors import LoadTestError


class PromptsError(LoadTestError):
    """A prompts file that cannot be used; the message is one line naming file and line."""


@dataclass(frozen=True)
class Prompt:
    """A raw prompt (streamed with GenerateStream) or a question (unary Answer RPC)."""

    text: str
    question: bool = False
    context: str = ""

    @property
    def rpc(self) -> str:
        return "Answer" if self.question else "GenerateStream"


def load_workload(config: LoadConfig) -> list[Prompt]:
    if config.prompts_file is None:
        return [Prompt(config.prompt)]
    return read_prompts_file(config.prompts_file)


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
