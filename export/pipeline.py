"""One export, start to finish: checkpoint -> ONNX -> (fp16 / quantized) -> (cut at attention)
-> gate -> OUT_DIR, and the manifest built from what it learned (checkpoint, graph, gate),
with the checkpoint's confidence.json (the answer confidence's calibration) copied in."""

from __future__ import annotations

import shutil
import sys
import time
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from artifact import (
    GRAPH_INTERFACE,
    PAGED_INTERFACE,
    Calibration,
    CalibrationError,
    Manifest,
    piece_inputs,
    piece_outputs,
    write_manifest,
)
from export import ExportError, ExportFailed
from export.checkpoint import Checkpoint, load_checkpoint
from export.config import ExportOptions
from export.cut import CutResult, cut_at_attention
from export.gate import failures, format_table
from export.graph_facts import describe_graph
from export.heldout import DEFAULT_DATA, load_calibration, load_heldout
from export.onnx_export import (
    MODEL_FILE,
    GraphSignature,
    check_signature,
    export_onnx,
    model_files,
    read_signature,
)
from export.progress import Steps
from export.quality import GateRun, QualityReport, encode_samples, measure
from export.recipes import Recipe
from export.staging import Staging, check_out_dir, file_sizes, move_into


@dataclass(frozen=True)
class ExportResult:
    out: Path
    manifest: Manifest
    quality: QualityReport
    seconds: float
    sizes: dict[str, int]  # artifact file name -> bytes


def run_export(options: ExportOptions) -> ExportResult:
    """Build the artifact dir for `options`; raise ExportError/ExportFailed with one line."""
    start = time.perf_counter()
    if problem := options.problem():
        raise ExportError(problem)
    checkpoint = load_checkpoint(options.checkpoint)
    confidence = load_confidence(checkpoint.path)
    samples = load_heldout(options.gate.data, options.gate.samples or None)
    check_out_dir(Path(options.out).resolve(), options.force)  # all bad input before any work
    if not checkpoint.has_prompt_file:
        print(
            f"note: {checkpoint.path} has no prompt template file; using the default",
            file=sys.stderr,
        )
    recipe = options.recipe
    kernel = recipe.attention == "kernel"
    steps = Steps(total=4 + recipe.fp16 + (recipe.weights != "float") + kernel)
    with Staging(options.out, options.force) as stage:
        model = build_graph(checkpoint, recipe, stage.scratch, steps, options.gate.data)
        signature = read_signature(model)
        facts = describe_graph(model, checkpoint.architecture)
        cut = None
        if kernel:
            layers = checkpoint.architecture.num_layers
            with steps.step(f"Cutting the graph at attention into {layers + 1} dense pieces"):
                cut = cut_at_attention(model, stage.scratch / "pieces", layers)
            move_into(cut.files, stage.path)
            facts |= cut_facts(cut)
        else:
            move_into(model_files(model), stage.path)
        shutil.copyfile(checkpoint.tokenizer_file, stage.path / "tokenizer.json")
        interface = PAGED_INTERFACE if kernel else GRAPH_INTERFACE
        run = GateRun(
            stage.path, interface, gate_provider(recipe), samples, options.gate.max_new_tokens
        )
        with steps.step(f"Quality gate: {len(samples)} held-out questions vs PyTorch fp32"):
            report = measure(run, checkpoint)
        print(format_table(report, options.thresholds))
        if problems := failures(report, options.thresholds):
            raise ExportFailed("quality gate failed, nothing written: " + "; ".join(problems))
        with steps.step("Writing manifest (hashing files)"):
            manifest = build_manifest(checkpoint, signature, options, report, facts, cut)
            manifest.confidence = confidence
            write_manifest(stage.path, manifest)
        sizes = file_sizes(stage.path)
        out = stage.publish()
    return ExportResult(out, manifest, report, time.perf_counter() - start, sizes)


def load_confidence(checkpoint: Path) -> Calibration | None:
    """The checkpoint's confidence.json for the manifest (None: trained without a validation
    part, so the server gives no confidence); a bad one is ExportError, before any work."""
    try:
        return Calibration.load(checkpoint)
    except CalibrationError as e:
        hint = "re-run training, or remove the file to export without one"
        raise ExportError(f"{e} ({hint})") from None


def build_graph(
    checkpoint: Checkpoint, recipe: Recipe, scratch: Path, steps: Steps, data: Path = DEFAULT_DATA
) -> Path:
    """The final model.onnx (in scratch), its interface checked against the server contract.

    `data`: the training data file; an int8 KV cache is calibrated on its training rows."""
    layers = checkpoint.architecture.num_layers
    calibration = kv_calibration(checkpoint, data) if recipe.kv_cache == "int8" else None
    cache = "int8" if calibration is not None else "in-place"
    with steps.step(f"Building the ONNX serving graph (fp32, fused attention, {cache} KV cache)"):
        model = export_onnx(checkpoint.path, scratch / "fp32", calibration)
    with steps.step("Checking graph inputs and outputs"):
        check_signature(read_signature(model), layers)
    if recipe.fp16:
        from export.quantize import convert_fp16

        with steps.step("Converting to fp16 (logits stay fp32)"):
            model = convert_fp16(model, _fresh(scratch / "fp16") / MODEL_FILE)
    if recipe.weights != "float":
        with steps.step(f"Quantizing weights ({recipe.quantization})"):
            model = _quantize(model, recipe, _fresh(scratch / recipe.quantization))
        check_signature(read_signature(model), layers)
    return model


