"""`manifest.json`: the self-describing model artifact, read and written here.

export/ writes it, server/ reads it. The server trusts nothing but this file: every artifact
file is listed with its sha256, and any mismatch is a clear startup error.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from artifact.prompt import PromptTemplate

FORMAT_VERSION = "1"
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

    def to_dict(self) -> dict:
        data = asdict(self)
        data["prompt_template"] = self.prompt_template.to_dict()
        return data

    @classmethod
    def from_dict(cls, data: dict) -> Manifest:
        data = dict(data)
        data["architecture"] = Architecture(**data["architecture"])
        data["prompt_template"] = PromptTemplate.from_dict(data["prompt_template"])
        return cls(**data)


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
    if version != FORMAT_VERSION:
        raise ManifestError(
            f"{path}: unknown format_version {version!r} (this server reads {FORMAT_VERSION!r})"
        )
    try:
        manifest = Manifest.from_dict(data)
    except (KeyError, TypeError) as e:
        raise ManifestError(f"{path}: malformed ({e})") from None
    if verify:
        verify_files(directory, manifest)
    return manifest


def verify_files(directory: Path, manifest: Manifest) -> None:
    for required in (manifest.model_file, manifest.tokenizer_file):
        if required not in manifest.files:
            raise ManifestError(f"{directory / MANIFEST_NAME}: does not list {required}")
    for name, expected in manifest.files.items():
        path = Path(directory) / name
        if not path.is_file():
            raise ManifestError(f"{path}: missing (listed in {MANIFEST_NAME})")
        if sha256_file(path) != expected:
            raise ManifestError(f"{path}: sha256 does not match {MANIFEST_NAME} (file changed?)")
