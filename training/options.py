"""Shared bits of the two command lines: env-var defaults and checked number types.

Every option can come from KVSERVE_<OPTION> (dashes become underscores); a flag beats it.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable


def env(option: str, default: str | None = None) -> str | None:
    return os.environ.get("KVSERVE_" + option.upper().replace("-", "_"), default)


def positive(kind: type) -> Callable[[str], int | float]:
    """An argparse type: a number of `kind` that must be > 0."""

    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
        if value <= 0:
            raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
        return value

    return parse


def flag(text: str | None) -> bool | None:
    """Boolean env var: 1/true/yes/on or 0/false/no/off; unset -> None (the preset decides)."""
    if text is None or text == "":
        return None
    if text.lower() in ("1", "true", "yes", "on"):
        return True
    if text.lower() in ("0", "false", "no", "off"):
        return False
    print(f"kvserve-train: error: not a boolean: {text!r} (use 1/0, true/false)", file=sys.stderr)
    raise SystemExit(2)


def data_option(parser: argparse.ArgumentParser, help_text: str) -> None:
    """--data FILE|DIR|HUB_ID, required unless KVSERVE_DATA is set."""
    parser.add_argument(
        "--data",
        default=env("data"),
        required=env("data") is None,
        metavar="FILE|DIR|HUB_ID",
        help=help_text,
    )
    parser.add_argument(
        "--eval-data",
        default=env("eval-data"),
        metavar="FILE|DIR|HUB_ID",
        help="more heldout rows from another source (e.g. a SQuAD dev file): every row "
        "counts as heldout",
    )
