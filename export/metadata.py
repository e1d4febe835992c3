"""Build the artifact's manifest from what the export learned (checkpoint, graph, parity)."""

from __future__ import annotations

from importlib import metadata

from export.checkpoint import Checkpoint
from export.manifest import GRAPH_INTERFACE, Manifest
from export.onnx_export import GraphSignature
from export.options import ExportOptions
from export.parity import ParityReport

TOOLS = (
    "torch",
    "transformers",
    "onnx",
    "onnxruntime-gpu",
    "onnxruntime",
)


def build_manifest(
    checkpoint: Checkpoint,
    signature: GraphSignature,
    options: ExportOptions,
    parity: ParityReport,
) -> Manifest:
    return Manifest(
        model_name=checkpoint.name,
        architecture=checkpoint.architecture,
        inputs=signature.input_names,
        outputs=signature.output_names,
        dtype="float32",  # int8-dynamic keeps float32 inputs, outputs and KV cache
        quantization=options.quantization,
        validated_providers=[parity.provider],
        prompt_template=checkpoint.prompt_template,
        eos_token_id=checkpoint.eos_token_id,
        pad_token_id=checkpoint.pad_token_id,
        parity=parity.to_dict(),
        interface=GRAPH_INTERFACE,
        source={
            "checkpoint": str(checkpoint.path),
            "precision": options.precision,
            "target": options.target,
            "opset": signature.opset,
            "tools": tool_versions(),
        },
    )


def tool_versions() -> dict[str, str]:
    versions = {}
    for name in TOOLS:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue  # onnxruntime vs onnxruntime-gpu: whichever is installed
    return versions
