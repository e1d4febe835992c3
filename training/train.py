"""One training run: data -> model -> Trainer -> checkpoint dir (+ report, log, loss curve).

`train(TrainConfig(...))` is the whole stage as a function; the CLI only builds the config.
Runs unchanged under torchrun / accelerate launch: every rank does the same work up to
saving, and only the main process writes the extra files and runs the answer evaluation.

OUT/ gets: the model (config.json, model.safetensors, tokenizer files), kvserve_prompt.json,
confidence.json (the answer confidence's calibration and hand-over threshold, fitted on the
validation part: training/confidence.py), kvserve_train.json (this report),
kvserve_train_log.jsonl (every logged metric), loss_curve.png, kvserve_eval.json
(EM/F1/perplexity, risk-coverage), and while training OUT/checkpoints/ (the Trainer's
per-epoch checkpoints: the best and the latest; removed at the end).

The validation part (training/validation.py) is never trained on: the per-epoch evaluation
(best epoch, early stopping) and the confidence fit use it, so the heldout rows are only
scored at the end. Without a validation part the per-epoch evaluation uses the heldout rows.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch
from torch.utils.data import Dataset
from transformers import (
    EarlyStoppingCallback,
    PrinterCallback,
    Trainer,
    TrainerCallback,
    TrainingArguments,
    set_seed,
)
from transformers.trainer_utils import TrainOutput

from artifact import PromptTemplate
from training.augment import augment
from training.callbacks import EpochLines, GracefulStop, JsonLinesLog
from training.collator import PadCollator
from training.confidence import CONFIDENCE_FILE, Calibration, fit_calibration
from training.config import TrainConfig
from training.data import load_data
from training.distributed import gather_rank_stats
from training.errors import InputError
from training.examples import DataError, QAExample, split_examples
from training.formatting import Encoded, encode_example
from training.model import ModelBundle, load_model
from training.plot import plot_losses
from training.presets import Preset, get_preset
from training.scorecard import (
    EVAL_FILE,
    PREDICTIONS_FILE,
    EvalReport,
    evaluate_model,
    with_confidence,
    write_report,
)
from training.validation import carve_validation

log = logging.getLogger(__name__)

REPORT_FILE = "kvserve_train.json"
LOG_FILE = "kvserve_train_log.jsonl"
CURVE_FILE = "loss_curve.png"
CHECKPOINTS_DIR = "checkpoints"  # Trainer's own checkpoints, under OUT/, removed at the end
COMPLETE_MARKER = "trainer_state.json"  # the Trainer writes it last into a checkpoint


class TrainingInterrupted(Exception):
    """SIGTERM stopped the run after saving a checkpoint; `--resume` continues it."""


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
    augmented_examples: int
    heldout_examples: int
    validation_examples: int  # never trained on: per-epoch eval and the confidence fit
    validation_carve: str  # "given" (split=validation rows) | "facts" | "rows" | "none"
    validation_fraction: float  # --validation: what `kvserve-train eval` carves again
    eval_split: str  # the rows of the per-epoch eval loss: "validation" | "heldout" | "none"
    dropped_too_long: int
    skipped: dict[str, int]
    final_train_loss: float | None
    mean_train_loss: float | None
    final_eval_loss: float | None  # of the model kept: the best epoch by eval loss
    best_step: int | None
    stopped_early: bool
    exact_match_train: float | None
    exact_match_heldout: float | None
    f1_train: float | None
    f1_heldout: float | None
    perplexity_heldout: float | None
    confidence: dict | None  # confidence.json's content (None: no validation part)
    train_runtime_s: float
    wall_time_s: float
    device: str
    world_size: int
    ranks: list[dict]
    resumed_from: str | None
    preset_values: dict


@dataclass
class EncodedRows:
    """Tokenized rows ready for the Trainer, and how many did not fit max_length."""

    train: list[Encoded]
    heldout: list[Encoded]
    validation: list[Encoded]
    dropped: int

    @property
    def eval_rows(self) -> tuple[str, list[Encoded]]:
        """The rows of the per-epoch eval: validation when there are any, else heldout."""
        if self.validation:
            return "validation", self.validation
        return ("heldout", self.heldout) if self.heldout else ("none", [])


@dataclass
class Rows:
    """The run's data: train rows, augmentation, heldout and validation rows, what was
    skipped, and how the validation rows were found."""

    train: list[QAExample]
    extra: list[QAExample]
    heldout: list[QAExample]
    skipped: dict[str, int]
    validation: list[QAExample] = field(default_factory=list)
    validation_carve: str = "none"


class EncodedDataset(Dataset):
    """Pre-tokenized rows as the dicts the Trainer and PadCollator expect."""

    def __init__(self, rows: list[Encoded]) -> None:
        self.rows = rows
        self.fetched = 0  # rows this process read (its DDP share; may include a prefetched batch)

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> dict[str, list[int]]:
        self.fetched += 1
        return asdict(self.rows[i])


def resolve_preset(config: TrainConfig) -> Preset:
    """The named (or given) preset with the config's overrides applied."""
    preset = config.preset if isinstance(config.preset, Preset) else get_preset(config.preset)
    overrides = {
        "epochs": config.epochs,
        "max_steps": config.max_steps,
        "learning_rate": config.learning_rate,
        "batch_size": config.batch_size,
        "grad_accum": config.grad_accum,
        "exact_match": config.exact_match,
    }
    return replace(preset, **{k: v for k, v in overrides.items() if v is not None})


