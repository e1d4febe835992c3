"""`kvserve-loadtest`: parse options, run, print the summary, write the reports."""

from __future__ import annotations

import sys

from loadtest.config import parse_args
from loadtest.errors import LoadTestError
from loadtest.prompts import load_workload
from loadtest.report import format_summary, write_report
from loadtest.run import run_load_sync

PROG = "kvserve-loadtest"


def main(argv: list[str] | None = None) -> int:
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
    try:
        files = write_report(result, config.out_dir)
    except OSError as e:
        return fail(f"cannot write the report: {e}", code=1)
    print(f"report: {files.json_path}", flush=True)
    if result.figures.ok == 0:
        print(f"{PROG}: no request succeeded", file=sys.stderr)
        return 1
    return 0


def fail(message: str, code: int = 2) -> int:
    print(f"{PROG}: error: {message}", file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main())
