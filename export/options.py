"""What an export is asked to do: the options dataclass and the precision/target matrix.

Kept free of heavy imports so `kvserve-export --help` answers instantly.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

# precision -> (manifest quantization, targets it is built and validated for, what it is)
PRECISIONS: dict[str, tuple[str, tuple[str, ...], str]] = {
    "fp32": (
        "none",
        ("cpu",),
        "full precision; the reference: must match PyTorch (logits within 1e-3, same greedy "
        "tokens) or nothing is written. The precision for any target.",
    ),
    "int8": (
        "int8-dynamic",
        ("cpu",),
        "int8 weights (ONNX Runtime dynamic quantization, per channel): about 2-4x smaller and "
        "faster on CPU, a little less accurate; parity is recorded, not enforced. CPU only: "
        "GPUs have no fast kernels for it.",
    ),
}
TARGETS = ("cpu",)


@dataclass(frozen=True)
class ExportOptions:
    checkpoint: Path
    out: Path
    precision: str = "fp32"
    target: str = "cpu"
    force: bool = False

    @property
    def quantization(self) -> str:
        return PRECISIONS[self.precision][0]

    def problem(self) -> str | None:
        """Why this precision/target pair cannot be built (None when it can)."""
        if self.precision not in PRECISIONS:
            choices = ", ".join(PRECISIONS)
            return (
                f"unknown precision {self.precision!r} (--precision/KVSERVE_PRECISION: {choices})"
            )
        if self.target not in TARGETS:
            choices = ", ".join(TARGETS)
            return f"unknown target {self.target!r} (--target/KVSERVE_TARGET: {choices})"
        if self.target not in PRECISIONS[self.precision][1]:
            return f"precision {self.precision} is not built for target {self.target}"
        return None