def train(config: TrainConfig) -> Path:
    """Fine-tune and save a checkpoint dir at config.out; return its path."""
    start = time.perf_counter()
    preset = resolve_preset(config)
    out = _check_out_dir(Path(config.out))
    rows = load_rows(config, preset)
    resume_from = _last_checkpoint(out / CHECKPOINTS_DIR) if config.resume else None
    _clear_old_outputs(out, keep_checkpoints=resume_from is not None)

    set_seed(config.seed)  # before building the model: its init weights depend on it
    # Resuming: model and tokenizer come from the checkpoint (a tiny tokenizer is not retrained).
    base = str(resume_from) if resume_from else config.base
    bundle = load_model(base, rows.train + rows.extra, config.template, preset.tiny)
    encoded = encode_rows(bundle, config.template, rows, preset.max_length, str(config.data))
    with GracefulStop() as stop, _tied_head_not_reported_missing(bundle.model):
        trainer = _build_trainer(preset, config, out, bundle, encoded, stop)
        result = trainer.train(resume_from_checkpoint=str(resume_from) if resume_from else None)
    fetched = trainer.train_dataset.fetched
    ranks = gather_rank_stats(trainer.args.process_index, fetched, trainer.state.global_step)
    if stop.requested:
        checkpoint = out / CHECKPOINTS_DIR / f"checkpoint-{trainer.state.global_step}"
        raise TrainingInterrupted(
            f"stopped by SIGTERM at step {trainer.state.global_step}; checkpoint {checkpoint}; "
            "run the same command with --resume to continue"
        )
    trainer.save_model(str(out))  # the best epoch's weights (load_best_model_at_end)
    if not trainer.is_world_process_zero():
        return out

    config.template.save(out)
    report = _report(config, preset, trainer, result, rows, encoded, ranks, resume_from)
    plot_losses(trainer.state.log_history, out / CURVE_FILE, report.best_step, report.eval_split)
    if preset.exact_match or rows.validation:
        _score(report, trainer.model, bundle, config, rows, out, preset.exact_match)
    report.wall_time_s = round(time.perf_counter() - start, 2)
    (out / REPORT_FILE).write_text(json.dumps(asdict(report), indent=2) + "\n")
    if not config.keep_checkpoints:
        shutil.rmtree(out / CHECKPOINTS_DIR, ignore_errors=True)
    return out


class _TiedHeadMessage(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "missing keys in the checkpoint model loaded: ['lm_head.weight']" not in (
            record.getMessage()
        )


@contextmanager
def _tied_head_not_reported_missing(model) -> Iterator[None]:
    """GPT-2's lm_head is the embedding matrix (tied), stored once in a checkpoint; loading the
    best epoch back, the Trainer warns that lm_head.weight is missing although it was loaded
    with the embedding. Drop that one warning, only while the two are the same tensor."""
    tied = model.get_output_embeddings().weight is model.get_input_embeddings().weight
    trainer_log, quiet = logging.getLogger("transformers.trainer"), _TiedHeadMessage()
    if tied:
        trainer_log.addFilter(quiet)
    try:
        yield
    finally:
        trainer_log.removeFilter(quiet)


def load_rows(config: TrainConfig, preset: Preset) -> Rows:
    """Train and heldout rows from --data (and --eval-data), plus augmentation of train rows."""
    data = load_data(config.data)
    examples, skipped = list(data.examples), dict(data.skipped)
    if config.eval_data is not None:
        extra = load_data(config.eval_data, default_split="heldout")
        examples += [replace(e, split="heldout") for e in extra.examples]
        skipped.update({f"{k} ({extra.source})": v for k, v in extra.skipped.items()})
    for reason, count in skipped.items():
        log.warning("skipped %d rows: %s", count, reason)
    _, heldout_rows = split_examples(examples)
    carve = carve_validation(examples, config.validation)
    train_rows = carve.train
    if not train_rows:
        raise DataError(f"{data.source}: no rows with split 'train' (nothing to train on)")
    # Augmentation only copies train rows: validation phrasings stay unseen, as heldout ones.
    extra_rows = augment(train_rows, preset.augment, config.seed) if preset.augment.enabled else []
    if carve.validation:
        log.info("validation part: %d rows (%s)", len(carve.validation), carve.how)
    return Rows(train_rows, extra_rows, heldout_rows, skipped, carve.validation, carve.how)


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
        gradient_accumulation_steps=preset.grad_accum,
        warmup_ratio=preset.warmup_ratio,
        weight_decay=preset.weight_decay,
        lr_scheduler_type=preset.lr_scheduler,
        label_smoothing_factor=preset.label_smoothing,
        eval_strategy="epoch" if has_eval else "no",
        save_strategy="epoch",  # a checkpoint per epoch: what --resume and "best" need
        # The best and the latest (what --resume needs): with a limit of 1 the Trainer deletes
        # all but the best when it stops, even when a SIGTERM stopped it.
        save_total_limit=2,
        load_best_model_at_end=has_eval,
        metric_for_best_model="eval_loss" if has_eval else None,
        greater_is_better=False,
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
        disable_tqdm=True,  # EpochLines draws the one bar; the Trainer's nest an eval bar
    )


