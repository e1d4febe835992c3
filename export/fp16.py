"""fp32 graph -> fp16 for the CUDA provider, with ONNX Runtime's float16 converter.

Mixed precision as ORT's GPT-2 helper keeps it: weights, activations and the KV cache in fp16
(the cache is the server's memory bill), `logits` returned as float32 so sampling sees the
same type on every target. Layer norms stay fp16 nodes: ORT's CUDA LayerNormalization and
SkipLayerNormalization kernels accumulate in fp32 already, and the quality gate measures
the result against PyTorch fp32 either way.
"""

from __future__ import annotations

from pathlib import Path

import onnx

from export.errors import ExportFailed
from export.onnx_io import save_onnx
from export.tie import LOGITS


def to_fp16(model: onnx.ModelProto) -> onnx.ModelProto:
    from onnxruntime.transformers.float16 import convert_float_to_float16

    try:
        return convert_float_to_float16(model, keep_io_types=[LOGITS], disable_shape_infer=True)
    except Exception as e:  # the converter raises assorted types; one line for the user
        raise ExportFailed(f"fp16 conversion failed: {type(e).__name__}: {e}") from e


def convert_fp16(src: Path, dst: Path) -> Path:
    """Write the fp16 version of `src` to `dst`."""
    return save_onnx(to_fp16(onnx.load(str(src))), dst)
