"""Named training recipes. Values here are the only tuning knobs; the CLI can override a few.

- test:    a handful of steps on a very small model, for tests that need a checkpoint fast.
- demo:    a few minutes on a 2-core CPU on the bundled data (what `make demo` runs).
- quality: the demo model trained on augmented questions (noisy copies, keyword questions);
           the best held-out answers of the three (figures: docs/export.md).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from training.augment import Augmentation
from training.errors import InputError


@dataclass(frozen=True)
class TinyModel:
    """Shape of the from-scratch GPT-2 (and its tokenizer) used with `--base tiny`."""

    n_layer: int = 4
    n_head: int = 4
    n_embd: int = 256
    n_positions: int = 256
    vocab_size: int = 3000
    dropout: float = 0.0


@dataclass(frozen=True)
class Preset:
    name: str
    epochs: float
    learning_rate: float
    batch_size: int
    grad_accum: int = 1  # optimizer step every N batches (effective batch = N * batch_size)
    max_length: int = 256  # tokens per example (prompt + answer + eos)
    warmup_ratio: float = 0.05
    weight_decay: float = 0.0
    lr_scheduler: str = "linear"
    label_smoothing: float = 0.0
    max_steps: int = -1  # > 0 overrides epochs
    early_stopping_patience: int = 0  # epochs without a better eval loss; 0 = never stop early
    exact_match: bool = True  # after training, generate every answer and score EM/F1
    augment: Augmentation = field(default_factory=Augmentation)
    tiny: TinyModel = field(default_factory=TinyModel)


DEMO = Preset(
    name="demo",
    epochs=20,
    learning_rate=3e-3,
    batch_size=32,
    max_length=128,
    tiny=TinyModel(n_layer=4, n_head=4, n_embd=192, vocab_size=3000, dropout=0.1),
)

PRESETS: dict[str, Preset] = {
    "test": Preset(
        name="test",
        epochs=1,
        learning_rate=1e-3,
        batch_size=4,
        max_steps=3,
        max_length=128,
        exact_match=False,
        # dropout > 0 so that tests of --resume also check the restored random state
        tiny=TinyModel(
            n_layer=2, n_head=2, n_embd=64, n_positions=128, vocab_size=400, dropout=0.1
        ),
    ),
    "demo": DEMO,
    # augmentation is what moved held-out answers; a smaller vocab with more word dropout did
    # not (docs/export.md)
    "quality": replace(
        DEMO,
        name="quality",
        epochs=8,
        augment=Augmentation(question_copies=4, answer_questions=10, distractors=0.3),
    ),
}


def get_preset(name: str) -> Preset:
    try:
        return PRESETS[name]
    except KeyError:
        raise InputError(f"unknown preset {name!r} (choose from {', '.join(PRESETS)})") from None
