"""Pad a batch to its own longest row (dynamic padding): right-padded, labels -100 on pads."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from training.formatting import IGNORE_INDEX


@dataclass
class PadCollator:
    pad_token_id: int
    pad_to_multiple_of: int | None = None  # 8 helps tensor cores on CUDA; None on CPU

    def __call__(self, features: list[dict]) -> dict[str, torch.Tensor]:
        length = max(len(f["input_ids"]) for f in features)
        if self.pad_to_multiple_of:
            length = -(-length // self.pad_to_multiple_of) * self.pad_to_multiple_of
        pads = {"input_ids": self.pad_token_id, "labels": IGNORE_INDEX, "attention_mask": 0}
        return {
            key: torch.tensor(  # [B, T]
                [list(f[key]) + [pad] * (length - len(f[key])) for f in features],
                dtype=torch.long,
            )
            for key, pad in pads.items()
        }
