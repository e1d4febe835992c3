"""One training run: data -> model -> Trainer -> checkpoint dir (+ kvserve_train.json).

`train(TrainConfig(...))` is the whole stage as a function; the CLI only builds the config.
Runs unchanged under torchrun / accelerate launch: every rank does the same work up to
saving, and only the main process writes the extra files and runs the exact-match check.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch
from torch.utils.data import Dataset
from transformers import Trainer, TrainingArguments, set_seed

from export.manifest import PromptTemplate
from training.collator import PadCollator
from training.data import DataError, QAExample, load_examples, split_examples
from training.errors import InputError
from training.evaluate import exact_match
from training.formatting import Encoded, encode_example
from training.model import ModelBundle, load_model
from training.presets import Preset, get_preset

log = logging.getLogger(__name__)

REPORT_FILE = "kvserve_train.json"
CHECKPOINTS_DIR = "checkpoints"  # Trainer's own checkpoints, under OUT/, removed at the end


@dataclass
class TrainConfig:
    """Everything one run needs; None means "the preset's value"."""

    data: Path
    out: Path
    base: str = "tiny"
    preset: str = "demo"
    epochs: float | None = None
    max_steps: int | None = None
    learning_rate: float | None = None
    batch_size: int | None = None
    seed: int = 42
    exact_match: bool | None = None
    keep_checkpoints: bool = False
    template: PromptTemplate = field(default_factory=PromptTemplate)


@dataclass
class TrainReport:
    """What kvserve_train.json records about the run."""

    preset: str
    base: str
    data_file: str
    seed: int
    epochs: float
    steps: int
    train_examples: int
    heldout_examples: int
    dropped_too_long: int
    final_train_loss: float | None
    mean_train_loss: float | None
    final_eval_loss: float | None
    exact_match_train: float | None
    exact_match_heldout: float | None
    train_runtime_s: float
    wall_time_s: float
    device: str


class EncodedDataset(Dataset):
    """Pre-tokenized rows as the dicts the Trainer and PadCollator expect."""

    def __init__(self, rows: list[Encoded]) -> None:
        self.rows = rows

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> dict[str, list[int]]:
        return asdict(self.rows[i])


def resolve_preset(config: TrainConfig) -> Preset:
    """The named preset with the config's overrides applied."""
    preset = get_preset(config.preset)
    overrides = {
        "epochs": config.epochs,
        "max_steps": config.max_steps,
        "learning_rate": config.learning_rate,
        "batch_size": config.batch_size,
        "exact_match": config.exact_match,
    }
    return replace(preset, **{k: v for k, v in overrides.items() if v is not None})


def train(config: TrainConfig) -> Path:
    """Fine-tune and save a checkpoint dir at config.out; return its path."""
    start = time.perf_counter()
    preset = resolve_preset(config)
    out = _check_out_dir(Path(config.out))
    examples = load_examples(config.data)
    train_rows, heldout_rows = split_examples(examples)

    set_seed(config.seed)  # before building the model: its init weights depend on it
    bundle = load_model(config.base, examples, config.template, preset.tiny)
    max_length = min(preset.max_length, bundle.model.config.n_positions)
    train_set, dropped = _encode(bundle, config.template, train_rows, max_length)
    eval_set, dropped_eval = _encode(bundle, config.template, heldout_rows, max_length)
    if not train_set:
        raise DataError(f"{config.data}: every train prompt is longer than {max_length} tokens")
    if dropped or dropped_eval:
        n = dropped + dropped_eval
        log.warning("dropped %d rows whose prompt alone is over %d tokens", n, max_length)

    trainer = Trainer(
        model=bundle.model,
        args=_training_args(preset, config, out, has_eval=bool(eval_set)),
        train_dataset=EncodedDataset(train_set),
        eval_dataset=EncodedDataset(eval_set) if eval_set else None,
        data_collator=PadCollator(bundle.tokenizer.pad_token_id),
        processing_class=bundle.tokenizer,  # so save_model writes the tokenizer files too
    )
    result = trainer.train()
    final_eval_loss = _final_eval_loss(trainer) if eval_set else None
    trainer.save_model(str(out))  # every rank calls it; the Trainer writes on the main one
    if not trainer.is_world_process_zero():
        return out

    config.template.save(out)
    em_train, em_heldout = (
        _score(trainer, bundle, config.template, train_rows, heldout_rows)
        if preset.exact_match
        else (None, None)
    )
    report = TrainReport(
        preset=preset.name,
        base=config.base,
        data_file=str(config.data),
        seed=config.seed,
        epochs=round(trainer.state.epoch or 0.0, 3),
        steps=trainer.state.global_step,
        train_examples=len(train_set),
        heldout_examples=len(eval_set),
        dropped_too_long=dropped + dropped_eval,
        final_train_loss=_last_logged(trainer, "loss"),
        mean_train_loss=result.training_loss,
        final_eval_loss=final_eval_loss,
        exact_match_train=em_train,
        exact_match_heldout=em_heldout,
        train_runtime_s=round(result.metrics.get("train_runtime", 0.0), 2),
        wall_time_s=round(time.perf_counter() - start, 2),
        device=str(trainer.args.device),
    )
    (out / REPORT_FILE).write_text(json.dumps(asdict(report), indent=2) + "\n")
    if not config.keep_checkpoints:
        shutil.rmtree(out / CHECKPOINTS_DIR, ignore_errors=True)
    return out


