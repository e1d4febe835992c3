"""`kvserve-loadtest`: parse options, run, print the summary, write the reports.

`kvserve-loadtest compare A.json B.json` compares two runs (compare.py)."""

from __future__ import annotations

import sys

from loadtest.errors import LoadTestError
from loadtest.options import parse_args
from loadtest.prompts import load_workload
from loadtest.report import format_summary, write_report
from loadtest.run import run_load_sync

PROG = "kvserve-loadtest"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["compare"]:
        from loadtest.compare import main as compare_main

        return compare_main(argv[1:])
    config = parse_args(argv)  # bad flags: one line, exit 2
    try:
        workload = load_workload(config)  # before connecting: a bad file fails fast
        config.out_dir.mkdir(parents=True, exist_ok=True)  # and so does an unwritable --out
        result = run_load_sync(config, workload)
    except (LoadTestError, OSError) as e:
        return fail(str(e))
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    print(format_summary(result), flush=True)
    shout(result.warnings)
    try:
        files = write_report(result, config.out_dir)
    except OSError as e:
        return fail(f"cannot write the report: {e}", code=1)
    if files.html_path is not None:
        print(f"html: {files.html_path}", flush=True)
    print(f"report: {files.json_path}", flush=True)
    if result.figures.ok == 0:
        print(f"{PROG}: no request succeeded", file=sys.stderr)
        return 1
    return 0


def shout(warnings: list[str]) -> None:
    """The client's own trouble, where nobody can miss it (stderr, framed)."""
    if not warnings:
        return
    bar = "!" * 78
    lines = [bar, *(f"!!! {w}" for w in warnings), bar]
    print("\n".join(lines), file=sys.stderr, flush=True)


def fail(message: str, code: int = 2) -> int:
    print(f"{PROG}: error: {message}", file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main())
