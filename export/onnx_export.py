"""PyTorch checkpoint -> one ONNX decoder graph with a KV cache, via optimum-onnx.

The server relies on one graph for both prefill (past length 0) and decode, with inputs
`input_ids, attention_mask, position_ids, past_key_values.N.key/value` and outputs
`logits, present.N.key/value`. optimum's `text-generation-with-past` export gives exactly that;
`check_signature` makes sure it still does after any optimum upgrade.
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import onnx
from onnx.external_data_helper import uses_external_data

from export.errors import ExportFailed

MODEL_FILE = "model.onnx"
TASK = "text-generation-with-past"


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


def export_onnx(checkpoint: Path, workdir: Path) -> Path:
    """Export `checkpoint` (fp32, CPU) into `workdir`; return the path of model.onnx."""
    from optimum.exporters.onnx import main_export  # heavy: imports torch and transformers

    # Default post-processing kept on purpose: it re-ties lm_head to wte (a Transpose node)
    # instead of storing the embedding matrix twice. Our own parity check replaces optimum's
    # validation, so that is off.
    with _quiet():
        try:
            main_export(
                str(checkpoint),
                output=workdir,
                task=TASK,
                device="cpu",
                local_files_only=True,  # never reach for a hub
                do_validation=False,
            )
        except Exception as e:  # optimum raises many types; the user needs one line
            raise ExportFailed(
                f"ONNX export of {checkpoint} failed: {type(e).__name__}: {e}"
            ) from e
    model = workdir / MODEL_FILE
    if not model.is_file():
        found = sorted(p.name for p in workdir.glob("*.onnx"))
        raise ExportFailed(f"optimum wrote {found}, expected a single {MODEL_FILE}")
    return model


def read_signature(model: Path) -> GraphSignature:
    proto = onnx.load(str(model), load_external_data=False)
    opset = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), 0)
    return GraphSignature(
        inputs=tuple(_spec(v) for v in proto.graph.input),
        outputs=tuple(_spec(v) for v in proto.graph.output),
        opset=opset,
    )


def expected_names(num_layers: int) -> tuple[list[str], list[str]]:
    """The names the server feeds and fetches, in the order optimum exports them."""
    past = [f"past_key_values.{i}.{kv}" for i in range(num_layers) for kv in ("key", "value")]
    present = [f"present.{i}.{kv}" for i in range(num_layers) for kv in ("key", "value")]
    return ["input_ids", *past, "attention_mask", "position_ids"], ["logits", *present]


def check_signature(signature: GraphSignature, num_layers: int) -> None:
    """Fail unless the graph has exactly the inputs/outputs the server relies on."""
    inputs, outputs = expected_names(num_layers)
    problems = []
    if sorted(signature.input_names) != sorted(inputs):
        problems.append(f"inputs {signature.input_names} != {inputs}")
    if sorted(signature.output_names) != sorted(outputs):
        problems.append(f"outputs {signature.output_names} != {outputs}")
    int_inputs = {"input_ids", "attention_mask", "position_ids"}
    wrong = [t.name for t in signature.inputs if t.name in int_inputs and t.dtype != "int64"]
    if wrong:
        problems.append(f"inputs {wrong} are not int64")
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
    """Hide tracer warnings and info logs from torch/transformers/optimum during the export."""
    loggers = [logging.getLogger(n) for n in ("optimum", "transformers", "torch.onnx")]
    levels = [log.level for log in loggers]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for log in loggers:
            log.setLevel(logging.ERROR)
        try:
            yield
        finally:
            for log, level in zip(loggers, levels, strict=True):
                log.setLevel(level)
