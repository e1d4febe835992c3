"""Small inline-SVG charts (lines, steps, points; linear or log axes), no JS, no network.

Enough for a load-test report and nothing more: the HTML report embeds the output as is,
so it opens anywhere, offline, and prints.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from html import escape

PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#17becf")
LEFT, RIGHT, TOP, BOTTOM = 64, 16, 46, 42  # plot margins: room for ticks, title, legend


@dataclass(frozen=True)
class Series:
    name: str
    xs: Sequence[float]
    ys: Sequence[float | None]  # None: a gap in a line
    kind: str = "line"  # "line", "step" (holds each value until the next x) or "points"
    color: str = ""


@dataclass(frozen=True)
class Axis:
    label: str
    log: bool = False
    lo: float | None = None  # forced bounds (default: the data's, rounded to ticks)
    hi: float | None = None


@dataclass(frozen=True)
class Scale:
    """Data -> pixels along one axis."""

    lo: float
    hi: float
    a: float  # pixel of lo
    b: float  # pixel of hi
    log: bool

    def __call__(self, v: float) -> float:
        f = (_t(v, self.log) - _t(self.lo, self.log)) / (
            _t(self.hi, self.log) - _t(self.lo, self.log)
        )
        return self.a + (self.b - self.a) * f


def _t(v: float, log: bool) -> float:
    return math.log10(v) if log else v


def nice_step(span: float, count: int = 5) -> float:
    raw = span / max(count, 1)
    power = 10 ** math.floor(math.log10(raw))
    return next(m * power for m in (1, 2, 5, 10) if m * power >= raw)


def ticks(lo: float, hi: float, log: bool) -> tuple[float, float, list[float]]:
    """(domain lo, domain hi, tick values): linear steps of 1/2/5, or decades (and 2, 5)."""
    if log:
        d0, d1 = math.floor(math.log10(lo)), math.ceil(math.log10(hi))
        d1 = max(d1, d0 + 1)
        mults = (1,) if d1 - d0 > 2 else (1, 2, 5)
        values = [m * 10.0**d for d in range(d0, d1 + 1) for m in mults if m * 10.0**d <= 10.0**d1]
        return 10.0**d0, 10.0**d1, values
    if hi <= lo:
        lo, hi = (lo - 1, hi + 1) if lo != 0 else (0.0, 1.0)
    step = nice_step(hi - lo)
    lo, hi = math.floor(lo / step) * step, math.ceil(hi / step) * step
    return lo, hi, [lo + i * step for i in range(round((hi - lo) / step) + 1)]


def fmt(v: float) -> str:
    return f"{v:.4g}"


def _bounds(values: list[float], axis: Axis) -> tuple[float, float, list[float]]:
    finite = [v for v in values if math.isfinite(v) and (v > 0 or not axis.log)]
    lo = axis.lo if axis.lo is not None else min(finite, default=0.0 if not axis.log else 1.0)
    hi = axis.hi if axis.hi is not None else max(finite, default=1.0 if not axis.log else 10.0)
    if not axis.log and axis.lo is None and lo > 0:
        lo = 0.0  # amounts read best from zero
    return ticks(lo, hi, axis.log)


def chart(
    title: str, series: Sequence[Series], x: Axis, y: Axis, width: int = 600, height: int = 300
) -> str:
    """One chart as an <svg> element."""
    xs = [v for s in series for v in s.xs]
    ys = [v for s in series for v in s.ys if v is not None]
    x0, x1, xt = _bounds(xs, x)
    y0, y1, yt = _bounds(ys, y)
    sx = Scale(x0, x1, LEFT, width - RIGHT, x.log)
    sy = Scale(y0, y1, height - BOTTOM, TOP, y.log)
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" aria-label="{escape(title)}">',
        f"<title>{escape(title)}</title>",
        _text(LEFT, 16, "title", title),
        *_grid(sx, sy, xt, yt, width, height),
        *_axis_labels(x.label, y.label, width, height),
        *_legend(series),
    ]
    clip = "clip-" + re.sub(r"[^a-z0-9]+", "-", title.lower())  # titles are unique per page
    parts.append(
        f'<clipPath id="{clip}"><rect x="{LEFT}" y="{TOP}" width="{width - LEFT - RIGHT}" '
        f'height="{height - TOP - BOTTOM}"/></clipPath><g clip-path="url(#{clip})">'
    )
    for i, s in enumerate(series):
        parts.append(_draw(s, s.color or PALETTE[i % len(PALETTE)], sx, sy))
    parts.append("</g>")
    if not ys:
        parts.append(_text(width / 2, height / 2, "empty", "no data", "middle"))
    parts.append("</svg>")
    return "\n".join(parts)


def _text(x: float, y: float, cls: str, text: str, anchor: str = "start", extra: str = "") -> str:
    return (
        f'<text x="{x:.1f}" y="{y:.1f}" class="{cls}" text-anchor="{anchor}"{extra}>'
        f"{escape(text)}</text>"
    )


def _line(x1: float, y1: float, x2: float, y2: float) -> str:
    return f'<line x1="{x1:.1f}" y1="{y1:.1f}" x2="{x2:.1f}" y2="{y2:.1f}" class="grid"/>'


def _grid(sx: Scale, sy: Scale, xt: list[float], yt: list[float], w: int, h: int) -> list[str]:
    out = []
    for v in xt:
        out += [
            _line(sx(v), TOP, sx(v), h - BOTTOM),
            _text(sx(v), h - BOTTOM + 14, "tick", fmt(v), "middle"),
        ]
    for v in yt:
        out += [
            _line(LEFT, sy(v), w - RIGHT, sy(v)),
            _text(LEFT - 6, sy(v) + 4, "tick", fmt(v), "end"),
        ]
    width, height = w - LEFT - RIGHT, h - TOP - BOTTOM
    out.append(f'<rect x="{LEFT}" y="{TOP}" width="{width}" height="{height}" class="frame"/>')
    return out


def _axis_labels(x_label: str, y_label: str, w: int, h: int) -> list[str]:
    cx, cy = (LEFT + w - RIGHT) / 2, (TOP + h - BOTTOM) / 2
    turn = f' transform="rotate(-90 14 {cy:.1f})"'
    return [
        _text(cx, h - 8, "label", x_label, "middle"),
        _text(14, cy, "label", y_label, "middle", turn),
    ]


def _legend(series: Sequence[Series]) -> list[str]:
    out, x = [], LEFT
    for i, s in enumerate(series):
        color = s.color or PALETTE[i % len(PALETTE)]
        out.append(f'<rect x="{x}" y="26" width="12" height="4" fill="{color}"/>')
        out.append(_text(x + 16, 32, "legend", s.name))
        x += 28 + 7 * len(s.name)
    return out


def _draw(s: Series, color: str, sx: Scale, sy: Scale) -> str:
    pts = [
        (sx(x), sy(y))
        if y is not None and (y > 0 or not sy.log) and (x > 0 or not sx.log)
        else None
        for x, y in zip(s.xs, s.ys, strict=True)
    ]
    if s.kind == "points":
        d = " ".join(f"M{p[0]:.1f} {p[1]:.1f}h0" for p in pts if p is not None)
        return f'<path d="{d}" stroke="{color}" class="points"/>'
    d = _step_path(pts) if s.kind == "step" else _line_path(pts)
    return f'<path d="{d}" stroke="{color}" class="line"/>'


def _line_path(pts: list[tuple[float, float] | None]) -> str:
    out, pen = [], False
    for p in pts:
        if p is None:
            pen = False
            continue
        out.append(f"{'L' if pen else 'M'}{p[0]:.1f} {p[1]:.1f}")
        pen = True
    return " ".join(out)


def _step_path(pts: list[tuple[float, float] | None]) -> str:
    out, last = [], None
    for p in pts:
        if p is None:
            last = None
            continue
        out.append(f"M{p[0]:.1f} {p[1]:.1f}" if last is None else f"H{p[0]:.1f} V{p[1]:.1f}")
        last = p
    return " ".join(out)
