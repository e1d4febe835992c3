"""The quality gate's thresholds, its verdict, and the table it prints.

Defaults per precision: fp32 must be a faithful copy of PyTorch (logits within 1e-3, next-token
agreement 99%, perplexity within 0.1%, 95% of greedy answers identical). Reduced precisions
may drift a little: perplexity within 3%. Their greedy answers are held less tightly, because
one flipped near-tie rewrites the rest of an answer (floors: int8 90%, int4 70%; what the demo
model measured is in docs/export.md). Every threshold can be set on the command line
(`--max-ppl-delta` ...); an export that misses one is not written.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the gate's verdict stays importable without numpy/onnxruntime (--help)
    from export.quality import QualityReport


@dataclass(frozen=True)
class Thresholds:
    max_logit_diff: float | None  # None: recorded, not enforced (quantized logits do move)
    min_token_agreement: float  # next-token argmax agreement, teacher-forced
    max_ppl_delta: float  # |ppl_onnx / ppl_torch - 1|
    min_answer_match: float  # greedy answers identical to PyTorch's

    def with_overrides(self, **overrides: float | None) -> Thresholds:
        """These thresholds with every non-None override applied."""
        return replace(self, **{k: v for k, v in overrides.items() if v is not None})

    def to_dict(self) -> dict:
        return asdict(self)


DEFAULTS: dict[str, Thresholds] = {
    "fp32": Thresholds(
        max_logit_diff=1e-3, min_token_agreement=0.99, max_ppl_delta=0.001, min_answer_match=0.95
    ),
    "fp16": Thresholds(
        max_logit_diff=None, min_token_agreement=0.95, max_ppl_delta=0.03, min_answer_match=0.95
    ),
    "int8": Thresholds(
        max_logit_diff=None, min_token_agreement=0.95, max_ppl_delta=0.03, min_answer_match=0.90
    ),
    "int4": Thresholds(
        max_logit_diff=None, min_token_agreement=0.90, max_ppl_delta=0.03, min_answer_match=0.70
    ),
}


@dataclass(frozen=True)
class Check:
    name: str
    measured: str
    threshold: str
    passed: bool | None  # None: recorded only


def checks(report: QualityReport, limits: Thresholds) -> list[Check]:
    diff, agree, ppl, match = (
        report.max_logit_diff,
        report.token_agreement,
        report.ppl_delta,
        report.answer_match,
    )
    no_diff_limit = limits.max_logit_diff is None
    scoring = []
    if (scored := report.scoring_max_logit_diff) is not None:  # runners that score prompts
        scoring.append(
            Check(
                "prompt scoring |logit diff|",
                f"{scored:.3g}",
                "(recorded)" if no_diff_limit else f"<= {limits.max_logit_diff:g}",
                None if no_diff_limit else scored <= limits.max_logit_diff,
            )
        )
    return [
        Check(
            "max |logit diff|",
            f"{diff:.3g}",
            "(recorded)" if no_diff_limit else f"<= {limits.max_logit_diff:g}",
            None if no_diff_limit else diff <= limits.max_logit_diff,
        ),
        Check(
            "next-token agreement",
            f"{agree:.4f}",
            f">= {limits.min_token_agreement:g}",
            agree >= limits.min_token_agreement,
        ),
        Check(
            "perplexity torch -> onnx", f"{report.ppl_torch:.4g} -> {report.ppl_onnx:.4g}", "", None
        ),
        Check(
            "perplexity delta",
            f"{ppl:+.3%}",
            f"within ±{limits.max_ppl_delta:.2%}",
            abs(ppl) <= limits.max_ppl_delta,
        ),
        Check(
            "greedy answers identical",
            f"{match:.3f}",
            f">= {limits.min_answer_match:g}",
            match >= limits.min_answer_match,
        ),
        *scoring,
    ]


def failures(report: QualityReport, limits: Thresholds) -> list[str]:
    """Why the export is not good enough (empty: it passes)."""
    return [
        f"{c.name} {c.measured} (needs {c.threshold})"
        for c in checks(report, limits)
        if c.passed is False
    ]


def format_table(report: QualityReport, limits: Thresholds) -> str:
    """A header line, then one row per check: measured value, threshold, verdict."""
    rows = [("check", "measured", "threshold", "")]
    for c in checks(report, limits):
        rows.append(
            (c.name, c.measured, c.threshold, {True: "ok", False: "FAIL"}.get(c.passed, ""))
        )
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    header = (
        f"quality gate vs PyTorch fp32: {report.samples} held-out questions, "
        f"{report.tokens} answer tokens, {report.provider}"
    )
    return "\n".join([header, *lines])
