"""What `kvserve-train` is asked to do: one training run, or one scoring of a checkpoint.

The defaults are set here only (training/cli.py and eval_cli.py build their flags from these);
None means "the preset's value". Kept free of torch so `kvserve-train --help` is instant.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from artifact import PromptTemplate
from training.presets import Preset
from training.validation import DEFAULT_FRACTION


@dataclass(frozen=True)
class TrainConfig:
    """Everything one run needs; None means "the preset's value"."""

    data: Path | str
    out: Path
    base: str = "tiny"
    preset: str | Preset = "demo"
    eval_data: Path | str | None = None  # extra heldout rows from another source
    # share of the facts that give one train phrasing to the validation part (0: none)
    validation: float = DEFAULT_FRACTION
    epochs: float | None = None
    max_steps: int | None = None
    learning_rate: float | None = None
    batch_size: int | None = None
    grad_accum: int | None = None
    seed: int = 42
    exact_match: bool | None = None
    keep_checkpoints: bool = False
    resume: bool = False
    template: PromptTemplate = field(default_factory=PromptTemplate)


@dataclass(frozen=True)
class EvalConfig:
    """`kvserve-train eval`: which checkpoint, on which rows, how long the answers."""

    checkpoint: Path
    data: Path | str
    eval_data: Path | str | None = None  # more rows, all counted as heldout
    max_new_tokens: int = 48
    samples: int = 3  # sample answers printed per split
