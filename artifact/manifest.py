"""`manifest.json`: the self-describing model artifact, read and written here.

export/ writes it, server/ reads it. The server trusts nothing but this file: every artifact
file is listed with its sha256, and any mismatch is a clear startup error.

Format versions: "1" is one fused graph (interface gqa-slots-v1, `model_file`); "2" adds the
paged interface (artifact/graph.py: `pieces`, the attention's `kv_cache` dtype, its int8
`kv_scales_file`, `shared_weights`). Both are read; any other version is refused with one
line saying to re-export. The optional `confidence` (the answer confidence's calibration and
default hand-over threshold, artifact/confidence.py) came later within format 2: a manifest
without it reads as None (no confidence, never handed over).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from artifact.confidence import Calibration, CalibrationError
from artifact.graph import PAGED_INTERFACE
from artifact.prompt import PromptTemplate

# "1" the fused graph; "2" + the paged-v1 pieces; "3" + `confidence` (the answer calibration),
# so a server too old for it says so instead of failing on an unknown key
FORMAT_VERSION = "3"
READABLE_VERSIONS = ("1", "2", "3")
MANIFEST_NAME = "manifest.json"


class ManifestError(ValueError):
    """An artifact that cannot be served; the message names the file and the problem."""


@dataclass(frozen=True)
class Architecture:
    num_layers: int
    num_heads: int
    head_dim: int
    hidden_size: int
    vocab_size: int
    max_positions: int


@dataclass(frozen=True)
class SharedWeight:
    """One initializer several dense pieces read (the token table), stored once in `file` as
    ONNX external data that each of those pieces points at."""

    name: str
    file: str
    offset: int  # bytes into `file`
    dtype: str  # numpy dtype name
    shape: tuple[int, ...]
    pieces: tuple[int, ...]  # indices of the pieces that read it

    @property
    def nbytes(self) -> int:
        count = 1
        for dim in self.shape:
            count *= dim
        return count * _ITEM_BYTES[self.dtype]


_ITEM_BYTES = {"float32": 4, "float16": 2, "int8": 1, "uint8": 1, "int32": 4, "int64": 8}


@dataclass
class Manifest:
    model_name: str
    architecture: Architecture
    inputs: list[str]
    outputs: list[str]
    dtype: str  # float32 | float16
    quantization: str  # none | int8-dynamic | ...
    validated_providers: list[str]
    prompt_template: PromptTemplate
    eos_token_id: int
    pad_token_id: int
    model_file: str = "model.onnx"
    tokenizer_file: str = "tokenizer.json"
    parity: dict = field(default_factory=dict)
    files: dict[str, str] = field(default_factory=dict)  # file name -> sha256
    source: dict = field(default_factory=dict)  # where it came from (checkpoint, tool versions)
    format_version: str = FORMAT_VERSION
    interface: str = ""  # the graph's calling convention, e.g. "gqa-slots-v1"
    graph: dict = field(default_factory=dict)  # export facts: logits "last", fused ops, tied
    # paged-v1 (format 2): the dense pieces in call order, and what the attention kernel needs
    pieces: list[str] = field(default_factory=list)
    kv_cache: str = ""  # the attention's KV cache element type: float32 | float16 | int8
    kv_scales_file: str = ""  # int8 KV cache: float32 [num_layers, 2, heads * head_dim]
    shared_weights: list[SharedWeight] = field(default_factory=list)
    # the checkpoint's confidence.json: answer confidence and default hand-over threshold
    confidence: Calibration | None = None

    def to_dict(self) -> dict:
        data = asdict(self)
        data["prompt_template"] = self.prompt_template.to_dict()
        data["confidence"] = self.confidence.to_dict() if self.confidence else None
        return data

    @classmethod
    def from_dict(cls, data: dict) -> Manifest:
        data = dict(data)
        data["architecture"] = Architecture(**data["architecture"])
        data["prompt_template"] = PromptTemplate.from_dict(data["prompt_template"])
        data["shared_weights"] = [
            SharedWeight(**{**w, "shape": tuple(w["shape"]), "pieces": tuple(w["pieces"])})
            for w in data.get("shared_weights", [])
        ]
        if data.get("confidence") is not None:
            try:
                data["confidence"] = Calibration.from_dict(data["confidence"])
            except CalibrationError as e:
                raise CalibrationError(f"confidence: {e}") from None
        return cls(**data)

    def required_files(self) -> list[str]:
        """The files this artifact cannot be served without (each must be listed and hashed)."""
        if self.interface == PAGED_INTERFACE:
            graph = [*self.pieces, *([self.kv_scales_file] if self.kv_scales_file else [])]
            graph += sorted({w.file for w in self.shared_weights})
        else:
            graph = [self.model_file]
        return [*graph, self.tokenizer_file]


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def write_manifest(directory: Path, manifest: Manifest) -> Path:
    """Hash every file in the artifact dir (but the manifest itself) and write manifest.json."""
    directory = Path(directory)
    manifest.files = {
        p.name: sha256_file(p)
        for p in sorted(directory.iterdir())
        if p.is_file() and p.name != MANIFEST_NAME
    }
    path = directory / MANIFEST_NAME
    path.write_text(json.dumps(manifest.to_dict(), indent=2, sort_keys=True) + "\n")
    return path


def read_manifest(directory: Path, verify: bool = True) -> Manifest:
    """Load and check an artifact dir; raise ManifestError naming the file and the problem."""
    directory = Path(directory)
    path = directory / MANIFEST_NAME
    if not directory.is_dir():
        raise ManifestError(f"{directory}: not a directory")
    if not path.is_file():
        raise ManifestError(f"{path}: missing (is this a kvserve-export artifact dir?)")
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ManifestError(f"{path}: not valid JSON ({e})") from None
    version = str(data.get("format_version", "")) if isinstance(data, dict) else ""
    if version not in READABLE_VERSIONS:
        readable = ", ".join(repr(v) for v in READABLE_VERSIONS)
        fix = "re-export the model with this version of kvserve-export"
        if version.isdigit() and int(version) > int(FORMAT_VERSION):
            fix = "it was written by a newer kvserve-export: upgrade this server"
        raise ManifestError(
            f"{path}: unknown format_version {version!r} (this server reads {readable}): {fix}"
        )
    try:
        manifest = Manifest.from_dict(data)
    except (KeyError, TypeError) as e:
        raise ManifestError(f"{path}: malformed ({e})") from None
    except CalibrationError as e:
        raise ManifestError(f"{path}: bad {e}") from None
    if manifest.interface == PAGED_INTERFACE and not manifest.pieces:
        raise ManifestError(f"{path}: interface {PAGED_INTERFACE!r} lists no pieces")
    if verify:
        verify_files(directory, manifest)
    return manifest


def verify_files(directory: Path, manifest: Manifest) -> None:
    for required in manifest.required_files():
        if required not in manifest.files:
            raise ManifestError(f"{directory / MANIFEST_NAME}: does not list {required}")
    for name, expected in manifest.files.items():
        path = Path(directory) / name
        if not path.is_file():
            raise ManifestError(f"{path}: missing (listed in {MANIFEST_NAME})")
        if sha256_file(path) != expected:
            raise ManifestError(f"{path}: sha256 does not match {MANIFEST_NAME} (file changed?)")
