"""Read and validate the training hand-off: an HF GPT-2 checkpoint dir.

Everything the rest of the export needs from the checkpoint is gathered here once, into a
frozen `Checkpoint`, so later steps never re-parse config files or guess defaults.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from artifact import PROMPT_FILE, Architecture, PromptTemplate
from export import ExportError

WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
TOKENIZER_FILE = "tokenizer.json"
# GPT2Config's defaults: a hand-written config.json may omit these, and transformers (which
# the export and the parity check load the model with) then uses exactly these values.
GPT2_DEFAULTS = {"n_layer": 12, "n_head": 12, "n_embd": 768, "n_positions": 1024}


@dataclass(frozen=True)
class Checkpoint:
    path: Path
    name: str
    architecture: Architecture
    eos_token_id: int
    pad_token_id: int
    prompt_template: PromptTemplate
    has_prompt_file: bool

    @property
    def tokenizer_file(self) -> Path:
        return self.path / TOKENIZER_FILE


def load_checkpoint(path: Path) -> Checkpoint:
    """Check `path` is a GPT-2 checkpoint dir and read its facts; ExportError names the problem."""
    path = Path(path).resolve()
    if not path.is_dir():
        raise ExportError(f"{path}: no such checkpoint directory")
    config = _read_config(path)
    _require_files(path)
    eos = _token_id(config, "eos_token_id", path)
    pad = config.get("pad_token_id")
    return Checkpoint(
        path=path,
        name=path.name,
        architecture=_architecture(config, path),
        eos_token_id=eos,
        pad_token_id=pad if isinstance(pad, int) else eos,  # GPT-2 pads with eos by convention
        prompt_template=PromptTemplate.load(path),
        has_prompt_file=(path / PROMPT_FILE).is_file(),
    )


def _read_config(path: Path) -> dict:
    config_path = path / "config.json"
    if not config_path.is_file():
        raise ExportError(f"{path}: not an HF checkpoint dir (no config.json)")
    try:
        config = json.loads(config_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ExportError(f"{config_path}: not valid JSON ({e})") from None
    if not isinstance(config, dict) or config.get("model_type") != "gpt2":
        kind = config.get("model_type") if isinstance(config, dict) else None
        raise ExportError(f"{config_path}: model_type is {kind!r}, kvserve exports only 'gpt2'")
    return config


def _require_files(path: Path) -> None:
    if not any((path / name).is_file() for name in WEIGHT_FILES):
        raise ExportError(f"{path}: no weights ({' or '.join(WEIGHT_FILES)})")
    if not (path / TOKENIZER_FILE).is_file():
        raise ExportError(f"{path}: no {TOKENIZER_FILE} (save the tokenizer with the checkpoint)")
    from tokenizers import Tokenizer  # the server's tokenizer library: it must read this file

    try:
        Tokenizer.from_file(str(path / TOKENIZER_FILE))
    except Exception as e:  # tokenizers raises a bare Exception on a malformed file
        raise ExportError(f"{path / TOKENIZER_FILE}: not a tokenizers file ({e})") from None


def _token_id(config: dict, key: str, path: Path) -> int:
    value = config.get(key)
    if not isinstance(value, int):
        raise ExportError(f"{path / 'config.json'}: {key} missing or not an integer")
    return value


def _architecture(config: dict, path: Path) -> Architecture:
    values = {**GPT2_DEFAULTS, **{k: config[k] for k in GPT2_DEFAULTS if k in config}}
    if "vocab_size" not in config:
        raise ExportError(f"{path / 'config.json'}: vocab_size missing")
    n_embd, n_head = int(values["n_embd"]), int(values["n_head"])
    if n_embd % n_head:
        raise ExportError(f"{path / 'config.json'}: n_embd {n_embd} not divisible by n_head")
    return Architecture(
        num_layers=int(values["n_layer"]),
        num_heads=n_head,
        head_dim=n_embd // n_head,
        hidden_size=n_embd,
        vocab_size=int(config["vocab_size"]),
        max_positions=int(values["n_positions"]),
    )
