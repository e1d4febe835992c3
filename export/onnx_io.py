"""Save an in-memory ONNX model, in one file when protobuf allows it, else with external data."""

from __future__ import annotations

from pathlib import Path

import onnx

TWO_GB = 2**31  # protobuf's limit on one message
HEADROOM = 1 << 26  # the graph's own nodes and names on top of the weights


def weight_bytes(model: onnx.ModelProto) -> int:
    return sum(t.ByteSize() for t in model.graph.initializer)


def save_onnx(model: onnx.ModelProto, dst: Path) -> Path:
    """Write `model` to `dst` (+ `dst.name + ".data"` for models over 2 GB); return `dst`."""
    external = weight_bytes(model) > TWO_GB - HEADROOM
    onnx.save(model, str(dst), save_as_external_data=external, location=Path(dst).name + ".data")
    return Path(dst)
