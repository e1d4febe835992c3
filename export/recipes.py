"""Which graph each (precision, target) pair gets: the selection table, free of heavy imports.

CPU: fp32, dynamic int8 (MatMulInteger kernels, VNNI), int4 weight-only (MatMulNBits); any
of them with an int8 KV cache on request (`--kv-cache int8`).
CUDA: fp32, fp16, and weight-only int8/int4 MatMulNBits over fp16 activations: the only int
paths the CUDA provider runs fast (it has no fast MatMulInteger). The pipeline builds the
fp32 graph first and then applies `recipe.fp16` and `recipe.weights` in that order.
"""

from __future__ import annotations

from dataclasses import dataclass

TARGETS = ("cpu", "cuda")
ATTENTIONS = ("kernel", "fused")
# --attention's default per target: cpu cuts the graph at attention for kvserve's kernel
# (server/paged_runner.py serves the pieces, the quality gate opens them there too); cuda
# keeps the fused graph.
DEFAULT_ATTENTION = {"cpu": "kernel", "cuda": "fused"}


@dataclass(frozen=True)
class NBits:
    """A MatMulNBits weight format (ORT's MatMulNBitsQuantizer settings)."""

    bits: int  # 8 or 4
    block_size: int  # values per scale, along the input (K) axis
    accuracy_level: int  # 0: compute in the activations' float type; 4: int8 (CPU VNNI)
    symmetric: bool = False  # the tied lm_head is always symmetric


@dataclass(frozen=True)
class Recipe:
    precision: str
    target: str
    quantization: str  # the manifest's quantization
    dtype: str  # the manifest's dtype: KV cache and activations the server handles
    fp16: bool  # convert the fp32 graph to fp16 first
    weights: str  # "float" | "dynamic-int8" | "nbits"
    nbits: NBits | None = None
    kv_cache: str = "float"  # "float" (the graph's dtype) | "int8" (export/kv_scales.py): opt-in
    attention: str = "fused"  # "fused" (one graph) | "kernel" (dense pieces, export/cut.py)


HEAD_INT8 = NBits(bits=8, block_size=128, accuracy_level=4, symmetric=True)  # tied lm_head, CPU
CPU_INT4 = NBits(bits=4, block_size=32, accuracy_level=4)
CUDA_INT8 = NBits(bits=8, block_size=128, accuracy_level=0)
CUDA_INT4 = NBits(bits=4, block_size=32, accuracy_level=0)

RECIPES: dict[tuple[str, str], Recipe] = {
    ("fp32", "cpu"): Recipe("fp32", "cpu", "none", "float32", False, "float"),
    ("fp32", "cuda"): Recipe("fp32", "cuda", "none", "float32", False, "float"),
    ("int8", "cpu"): Recipe("int8", "cpu", "int8-dynamic", "float32", False, "dynamic-int8"),
    ("int4", "cpu"): Recipe("int4", "cpu", "int4-weight-only", "float32", False, "nbits", CPU_INT4),
    ("fp16", "cuda"): Recipe("fp16", "cuda", "none", "float16", True, "float"),
    ("int8", "cuda"): Recipe(
        "int8", "cuda", "int8-weight-only", "float16", True, "nbits", CUDA_INT8
    ),
    ("int4", "cuda"): Recipe(
        "int4", "cuda", "int4-weight-only", "float16", True, "nbits", CUDA_INT4
    ),
}

# What --help says about each precision, and on which targets it is built.
PRECISIONS: dict[str, str] = {
    "fp32": "full precision, the reference; must match PyTorch (logits within 1e-3). Any target.",
    "fp16": "cuda: half the memory and the KV cache; logits returned as fp32.",
    "int8": "cpu: dynamic int8 (per-channel weights, int8 activations on the fly), ~2-3x "
    "faster than fp32 and 1/4 of its size. cuda: int8 weight-only (MatMulNBits, fp16 math).",
    "int4": "int4 weight-only (MatMulNBits, 32-value blocks): the smallest artifact; cpu "
    "decodes fast but prefills at about fp32 speed; cuda: fp16 math.",
}


def targets_of(precision: str) -> list[str]:
    return [target for (p, target) in RECIPES if p == precision]


def recipe_for(precision: str, target: str) -> Recipe | None:
    return RECIPES.get((precision, target))
