"""Trainer callbacks: a JSON-lines log of every logged metric, and a graceful SIGTERM stop.

SIGTERM (a preempted node, `kill`, Kubernetes eviction) should not lose the run: the handler
only raises a flag; at the end of the current optimizer step the Trainer saves a checkpoint
and stops, and `--resume` carries on from it. Under DDP the ranks agree (all-reduce of the
flag) so that they all stop at the same step rather than one waiting for the others forever.
"""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path
from types import FrameType

import torch
import torch.distributed as dist
from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments


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
