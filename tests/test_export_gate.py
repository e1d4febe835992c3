"""The quality gate: thresholds, the held-out reader, and an export that must be refused."""

from __future__ import annotations

from pathlib import Path

import onnx
import pytest
from onnx import numpy_helper

from artifact import PromptTemplate
from export import cli, pipeline
from export.checkpoint import load_checkpoint
from export.gate import DEFAULTS, failures, format_table
from export.graph_facts import unique_params
from export.heldout import DEFAULT_DATA, QASample, encode_sample, load_heldout
from export.quality import QualityReport
from tests.support.export import GATE


def report(**changes: float) -> QualityReport:
    values = dict(
        provider="CPUExecutionProvider",
        samples=10,
        tokens=200,
        max_logit_diff=1e-5,
        token_agreement=1.0,
        ppl_torch=10.0,
        ppl_onnx=10.0,
        answer_match=1.0,
        max_new_tokens=32,
        mismatches=[],
    )
    return QualityReport(**{**values, **changes})


def test_a_faithful_fp32_report_passes() -> None:
    assert failures(report(), DEFAULTS["fp32"]) == []


@pytest.mark.parametrize(
    ("change", "says"),
    [
        ({"max_logit_diff": 0.01}, "max |logit diff|"),
        ({"token_agreement": 0.9}, "next-token agreement"),
        ({"ppl_onnx": 10.02}, "perplexity delta"),
        ({"ppl_onnx": 9.98}, "perplexity delta"),  # better is suspicious too for fp32
        ({"answer_match": 0.9}, "greedy answers identical"),
        ({"scoring_max_logit_diff": 0.01}, "prompt scoring |logit diff|"),
    ],
)
def test_each_fp32_threshold_fails_on_its_own(change: dict, says: str) -> None:
    found = failures(report(**change), DEFAULTS["fp32"])
    assert len(found) == 1 and found[0].startswith(says)
    assert "FAIL" in format_table(report(**change), DEFAULTS["fp32"])


def test_quantized_defaults_record_logit_diff_and_allow_3_percent() -> None:
    drifted = report(max_logit_diff=0.5, ppl_onnx=10.29, token_agreement=0.96)
    assert failures(drifted, DEFAULTS["int8"]) == []
    assert failures(report(ppl_onnx=10.31), DEFAULTS["int8"])[0].startswith("perplexity delta")
    assert "(recorded)" in format_table(drifted, DEFAULTS["int8"])


def test_overrides_replace_only_what_is_given() -> None:
    limits = DEFAULTS["int8"].with_overrides(max_ppl_delta=0.5, min_answer_match=None)
    assert limits.max_ppl_delta == 0.5 and limits.min_answer_match == 0.90


def test_heldout_reader_spreads_a_limit_over_the_file(tmp_path: Path) -> None:
    every = load_heldout(DEFAULT_DATA)
    assert len(every) > 100 and all(s.question and s.answer for s in every)
    some = load_heldout(DEFAULT_DATA, limit=5)
    assert len(some) == 5 and some[0] == every[0] and some[-1] != every[4]
    csv = tmp_path / "qa.csv"
    csv.write_text("question,answer,split\nq1,a1,train\nq2,a2,heldout\n")
    assert [s.question for s in load_heldout(csv)] == ["q2"]


def zero_weight(name: str):
    """A stand-in for export_onnx that breaks one weight of the graph it builds."""
    real = pipeline.export_onnx

    def broken(checkpoint: Path, workdir: Path, kv_calibration=None) -> Path:
        model_path = real(checkpoint, workdir, kv_calibration)
        model = onnx.load(str(model_path))
        weight = next(t for t in model.graph.initializer if t.name == name)
        weight.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(weight) * 0, name))
        onnx.save(model, str(model_path))
        return model_path

    return broken


@pytest.mark.slow
@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_a_broken_model_is_refused_and_nothing_written(
    precision: str,
    random_checkpoint: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setattr(pipeline, "export_onnx", zero_weight("transformer.ln_f.weight"))
    out = tmp_path / "artifact"
    assert cli.main([str(random_checkpoint), str(out), "--precision", precision, *GATE]) == 1
    captured = capsys.readouterr()
    assert "quality gate failed, nothing written" in captured.err
    assert "FAIL" in captured.out  # the gate's table names the failing checks
    assert list(tmp_path.iterdir()) == []  # no OUT_DIR, no staging dirs


@pytest.mark.slow
def test_a_stricter_threshold_refuses_a_good_export(
    random_checkpoint: Path, tmp_path: Path
) -> None:
    argv = [str(random_checkpoint), str(tmp_path / "a"), *GATE, "--max-logit-diff", "0"]
    assert cli.main(argv) == 1
    assert list(tmp_path.iterdir()) == []


def test_encoding_follows_training_and_cuts_the_context_first() -> None:
    encode = lambda text: [ord(c) for c in text]  # noqa: E731 (one token per character)
    template = PromptTemplate()
    sample = QASample("Why?", "Because.", context="word " * 50)
    enc = encode_sample(encode, template, sample, eos=0, room=80)
    assert enc.target == [*encode(" Because."), 0]
    assert len(enc.prompt) + len(enc.target) <= 80
    assert "".join(map(chr, enc.prompt)).endswith("Question: Why?\nAnswer:")
    assert encode_sample(encode, template, sample, eos=0, room=20) is None  # question too long


@pytest.mark.slow
def test_unique_params_counts_the_tied_table_once(random_checkpoint: Path) -> None:
    from transformers import GPT2LMHeadModel

    model = GPT2LMHeadModel.from_pretrained(random_checkpoint)
    arch = load_checkpoint(random_checkpoint).architecture
    assert unique_params(arch) == sum(p.numel() for p in model.parameters())
