"""Artifacts with a known confidence calibration, for the hand-over tests.

The tiny test model's own calibration (if its training data has a validation part) is
whatever the fit gave; a test that needs a known curve copies the artifact and writes that
curve into the copy's manifest, hashes and all, as the exporter would have.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from artifact import Calibration, read_manifest, write_manifest

# P(right) = sigmoid(mean logprob): under 0.5 for every answer (logprobs are <= 0)
UNDER_A_HALF = Calibration(a=1.0, b=0.0, threshold=0.25, extra={"n": 100, "fitted_on": "test"})


def calibrated_copy(artifact: Path, out: Path, calibration: Calibration | None) -> Path:
    """A copy of `artifact` at `out` whose manifest carries `calibration` (None: none)."""
    shutil.copytree(artifact, out)
    manifest = read_manifest(out)
    manifest.confidence = calibration
    write_manifest(out, manifest)
    return out
