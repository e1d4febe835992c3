"""The model-artifact contract, shared by training/, export/ and server/.

Standard library only, so a serving image (no torch) and a training run read it the same way:
- `manifest`: `manifest.json`, the self-describing artifact (architecture, dtype, hashes ...);
- `prompt`: the prompt template, identical in training, evaluation, export checks and `Answer`;
- `confidence`: the answer confidence's calibration (training fits it, the server evaluates it);
- `graph`: the serving graphs' calling conventions (input/output names, dtypes, cache layout):
  one fused graph (gqa-slots-v1) or dense pieces cut at attention (paged-v1).
"""

from artifact.confidence import CONFIDENCE_FILE, Calibration, CalibrationError
from artifact.graph import (
    CACHE_LAYOUT,
    CACHE_TYPES,
    CONTROL_INPUTS,
    GRAPH_INTERFACE,
    KV_SCALES_FILE,
    LOGITS,
    PAGED_INTERFACE,
    SHARED_WEIGHTS_FILE,
    graph_inputs,
    graph_outputs,
    layer_names,
    piece_file,
    piece_files,
    piece_inputs,
    piece_outputs,
)
from artifact.manifest import (
    FORMAT_VERSION,
    MANIFEST_NAME,
    READABLE_VERSIONS,
    Architecture,
    Manifest,
    ManifestError,
    SharedWeight,
    read_manifest,
    sha256_file,
    verify_files,
    write_manifest,
)
from artifact.prompt import PROMPT_FILE, PromptTemplate

__all__ = [
    "CACHE_LAYOUT",
    "CACHE_TYPES",
    "CONFIDENCE_FILE",
    "CONTROL_INPUTS",
    "FORMAT_VERSION",
    "GRAPH_INTERFACE",
    "KV_SCALES_FILE",
    "LOGITS",
    "MANIFEST_NAME",
    "PAGED_INTERFACE",
    "PROMPT_FILE",
    "READABLE_VERSIONS",
    "SHARED_WEIGHTS_FILE",
    "Architecture",
    "Calibration",
    "CalibrationError",
    "Manifest",
    "ManifestError",
    "PromptTemplate",
    "SharedWeight",
    "graph_inputs",
    "graph_outputs",
    "layer_names",
    "piece_file",
    "piece_files",
    "piece_inputs",
    "piece_outputs",
    "read_manifest",
    "sha256_file",
    "verify_files",
    "write_manifest",
]
