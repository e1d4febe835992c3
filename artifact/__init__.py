"""The model-artifact contract, shared by training/, export/ and server/.

Standard library only, so a serving image (no torch) and a training run read it the same way:
- `manifest`: `manifest.json`, the self-describing artifact (architecture, dtype, hashes ...);
- `prompt`: the prompt template, identical in training, evaluation, export checks and `Answer`;
- `graph`: the serving graph's calling convention (input/output names, dtypes, cache layout).
"""

from artifact.graph import (
    CACHE_LAYOUT,
    CACHE_TYPES,
    CONTROL_INPUTS,
    GRAPH_INTERFACE,
    LOGITS,
    graph_inputs,
    graph_outputs,
    layer_names,
)
from artifact.manifest import (
    FORMAT_VERSION,
    MANIFEST_NAME,
    Architecture,
    Manifest,
    ManifestError,
    read_manifest,
    sha256_file,
    verify_files,
    write_manifest,
)
from artifact.prompt import PROMPT_FILE, PromptTemplate

__all__ = [
    "CACHE_LAYOUT",
    "CACHE_TYPES",
    "CONTROL_INPUTS",
    "FORMAT_VERSION",
    "GRAPH_INTERFACE",
    "LOGITS",
    "MANIFEST_NAME",
    "PROMPT_FILE",
    "Architecture",
    "Manifest",
    "ManifestError",
    "PromptTemplate",
    "graph_inputs",
    "graph_outputs",
    "layer_names",
    "read_manifest",
    "sha256_file",
    "verify_files",
    "write_manifest",
]