def kv_calibration(checkpoint: Checkpoint, data: Path) -> list[list[int]]:
    """Token ids of training rows (prompt + answer, as training sees them) to scale the cache."""
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(checkpoint.tokenizer_file))
    samples = load_calibration(data)
    room = checkpoint.architecture.max_positions
    return [e.prompt + e.target for e in encode_samples(tokenizer, checkpoint, samples, room)]


def _quantize(model: Path, recipe: Recipe, workdir: Path) -> Path:
    if recipe.weights == "dynamic-int8":
        from export.quantize import quantize_int8

        return quantize_int8(model, workdir / MODEL_FILE)
    from export.weight_only import quantize_weight_only

    return quantize_weight_only(model, workdir / MODEL_FILE, recipe.nbits)


def gate_provider(recipe: Recipe) -> str:
    """Where the gate runs the graph: the target's provider when this machine has it.

    A cuda artifact built on a machine without a GPU is checked on the CPU provider (every
    op it uses has a CPU kernel); the manifest records the provider it was validated on."""
    from server.runner import gpu_present

    return "cuda" if recipe.target == "cuda" and gpu_present() else "cpu"


def _fresh(directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    return directory


TOOLS = (
    "torch",
    "transformers",
    "onnx",
    "onnxruntime-gpu",
    "onnxruntime",
)


def cut_facts(cut: CutResult) -> dict:
    """What the manifest's `graph` section adds for dense pieces: their bytes, and the bytes
    stored once for several pieces (the token table) rather than in each."""
    shared = sum(w.nbytes for w in cut.shared)
    extra = sum(w.nbytes * (len(w.pieces) - 1) for w in cut.shared)
    return {
        "attention": "kernel",
        "pieces": len(cut.pieces),
        "weight_bytes": sum(cut.piece_bytes.values()) + shared,
        "shared_weight_bytes": shared,
        "bytes_saved_by_sharing": extra,
    }


def build_manifest(
    checkpoint: Checkpoint,
    signature: GraphSignature,
    options: ExportOptions,
    quality: QualityReport,
    graph: dict,
    cut: CutResult | None = None,
) -> Manifest:
    """The manifest of the fused graph (`signature`), or of its dense pieces when `cut`."""
    recipe = options.recipe
    paged: dict = {"kv_cache": graph.get("kv_cache", "")}
    inputs, outputs = signature.input_names, signature.output_names
    if cut is not None:
        layers = checkpoint.architecture.num_layers
        inputs = _unique(n for k in range(layers + 1) for n in piece_inputs(k, layers))
        outputs = _unique(n for k in range(layers + 1) for n in piece_outputs(k, layers))
        paged |= {
            "model_file": "",
            "pieces": cut.pieces,
            "kv_cache": cut.kv_cache,
            "kv_scales_file": cut.kv_scales_file,
            "shared_weights": cut.shared,
        }
    return Manifest(
        model_name=checkpoint.name,
        architecture=checkpoint.architecture,
        inputs=inputs,
        outputs=outputs,
        dtype=recipe.dtype,  # int8-dynamic and int4 on cpu keep float32 activations and cache
        quantization=recipe.quantization,
        validated_providers=[quality.provider],
        prompt_template=checkpoint.prompt_template,
        eos_token_id=checkpoint.eos_token_id,
        pad_token_id=checkpoint.pad_token_id,
        parity=gate_record(quality, options),
        interface=GRAPH_INTERFACE if cut is None else PAGED_INTERFACE,
        graph=graph,
        source={
            "checkpoint": str(checkpoint.path),
            "precision": options.precision,
            "target": options.target,
            "opset": signature.opset,
            "attention": recipe.attention,
            "tools": tool_versions(),
        },
        **paged,
    )


def _unique(names) -> list[str]:
    return list(dict.fromkeys(names))


def gate_record(quality: QualityReport, options: ExportOptions) -> dict:
    """The manifest's `parity` section: the quality gate's results and what it held them to."""
    return {
        **quality.to_dict(),
        "reference": "PyTorch fp32",
        "data": str(options.gate.data),
        "split": "heldout",
        "thresholds": options.thresholds.to_dict(),
        "passed": True,  # a failed gate writes no artifact
    }


def tool_versions() -> dict[str, str]:
    versions = {}
    for name in TOOLS:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue  # onnxruntime vs onnxruntime-gpu: whichever is installed
    return versions