def _training_args(
    preset: Preset, config: TrainConfig, out: Path, has_eval: bool
) -> TrainingArguments:
    cuda = torch.cuda.is_available()
    bf16 = cuda and torch.cuda.is_bf16_supported()
    return TrainingArguments(
        output_dir=str(out / CHECKPOINTS_DIR),  # keeps checkpoint-N/ out of the top level
        num_train_epochs=preset.epochs,
        max_steps=preset.max_steps,
        learning_rate=preset.learning_rate,
        per_device_train_batch_size=preset.batch_size,
        per_device_eval_batch_size=preset.batch_size * 2,
        warmup_ratio=preset.warmup_ratio,
        weight_decay=preset.weight_decay,
        lr_scheduler_type=preset.lr_scheduler,
        eval_strategy="epoch" if has_eval else "no",
        save_strategy="epoch" if preset.save_checkpoints else "no",
        save_total_limit=1,
        logging_strategy="steps",
        logging_steps=0.05,  # a fraction of all steps: ~20 loss lines whatever the length
        seed=config.seed,
        data_seed=config.seed,
        use_cpu=not cuda,
        bf16=bf16,
        fp16=cuda and not bf16,
        dataloader_pin_memory=cuda,
        ddp_find_unused_parameters=False,  # every GPT-2 parameter gets a gradient
        report_to="none",
    )


def _encode(
    bundle: ModelBundle, template: PromptTemplate, rows: list[QAExample], max_length: int
) -> tuple[list[Encoded], int]:
    """Encoded rows, and how many were dropped because the prompt alone fills max_length."""
    encoded = [encode_example(bundle.tokenizer, template, r, max_length) for r in rows]
    kept = [e for e in encoded if e is not None]
    return kept, len(encoded) - len(kept)


def _score(
    trainer: Trainer,
    bundle: ModelBundle,
    template: PromptTemplate,
    train_rows: list[QAExample],
    heldout_rows: list[QAExample],
) -> tuple[float, float | None]:
    """Exact-match fractions (train, heldout): greedy, 32 new tokens, stop at eos."""
    model, tok = trainer.model, bundle.tokenizer
    em_train = exact_match(model, tok, template, train_rows, desc="exact match train")
    if not heldout_rows:
        return em_train.fraction, None
    em_heldout = exact_match(model, tok, template, heldout_rows, desc="exact match heldout")
    return em_train.fraction, em_heldout.fraction


def _final_eval_loss(trainer: Trainer) -> float | None:
    """The eval loss at the last step: evaluate again only if training stopped mid-epoch."""
    evals = [h for h in trainer.state.log_history if "eval_loss" in h]
    if evals and evals[-1].get("step") == trainer.state.global_step:
        return evals[-1]["eval_loss"]
    return trainer.evaluate().get("eval_loss")


def _last_logged(trainer: Trainer, key: str) -> float | None:
    values = [h[key] for h in trainer.state.log_history if key in h]
    return values[-1] if values else None


def _check_out_dir(out: Path) -> Path:
    if out.exists() and not out.is_dir():
        raise InputError(f"--out {out}: exists and is not a directory")
    out.mkdir(parents=True, exist_ok=True)
    return out