def encode_rows(
    bundle: ModelBundle, template: PromptTemplate, rows: Rows, max_length: int, source: str
) -> EncodedRows:
    """Tokenize train (+ augmented), heldout and validation rows; drop those whose question
    can't fit."""
    max_length = min(max_length, bundle.model.config.n_positions)
    train, dropped = _encode(bundle, template, rows.train + rows.extra, max_length)
    heldout, dropped_heldout = _encode(bundle, template, rows.heldout, max_length)
    validation, dropped_validation = _encode(bundle, template, rows.validation, max_length)
    if not train:
        raise DataError(f"{source}: every train question is longer than {max_length} tokens")
    n = dropped + dropped_heldout + dropped_validation
    if n:
        log.warning("dropped %d rows whose question alone is over %d tokens", n, max_length)
    return EncodedRows(train, heldout, validation, n)


def _encode(
    bundle: ModelBundle, template: PromptTemplate, rows: list[QAExample], max_length: int
) -> tuple[list[Encoded], int]:
    encoded = [encode_example(bundle.tokenizer, template, r, max_length) for r in rows]
    kept = [e for e in encoded if e is not None]
    return kept, len(encoded) - len(kept)


def _build_trainer(
    preset: Preset,
    config: TrainConfig,
    out: Path,
    bundle: ModelBundle,
    encoded: EncodedRows,
    stop: GracefulStop,
) -> Trainer:
    _, eval_rows = encoded.eval_rows
    has_eval = bool(eval_rows)
    callbacks: list[TrainerCallback] = [JsonLinesLog(out / LOG_FILE), EpochLines(), stop]
    if has_eval and preset.early_stopping_patience > 0:
        callbacks.append(EarlyStoppingCallback(preset.early_stopping_patience))
    trainer = Trainer(
        model=bundle.model,
        args=_training_args(preset, config, out, has_eval),
        train_dataset=EncodedDataset(encoded.train),
        eval_dataset=EncodedDataset(eval_rows) if has_eval else None,
        data_collator=PadCollator(bundle.tokenizer.pad_token_id),
        processing_class=bundle.tokenizer,  # so checkpoints carry the tokenizer files
        callbacks=callbacks,
    )
    trainer.remove_callback(PrinterCallback)  # print(logs) of every entry: EpochLines instead
    return trainer


def _report(
    config: TrainConfig,
    preset: Preset,
    trainer: Trainer,
    result: TrainOutput,
    rows: Rows,
    encoded: EncodedRows,
    ranks: list[dict],
    resume_from: Path | None,
) -> TrainReport:
    """The report of a finished run, answer scores still empty (see _score)."""
    eval_split, eval_rows = encoded.eval_rows
    state, has_eval = trainer.state, bool(eval_rows)
    return TrainReport(
        preset=preset.name,
        base=config.base,
        data_file=str(config.data),
        seed=config.seed,
        epochs=round(state.epoch or 0.0, 3),
        steps=state.global_step,
        train_examples=len(rows.train),
        augmented_examples=len(rows.extra),
        heldout_examples=len(encoded.heldout),
        validation_examples=len(encoded.validation),
        validation_carve=rows.validation_carve,
        validation_fraction=config.validation,
        eval_split=eval_split,
        dropped_too_long=encoded.dropped,
        skipped=rows.skipped,
        final_train_loss=_last_logged(trainer, "loss"),
        mean_train_loss=result.training_loss,
        final_eval_loss=state.best_metric if has_eval else None,
        best_step=state.best_global_step if has_eval else None,
        stopped_early=state.global_step < state.max_steps,
        exact_match_train=None,
        exact_match_heldout=None,
        f1_train=None,
        f1_heldout=None,
        perplexity_heldout=None,
        confidence=None,
        train_runtime_s=round(result.metrics.get("train_runtime", 0.0), 2),
        wall_time_s=0.0,
        device=str(trainer.args.device),
        world_size=trainer.args.world_size,
        ranks=ranks,
        resumed_from=str(resume_from) if resume_from else None,
        preset_values=asdict(preset),
    )


