"""One export, start to finish: checkpoint -> ONNX -> (int8) -> parity -> manifest -> OUT_DIR."""

from __future__ import annotations

import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from export.artifact import Staging, check_out_dir, file_sizes, move_into
from export.checkpoint import Checkpoint, load_checkpoint
from export.errors import ExportError, ExportFailed
from export.manifest import Manifest, write_manifest
from export.metadata import build_manifest
from export.onnx_export import MODEL_FILE, check_signature, export_onnx, model_files, read_signature
from export.options import ExportOptions
from export.parity import ParityReport, check_parity, format_table, fp32_failures
from export.progress import Steps


@dataclass(frozen=True)
class ExportResult:
    out: Path
    manifest: Manifest
    parity: ParityReport
    seconds: float
    sizes: dict[str, int]  # artifact file name -> bytes


def run_export(options: ExportOptions) -> ExportResult:
    """Build the artifact dir for `options`; raise ExportError/ExportFailed with one line."""
    start = time.perf_counter()
    if problem := options.problem():
        raise ExportError(problem)
    checkpoint = load_checkpoint(options.checkpoint)
    check_out_dir(Path(options.out).resolve(), options.force)  # all bad input before any work
    if not checkpoint.has_prompt_file:
        print(
            f"note: {checkpoint.path} has no prompt template file; using the default",
            file=sys.stderr,
        )
    steps = Steps(total=4 if options.precision == "fp32" else 5)
    with Staging(options.out, options.force) as stage:
        model = _build_graph(checkpoint, options, stage.scratch, steps)
        signature = read_signature(model)
        move_into(model_files(model), stage.path)
        shutil.copyfile(checkpoint.tokenizer_file, stage.path / "tokenizer.json")
        with steps.step("Checking parity: ONNX Runtime vs PyTorch"):
            report = check_parity(stage.path / MODEL_FILE, checkpoint)
        print(format_table(report))
        _gate(report, options)
        with steps.step("Writing manifest (hashing files)"):
            manifest = build_manifest(checkpoint, signature, options, report)
            write_manifest(stage.path, manifest)
        sizes = file_sizes(stage.path)
        out = stage.publish()
    return ExportResult(out, manifest, report, time.perf_counter() - start, sizes)


def _build_graph(
    checkpoint: Checkpoint, options: ExportOptions, scratch: Path, steps: Steps
) -> Path:
    """The final model.onnx (in scratch), its interface checked against the server contract."""
    layers = checkpoint.architecture.num_layers
    with steps.step("Building the ONNX serving graph (fp32, fused attention, in-place KV cache)"):
        model = export_onnx(checkpoint.path, scratch / "fp32")
    with steps.step("Checking graph inputs and outputs"):
        check_signature(read_signature(model), layers)
    if options.precision == "int8":
        from export.quantize import quantize_int8

        with steps.step("Quantizing weights to int8 (dynamic, per channel)"):
            (scratch / "int8").mkdir()
            model = quantize_int8(model, scratch / "int8" / MODEL_FILE)
        check_signature(read_signature(model), layers)
    return model


def _gate(report: ParityReport, options: ExportOptions) -> None:
    """fp32 must match PyTorch; int8 is only recorded (its quality gates come later)."""
    if options.precision == "fp32" and (failures := fp32_failures(report)):
        raise ExportFailed("fp32 parity check failed: " + "; ".join(failures))
