"""PyTorch checkpoint -> the one ONNX graph the server runs; saving it and checking its interface.

The graph is built by export/gqa_graph.py (fused GroupQueryAttention over an in-place KV
buffer; see its docstring for why not optimum's `text-generation-with-past` export, which
this module used first). `check_signature` makes sure the names and dtypes are the contract
in artifact/graph.py, the ones the server's runner binds.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import onnx
from onnx.external_data_helper import uses_external_data

from artifact import CONTROL_INPUTS, graph_inputs, graph_outputs
from export import ExportFailed
from export.progress import quiet_loggers

MODEL_FILE = "model.onnx"
TWO_GB = 2**31  # protobuf's limit on one message: larger models keep weights in a .data file
HEADROOM = 1 << 26  # the graph's own nodes and names on top of the weights


@dataclass(frozen=True)
class TensorSpec:
    name: str
    dtype: str  # numpy dtype name: int64, float32, ...
    shape: tuple[int | str, ...]  # ints are fixed, strings are symbolic dims


@dataclass(frozen=True)
class GraphSignature:
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    opset: int

    @property
    def input_names(self) -> list[str]:
        return [t.name for t in self.inputs]

    @property
    def output_names(self) -> list[str]:
        return [t.name for t in self.outputs]


def export_onnx(
    checkpoint: Path, workdir: Path, kv_calibration: list[list[int]] | None = None
) -> Path:
    """Build the serving graph of `checkpoint` (fp32) in `workdir`; return model.onnx's path.

    With `kv_calibration` (token id sequences) its KV cache is int8, scaled on them."""
    from export.gqa_graph import gqa_model  # heavy: imports torch and transformers

    workdir.mkdir(parents=True, exist_ok=True)
    with _quiet():
        try:
            return save_onnx(gqa_model(checkpoint, kv_calibration), workdir / MODEL_FILE)
        except Exception as e:  # the user needs one line, not a traceback
            raise ExportFailed(
                f"ONNX export of {checkpoint} failed: {type(e).__name__}: {e}"
            ) from e


def weight_bytes(model: onnx.ModelProto) -> int:
    return sum(t.ByteSize() for t in model.graph.initializer)


def save_onnx(model: onnx.ModelProto, dst: Path) -> Path:
    """Write `model` to `dst` (+ `dst.name + ".data"` for models over 2 GB); return `dst`."""
    external = weight_bytes(model) > TWO_GB - HEADROOM
    onnx.save(model, str(dst), save_as_external_data=external, location=Path(dst).name + ".data")
    return Path(dst)


def read_signature(model: Path) -> GraphSignature:
    proto = onnx.load(str(model), load_external_data=False)
    opset = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), 0)
    return GraphSignature(
        inputs=tuple(_spec(v) for v in proto.graph.input),
        outputs=tuple(_spec(v) for v in proto.graph.output),
        opset=opset,
    )


def check_signature(signature: GraphSignature, num_layers: int) -> None:
    """Fail unless the graph has exactly the inputs/outputs the server relies on."""
    inputs, outputs = graph_inputs(num_layers), graph_outputs(num_layers)
    problems = []
    if sorted(signature.input_names) != sorted(inputs):
        problems.append(f"inputs {signature.input_names} != {inputs}")
    if sorted(signature.output_names) != sorted(outputs):
        problems.append(f"outputs {signature.output_names} != {outputs}")
    wrong = [t.name for t in signature.inputs if CONTROL_INPUTS.get(t.name, t.dtype) != t.dtype]
    if wrong:
        problems.append(f"inputs {wrong} have the wrong integer type")
    if problems:
        raise ExportFailed(
            "exported graph does not match the server contract: " + "; ".join(problems)
        )


def model_files(model: Path) -> list[Path]:
    """model.onnx plus the external data files it references (none for models under 2 GB)."""
    proto = onnx.load(str(model), load_external_data=False)
    locations = {
        entry.value
        for tensor in _initializers(proto.graph)
        if uses_external_data(tensor)
        for entry in tensor.external_data
        if entry.key == "location"
    }
    return [model, *(model.parent / name for name in sorted(locations))]


def _initializers(graph: onnx.GraphProto) -> Iterator[onnx.TensorProto]:
    yield from graph.initializer
    for node in graph.node:  # If/Loop subgraphs can hold weights too
        for attr in node.attribute:
            for sub in [attr.g] if attr.HasField("g") else list(attr.graphs):
                yield from _initializers(sub)


def _spec(value: onnx.ValueInfoProto) -> TensorSpec:
    tensor = value.type.tensor_type
    dtype = onnx.helper.tensor_dtype_to_np_dtype(tensor.elem_type).name
    shape = tuple(d.dim_param or d.dim_value for d in tensor.shape.dim)
    return TensorSpec(name=value.name, dtype=dtype, shape=shape)


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Hide warnings and info logs from torch/transformers while loading the checkpoint."""
    with warnings.catch_warnings(), quiet_loggers("transformers", "torch"):
        warnings.simplefilter("ignore")
        yield
