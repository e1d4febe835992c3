"""Build the artifact's manifest from what the export learned (checkpoint, graph, gate)."""

from __future__ import annotations

from importlib import metadata

from export.checkpoint import Checkpoint
from export.config import ExportOptions
from export.manifest import GRAPH_INTERFACE, Manifest
from export.onnx_export import GraphSignature
from export.quality import QualityReport

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
    quality: QualityReport,
    graph: dict,
) -> Manifest:
    recipe = options.recipe
    return Manifest(
        model_name=checkpoint.name,
        architecture=checkpoint.architecture,
        inputs=signature.input_names,
        outputs=signature.output_names,
        dtype=recipe.dtype,  # int8-dynamic and int4 on cpu keep float32 activations and cache
        quantization=recipe.quantization,
        validated_providers=[quality.provider],
        prompt_template=checkpoint.prompt_template,
        eos_token_id=checkpoint.eos_token_id,
        pad_token_id=checkpoint.pad_token_id,
        parity=gate_record(quality, options),
        interface=GRAPH_INTERFACE,
        graph=graph,
        source={
            "checkpoint": str(checkpoint.path),
            "precision": options.precision,
            "target": options.target,
            "opset": signature.opset,
            "tools": tool_versions(),
        },
    )


def gate_record(quality: QualityReport, options: ExportOptions) -> dict:
    """The manifest's `parity` section: the quality gate's results and what it held them to."""
    return {
        **quality.to_dict(),
        "reference": "PyTorch fp32",
        "data": str(options.gate.data),
        "split": "heldout",
        "thresholds": options.thresholds.to_dict(),
        "passed": True,  # a failed gate writes no artifact
    }


def tool_versions() -> dict[str, str]:
    versions = {}
    for name in TOOLS:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue  # onnxruntime vs onnxruntime-gpu: whichever is installed
    return versions
