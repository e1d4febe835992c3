"""kvserve-export: checkpoint -> ONNX serving graph (+ fp16 / int8) -> quality gate -> artifact dir.

The two ways an export stops are defined here: bad input from the user, or a failure of the
export itself.

The CLI turns either into one line on stderr and an exit code; nothing else prints a traceback.
"""

from __future__ import annotations


class ExportError(Exception):
    """Bad input (missing dir, not a GPT-2 checkpoint, bad option): exit code 2."""

    exit_code = 2


class ExportFailed(ExportError):
    """The input was fine but the export did not produce a trustworthy artifact: exit code 1."""

    exit_code = 1
