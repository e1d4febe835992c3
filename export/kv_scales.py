"""Static scales for an int8 KV cache: per layer, one scale per (head, channel) for keys and
one for values, from the largest magnitude PyTorch produces on calibration text.

ONNX Runtime's GroupQueryAttention stores an int8 cache itself (`k_quant_type` /
`v_quant_type` PER_CHANNEL, scales `[1, H, 1, D]`): it quantizes each new key/value as it
writes it (round to nearest, saturating) and reads the cache back at a quarter of the fp32
bytes. Decode attention is bound by those bytes on CPU (docs/export.md), so a smaller cache
is a faster step. The
scales must be fixed at export, hence this calibration; the quality gate then checks the
whole graph against PyTorch.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

INT8_MAX = 127
MARGIN = 1.1  # room for values a little past what calibration saw (beyond it: saturate)


@dataclass(frozen=True)
class KVScales:
    keys: list[np.ndarray]  # per layer, [1, H, 1, D] float32
    values: list[np.ndarray]


def calibrate(model, sequences: list[list[int]], batch: int = 16) -> KVScales:
    """Per-channel absmax of every layer's keys/values over `sequences` (token id lists).

    `model`: a GPT2LMHeadModel in eval mode (fp32)."""
    import torch

    if not sequences:
        raise ValueError("KV cache calibration needs at least one sequence")
    keys: list[np.ndarray] = []
    values: list[np.ndarray] = []
    with torch.no_grad():
        for start in range(0, len(sequences), batch):
            chunk = sequences[start : start + batch]
            width = max(len(s) for s in chunk)
            ids = torch.zeros((len(chunk), width), dtype=torch.long)
            mask = torch.zeros_like(ids)
            for row, seq in enumerate(chunk):
                ids[row, : len(seq)], mask[row, : len(seq)] = torch.tensor(seq), 1
            past = model(input_ids=ids, attention_mask=mask, use_cache=True).past_key_values
            for layer, (k, v) in enumerate(_layers(past)):
                real = mask[:, None, :, None].bool()  # [B, 1, T, 1]: padding does not count
                k_max = k.abs().masked_fill(~real, 0).amax(dim=(0, 2), keepdim=True).numpy()
                v_max = v.abs().masked_fill(~real, 0).amax(dim=(0, 2), keepdim=True).numpy()
                if layer == len(keys):
                    keys.append(k_max)
                    values.append(v_max)
                else:
                    keys[layer] = np.maximum(keys[layer], k_max)
                    values[layer] = np.maximum(values[layer], v_max)
    return KVScales([_scale(a) for a in keys], [_scale(a) for a in values])


def _layers(past) -> list[tuple]:
    """(key, value) per layer, `[B, H, T, D]`, from either cache type transformers returns."""
    if hasattr(past, "layers"):  # transformers' DynamicCache
        return [(layer.keys, layer.values) for layer in past.layers]
    return list(past)


def _scale(absmax: np.ndarray) -> np.ndarray:
    # a channel that never moved still needs a positive scale
    return (np.maximum(absmax, 1e-6) * MARGIN / INT8_MAX).astype(np.float32)
