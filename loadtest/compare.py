"""`kvserve-loadtest compare A.json B.json`: deltas per figure, non-zero exit on regression.

A is the baseline, B the candidate. A threshold says how much worse B may be:
`ttft.p99=10%` (relative) or `error_rate=0.01` (absolute, in the figure's unit: ms for
latencies, per second for throughputs, a fraction for rates). Names may use * wildcards.
Exit status: 0 no regression, 1 B regressed past a threshold, 2 bad input.
"""

from __future__ import annotations

import fnmatch
import json
import sys
from dataclasses import dataclass
from pathlib import Path

from envopts import Parser
from loadtest.specs import SpecError

PROG = "kvserve-loadtest compare"
SCHEMAS = ("kvserve-loadtest/1", "kvserve-loadtest/2")
LATENCY_KEYS = ("mean", "p50", "p90", "p95", "p99", "max")
DEFAULT_THRESHOLDS = (
    "ttft.p50=10%",
    "ttft.p99=10%",
    "itl.p50=10%",
    "tpot.p50=10%",
    "e2e.p50=10%",
    "e2e.p99=10%",
    "request_throughput=5%",
    "output_token_throughput=5%",
    "goodput=5%",
    "error_rate=0.01",
)


@dataclass(frozen=True)
class Threshold:
    pattern: str
    limit: float
    relative: bool

    def __str__(self) -> str:
        return f"{self.limit * 100:g}%" if self.relative else f"{self.limit:g}"


@dataclass(frozen=True)
class Row:
    name: str
    a: float | None
    b: float | None
    higher_is_better: bool
    threshold: Threshold | None

    @property
    def worse_by(self) -> float | None:
        """How much worse B is than A in the figure's unit (negative: better)."""
        if self.a is None or self.b is None:
            return None
        return (self.a - self.b) if self.higher_is_better else (self.b - self.a)

    @property
    def change(self) -> float | None:
        if self.a is None or self.b is None or self.a == 0:
            return None
        return (self.b - self.a) / abs(self.a)

    @property
    def regressed(self) -> bool:
        worse, t = self.worse_by, self.threshold
        if worse is None or t is None or worse <= 0:
            return False
        if not t.relative:
            return worse > t.limit
        return self.a == 0 or worse / abs(self.a) > t.limit  # from 0, any worsening counts


def parse_threshold(text: str) -> Threshold:
    name, sep, limit = text.partition("=")
    if not sep or not name.strip():
        raise SpecError(f"--threshold: expected NAME=LIMIT (e.g. ttft.p99=10%), got {text!r}")
    relative = limit.strip().endswith("%")
    try:
        value = float(limit.strip().removesuffix("%"))
    except ValueError:
        raise SpecError(f"--threshold: expected a number or N%, got {limit!r}") from None
    if value < 0:
        raise SpecError(f"--threshold: the limit must be >= 0, got {limit!r}")
    return Threshold(name.strip(), value / 100 if relative else value, relative)


def flatten(report: dict) -> dict[str, tuple[float | None, bool]]:
    """figure name -> (value, higher is better), from a report of either schema."""
    f = report["figures"]
    out: dict[str, tuple[float | None, bool]] = {}
    for name in ("ttft", "itl", "tpot", "e2e"):
        dist = f.get(f"{name}_ms") or {}
        for key in LATENCY_KEYS:
            out[f"{name}.{key}"] = (dist.get(key), False)
    out["request_throughput"] = (f.get("request_throughput_rps"), True)
    out["output_token_throughput"] = (f.get("output_token_throughput_tps"), True)
    out["total_token_throughput"] = (f.get("total_token_throughput_tps"), True)
    requests = report.get("requests", {})
    rate = requests.get("errors", 0) / requests["total"] if requests.get("total") else None
    out["error_rate"] = (f.get("error_rate", rate), False)
    goodput = f.get("goodput") or {}
    out["goodput"] = (goodput.get("rate_rps"), True)
    lag = (f.get("send") or {}).get("lag_ms") or {}
    out["send_lag.p99"] = (lag.get("p99"), False)
    # answers handed over to a person (kvserve's Answer / chat); no default threshold: a
    # change of share is a change of model or of questions, not of serving speed
    out["handover_share"] = ((f.get("handover") or {}).get("share"), False)
    return out