def _score(
    report: TrainReport,
    model: torch.nn.Module,
    bundle: ModelBundle,
    config: TrainConfig,
    rows: Rows,
    out: Path,
    exact_match: bool,
) -> None:
    """Fit the confidence on the validation answers (confidence.json); with `exact_match`,
    also generate every seen and heldout answer, write kvserve_eval.json with the held-out
    risk-coverage table, and copy the scores over."""
    scored = rows.validation + (rows.train + rows.heldout if exact_match else [])
    scores = evaluate_model(
        model, bundle.tokenizer, config.template, scored, str(out), str(config.data)
    )
    calibration = _fit_confidence(scores) if rows.validation else None
    if calibration is not None:
        calibration.save(out)
        report.confidence = calibration.to_dict()
        scores = with_confidence(scores, calibration)
    if not exact_match:
        return
    write_report(scores, out)
    seen, heldout = scores.splits.get("seen"), scores.splits.get("heldout")
    if seen:
        report.exact_match_train, report.f1_train = seen.exact_match, seen.f1
    if heldout:
        report.exact_match_heldout, report.f1_heldout = heldout.exact_match, heldout.f1
        report.perplexity_heldout = heldout.perplexity


def _fit_confidence(scores: EvalReport) -> Calibration | None:
    """The calibration from the validation answers; the seen (train) answers, when they were
    scored (exact_match presets), cap the threshold so that 95% of them are answered. The
    held-out answers take no part."""
    validation = [p for p in scores.predictions if p.split == "validation"]
    if all(p.mean_logprob is None for p in validation):
        log.warning("no confidence fitted: no validation answer has a token")
        return None
    seen = [p.mean_logprob for p in scores.predictions if p.split == "seen"]
    calibration = fit_calibration(
        [p.mean_logprob for p in validation],
        [p.f1 for p in validation],
        seen_mean_logprobs=seen,
    )
    log.info(
        "confidence: feature %s (k-fold log loss %s); threshold %.3f (%s) answers %.0f%% of "
        "validation questions with F1 %s, seen %s",
        calibration.feature,
        calibration.feature_log_loss,
        calibration.threshold,
        calibration.threshold_rule,
        100 * calibration.validation_coverage,
        calibration.validation_answered_f1,
        "not scored" if calibration.seen_coverage is None else f"{calibration.seen_coverage:.1%}",
    )
    return calibration


def _last_logged(trainer: Trainer, key: str) -> float | None:
    values = [h[key] for h in trainer.state.log_history if key in h]
    return values[-1] if values else None


def _last_checkpoint(directory: Path) -> Path:
    """The newest complete checkpoint-N/ (a run killed mid-save leaves an incomplete one)."""
    complete = [
        p
        for p in directory.glob("checkpoint-*")
        if p.name.split("-")[-1].isdigit() and (p / COMPLETE_MARKER).is_file()
    ]
    if not complete:
        raise InputError(f"--resume: no complete checkpoint in {directory}")
    return max(complete, key=lambda p: int(p.name.split("-")[-1]))


def _clear_old_outputs(out: Path, keep_checkpoints: bool) -> None:
    """Remove what an earlier run left that this one would mix with (main process only).

    A report or eval file left from before must not make an unfinished run look finished.
    The JSON-lines log and the checkpoints stay when resuming: the run continues them.
    """
    if int(os.environ.get("RANK", "0")) != 0:
        return
    for name in (REPORT_FILE, EVAL_FILE, PREDICTIONS_FILE, CURVE_FILE, CONFIDENCE_FILE):
        (out / name).unlink(missing_ok=True)
    if keep_checkpoints:
        return
    (out / LOG_FILE).unlink(missing_ok=True)
    if (out / CHECKPOINTS_DIR).exists():
        log.warning("removing old checkpoints in %s (use --resume to continue them)", out)
        shutil.rmtree(out / CHECKPOINTS_DIR)


def _check_out_dir(out: Path) -> Path:
    if out.exists() and not out.is_dir():
        raise InputError(f"--out {out}: exists and is not a directory")
    out.mkdir(parents=True, exist_ok=True)
    return out
