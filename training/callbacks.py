"""Trainer callbacks: one line per epoch on the console, a JSON-lines log of every logged
metric, and a graceful SIGTERM stop.

SIGTERM (a preempted node, `kill`, Kubernetes eviction) should not lose the run: the handler
only raises a flag; at the end of the current optimizer step the Trainer saves a checkpoint
and stops, and `--resume` carries on from it. Under DDP the ranks agree (all-reduce of the
flag) so that they all stop at the same step rather than one waiting for the others forever.
"""

from __future__ import annotations

import json
import signal
import sys
import time
from pathlib import Path
from types import FrameType

import torch
import torch.distributed as dist
from tqdm.auto import tqdm
from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments


class EpochLines(TrainerCallback):
    """The console view of a run: one line per epoch (train loss, eval loss, time since the
    start) above one progress bar of optimizer steps. It stands in for the Trainer's own
    console callback, which prints every log entry as a raw dict and draws an evaluation bar
    inside the training bar; the full log still goes to JsonLinesLog."""

    def __init__(self) -> None:
        self.bar: tqdm | None = None
        self.loss: float | None = None
        self.started = 0.0

    def on_train_begin(self, args, state: TrainerState, control, **kwargs) -> None:
        if not state.is_world_process_zero:
            return
        self.started = time.monotonic()
        # disable=None: no bar when stderr is not a terminal (CI logs get the lines only)
        self.bar = tqdm(
            total=state.max_steps,
            initial=state.global_step,
            unit="step",
            leave=False,
            dynamic_ncols=True,
            disable=None,
        )

    def on_step_end(self, args, state: TrainerState, control, **kwargs) -> None:
        if self.bar is not None:
            self.bar.update(state.global_step - self.bar.n)

    def on_epoch_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs
    ) -> TrainerControl:
        control.should_log = True  # the epoch's line shows the loss up to its last step
        return control

    def on_log(self, args, state: TrainerState, control, logs=None, **kwargs) -> None:
        if not logs or "loss" not in logs:
            return
        self.loss = logs["loss"]
        if args.eval_strategy == "no" and float(state.epoch or 0).is_integer():
            self._line(state, None)  # no evaluation follows: the epoch's line is now

    def on_evaluate(self, args, state: TrainerState, control, metrics=None, **kwargs) -> None:
        self._line(state, (metrics or {}).get("eval_loss"))

    def on_train_end(self, args, state: TrainerState, control, **kwargs) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    def _line(self, state: TrainerState, eval_loss: float | None) -> None:
        if not state.is_world_process_zero:
            return
        epoch = state.epoch or 0.0
        shown = f"{epoch:.0f}" if float(epoch).is_integer() else f"{epoch:.2f}"
        fields = [
            f"epoch {shown:>{len(str(state.num_train_epochs))}}/{state.num_train_epochs}",
            f"loss {_num(self.loss)}",
            f"eval loss {_num(eval_loss)}",
            f"{time.monotonic() - self.started:.0f}s",
        ]
        tqdm.write("  ".join(fields), file=sys.stdout)


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


class JsonLinesLog(TrainerCallback):
    """Append each Trainer log entry (loss, lr, eval_loss ...) as one JSON object per line."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    def on_log(self, args, state: TrainerState, control, logs=None, **kwargs) -> None:
        if not state.is_world_process_zero or not logs:
            return
        entry = {"time": round(time.time(), 3), "step": state.global_step, "epoch": state.epoch}
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps({**entry, **logs}) + "\n")


class GracefulStop(TrainerCallback):
    """On SIGTERM: checkpoint at the end of the current step, then stop training."""

    def __init__(self) -> None:
        self.requested = False
        self._mid_epoch = False
        self._previous = None

    def __enter__(self) -> GracefulStop:
        self._previous = signal.signal(signal.SIGTERM, self._on_signal)
        return self

    def __exit__(self, *exc: object) -> None:
        signal.signal(signal.SIGTERM, self._previous or signal.SIG_DFL)

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self.requested = True  # no I/O here: the Trainer acts on it between steps

    def on_step_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs
    ) -> TrainerControl:
        if not self._agreed(args):
            return control
        self.requested = True
        control.should_training_stop = True
        # At an epoch's end the usual eval + checkpoint follow anyway. Mid-epoch, save now and
        # skip the end-of-epoch eval: it draws from the global RNG (the eval DataLoader's
        # seed), so a checkpoint taken after it would not resume into the same dropout masks.
        self._mid_epoch = not float(state.epoch or 0).is_integer()
        if self._mid_epoch:
            control.should_save = True
        return control

    def on_epoch_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs
    ) -> TrainerControl:
        if self.requested and self._mid_epoch:
            control.should_evaluate = False
            control.should_save = False
        return control

    def _agreed(self, args: TrainingArguments) -> bool:
        """Whether any rank was asked to stop (every rank calls this at every step)."""
        if args.world_size <= 1 or not dist.is_initialized():
            return self.requested
        flag = torch.tensor([int(self.requested)], device=args.device)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        return bool(flag.item())