def pick_threshold(name: str, thresholds: list[Threshold]) -> Threshold | None:
    """The last matching threshold wins (so `*=20%` then `ttft.p99=5%` reads naturally)."""
    found = None
    for t in thresholds:
        if fnmatch.fnmatchcase(name, t.pattern):
            found = t
    return found


def compare(a: dict, b: dict, thresholds: list[Threshold]) -> list[Row]:
    fa, fb = flatten(a), flatten(b)
    return [
        Row(name, value, fb[name][0], better, pick_threshold(name, thresholds))
        for name, (value, better) in fa.items()
    ]


def load_report(path: Path) -> dict:
    try:
        report = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SpecError(f"no such file: {path}") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise SpecError(f"{path}: not a JSON report ({e})") from None
    if not isinstance(report, dict) or report.get("schema") not in SCHEMAS:
        raise SpecError(f"{path}: not a kvserve-loadtest report (schema {SCHEMAS[-1]})")
    return report


def _fmt(v: float | None) -> str:
    return "-" if v is None else f"{v:.3f}" if abs(v) < 10 else f"{v:.1f}"


def _verdict(r: Row) -> str:
    worse = r.worse_by
    if worse is None:
        return "n/a (not in both runs)"
    if r.threshold is None:
        return "(no limit)"
    return "REGRESSED" if r.regressed else "better" if worse < 0 else "ok"


def format_rows(rows: list[Row], show_all: bool) -> str:
    head = f"{'figure':<26}{'A':>12}{'B':>12}{'change':>10}{'limit':>9}  verdict"
    lines = [head, "-" * len(head)]
    for r in rows:
        if not show_all and r.threshold is None:
            continue
        if r.a is None and r.b is None:
            continue
        change = "-" if r.change is None else f"{r.change:+.1%}"
        verdict = _verdict(r)
        limit = "" if r.threshold is None else str(r.threshold)
        lines.append(f"{r.name:<26}{_fmt(r.a):>12}{_fmt(r.b):>12}{change:>10}{limit:>9}  {verdict}")
    return "\n".join(lines)


def notes(a: dict, b: dict) -> list[str]:
    """Why the two runs may not be comparable."""
    out = []
    keys = ("load_model", "max_new_tokens", "rpc", "workers", "prompts_file", "synthetic_input")
    for key in keys:
        va, vb = a["config"].get(key), b["config"].get(key)
        if va != vb:
            out.append(f"note: {key} differs: A {va!r}, B {vb!r}")
    for label, report in (("A", a), ("B", b)):
        for w in report.get("warnings", []):
            out.append(f"note: {label} warned: {w}")
    return out


def build_parser() -> Parser:
    p = Parser(PROG, __doc__)
    p.add_argument("baseline", type=Path, metavar="A.json")
    p.add_argument("candidate", type=Path, metavar="B.json")
    p.add_argument(
        "--threshold",
        action="append",
        metavar="NAME=LIMIT",
        # argparse %-formats help strings: the thresholds' % signs are doubled
        help="how much worse B may be; repeatable. Default: "
        + " ".join(DEFAULT_THRESHOLDS).replace("%", "%%"),
    )
    p.add_argument("--all", action="store_true", help="also list figures without a threshold")
    return p


def main(argv: list[str]) -> int:
    p = build_parser()
    a = p.parse_args(argv)
    try:
        thresholds = [parse_threshold(t) for t in (a.threshold or DEFAULT_THRESHOLDS)]
        base, cand = load_report(a.baseline), load_report(a.candidate)
    except SpecError as e:
        p.error(str(e))
    names = flatten(base)
    for t in thresholds:
        if not any(fnmatch.fnmatchcase(n, t.pattern) for n in names):
            p.error(f"--threshold: no figure matches {t.pattern!r} (see --all)")
    rows = compare(base, cand, thresholds)
    print(f"A: {a.baseline}\nB: {a.candidate}")
    print(format_rows(rows, a.all))
    for line in notes(base, cand):
        print(line)
    regressed = [r.name for r in rows if r.regressed]
    if regressed:
        print(f"{PROG}: B regressed: {', '.join(regressed)}", file=sys.stderr)
        return 1
    print("no regression past the thresholds")
    return 0
