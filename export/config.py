"""What `kvserve-export` is asked to do: the settings of an export and of `bench`, with their
defaults (the only place they are set; export/cli.py and bench_cli.py build flags from them)
and their up-front checks.

Kept free of heavy imports so `kvserve-export --help` answers instantly.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

from export.gate import DEFAULTS, Thresholds
from export.heldout import DEFAULT_DATA
from export.recipes import (
    ATTENTIONS,
    DEFAULT_ATTENTION,
    PRECISIONS,
    TARGETS,
    Recipe,
    recipe_for,
    targets_of,
)

KV_CACHES = ("auto", "float", "int8")
ATTENTION_CHOICES = ("auto", *ATTENTIONS)


@dataclass(frozen=True)
class GateOptions:
    """The quality gate: which held-out rows, how long the answers, and any threshold overrides."""

    data: Path = DEFAULT_DATA
    samples: int = 0  # 0: every held-out row
    max_new_tokens: int = 32
    overrides: dict[str, float | None] = field(default_factory=dict)  # Thresholds field -> value


@dataclass(frozen=True)
class ExportOptions:
    checkpoint: Path
    out: Path
    precision: str = "fp32"
    target: str = "cpu"
    force: bool = False
    gate: GateOptions = field(default_factory=GateOptions)
    kv_cache: str = "auto"  # auto (the recipe's) | float | int8
    attention: str = "auto"  # auto (the target's default) | kernel | fused

    @property
    def recipe(self) -> Recipe:
        recipe = recipe_for(self.precision, self.target)
        if recipe is None:
            raise ValueError(self.problem())
        if self.kv_cache != "auto":
            recipe = replace(recipe, kv_cache=self.kv_cache)
        return replace(recipe, attention=self.attention_kind)

    @property
    def attention_kind(self) -> str:
        """kernel | fused: the option, or the target's default for auto."""
        if self.attention == "auto":
            return DEFAULT_ATTENTION.get(self.target, "fused")
        return self.attention

    @property
    def quantization(self) -> str:
        return self.recipe.quantization

    @property
    def thresholds(self) -> Thresholds:
        """The precision's defaults; an fp32 graph with an int8 cache is held to int8's (its
        logits are no longer fp32-exact); --max-ppl-delta etc. override either."""
        name = self.precision
        if name == "fp32" and self.recipe.kv_cache == "int8":
            name = "int8"
        return DEFAULTS[name].with_overrides(**self.gate.overrides)

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
        if recipe_for(self.precision, self.target) is None:
            built = " or ".join(targets_of(self.precision))
            return f"precision {self.precision} is built for --target {built}, not {self.target}"
        if self.kv_cache not in KV_CACHES:
            return f"unknown KV cache {self.kv_cache!r} (--kv-cache: {', '.join(KV_CACHES)})"
        if self.kv_cache == "int8" and self.target != "cpu":
            return "--kv-cache int8 is built for --target cpu (the CUDA graphs keep a float cache)"
        if self.attention not in ATTENTION_CHOICES:
            choices = ", ".join(ATTENTION_CHOICES)
            flag = "--attention/KVSERVE_ATTENTION"
            return f"unknown attention {self.attention!r} ({flag}: {choices})"
        if self.attention_kind == "kernel" and self.target != "cpu":
            return (
                "--attention kernel is built for --target cpu (the CUDA graphs keep ONNX "
                "Runtime's fused attention: --attention fused)"
            )
        if self.gate.samples < 0 or self.gate.max_new_tokens < 1:
            return "--gate-samples must be >= 0 and --gate-max-new-tokens >= 1"
        return None


@dataclass(frozen=True)
class BenchSettings:
    """`kvserve-export bench`: what is timed (export/bench.py times it)."""

    batches: tuple[int, ...] = (1, 8, 32)
    prompt_tokens: int = 128
    decode_steps: int = 16
    repeats: int = 3
    provider: str = "auto"
    threads: int = 0  # 0: ONNX Runtime's default, as the server
