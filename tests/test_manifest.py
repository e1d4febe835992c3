"""manifest.json round trip and the clear errors the server relies on."""

from __future__ import annotations

import json
import math

import pytest

from artifact import (
    CONFIDENCE_FILE,
    Architecture,
    Calibration,
    CalibrationError,
    Manifest,
    ManifestError,
    PromptTemplate,
    read_manifest,
    write_manifest,
)


def make_artifact(tmp_path):
    (tmp_path / "model.onnx").write_bytes(b"graph")
    (tmp_path / "tokenizer.json").write_text("{}")
    manifest = Manifest(
        model_name="demo",
        architecture=Architecture(2, 2, 32, 64, 300, 128),
        inputs=["input_ids"],
        outputs=["logits"],
        dtype="float32",
        quantization="none",
        validated_providers=["CPUExecutionProvider"],
        prompt_template=PromptTemplate(question="Q: {question}\nA:"),
        eos_token_id=0,
        pad_token_id=0,
        parity={"max_logit_diff": 1e-6},
    )
    write_manifest(tmp_path, manifest)
    return manifest


def test_round_trip(tmp_path):
    written = make_artifact(tmp_path)
    read = read_manifest(tmp_path)
    assert read == written
    assert set(read.files) == {"model.onnx", "tokenizer.json"}
    assert read.prompt_template.format("Why?") == "Q: Why?\nA:"


def test_prompt_template_uses_context_when_given():
    template = PromptTemplate()
    assert template.format(" hi ") == "Question: hi\nAnswer:"
    assert template.format("hi", "ctx") == "Context: ctx\nQuestion: hi\nAnswer:"


def test_prompt_template_saved_in_checkpoint(tmp_path):
    PromptTemplate(question="<{question}>").save(tmp_path)
    assert PromptTemplate.load(tmp_path).format("x") == "<x>"
    assert PromptTemplate.load(tmp_path / "nowhere") == PromptTemplate()


@pytest.mark.parametrize(
    ("damage", "needle"),
    [
        (lambda d: (d / "model.onnx").write_bytes(b"other"), "model.onnx: sha256 does not match"),
        (lambda d: (d / "tokenizer.json").unlink(), "tokenizer.json: missing"),
        (lambda d: (d / "manifest.json").unlink(), "manifest.json: missing"),
        (lambda d: (d / "manifest.json").write_text("{nope"), "not valid JSON"),
        (
            lambda d: (d / "manifest.json").write_text(
                json.dumps({**json.loads((d / "manifest.json").read_text()), "format_version": "9"})
            ),
            "unknown format_version '9'",
        ),
    ],
)
def test_damaged_artifact_names_file_and_problem(tmp_path, damage, needle):
    make_artifact(tmp_path)
    damage(tmp_path)
    with pytest.raises(ManifestError, match=needle):
        read_manifest(tmp_path)


# --- the answer confidence's calibration (artifact/confidence.py) ---------------------------

CONFIDENCE = {  # confidence.json as training writes it: the five keys plus the fit's record
    "a": 51.8,
    "b": 1.47,
    "threshold": 0.718,
    "n": 94,
    "right_f1": 0.5,
    "met_target": True,
    "validation_coverage": 0.4149,
    "kind": "logistic",
    "feature": "mean_logprob",
    "fitted_on": "validation",
}


def test_manifest_carries_the_calibration_and_its_record(tmp_path):
    manifest = make_artifact(tmp_path)
    manifest.confidence = Calibration.from_dict(CONFIDENCE)
    write_manifest(tmp_path, manifest)
    read = read_manifest(tmp_path)
    assert read == manifest and read.confidence is not None
    assert (read.confidence.a, read.confidence.b, read.confidence.threshold) == (51.8, 1.47, 0.718)
    assert read.confidence.to_dict() == CONFIDENCE  # the documenting keys too
    assert json.loads((tmp_path / "manifest.json").read_text())["confidence"] == CONFIDENCE


def test_a_manifest_from_before_the_calibration_reads_as_none(tmp_path):
    make_artifact(tmp_path)
    path = tmp_path / "manifest.json"
    data = json.loads(path.read_text())
    del data["confidence"]  # written by an exporter that did not know the field
    path.write_text(json.dumps(data))
    assert read_manifest(tmp_path).confidence is None


@pytest.mark.parametrize(
    ("change", "needle"),
    [
        ({"kind": "isotonic"}, "bad confidence: unknown calibration kind 'isotonic'"),
        ({"a": "steep"}, "bad confidence: a must be a finite number"),
        ({"threshold": 1.5}, "bad confidence: threshold must be between 0 and 1"),
        ({"b": None}, "bad confidence: b must be a finite number"),
    ],
)
def test_a_bad_calibration_in_the_manifest_is_one_clear_error(tmp_path, change, needle):
    make_artifact(tmp_path)
    path = tmp_path / "manifest.json"
    data = json.loads(path.read_text())
    path.write_text(json.dumps({**data, "confidence": {**CONFIDENCE, **change}}))
    with pytest.raises(ManifestError, match=needle) as error:
        read_manifest(tmp_path, verify=False)
    assert str(error.value).startswith(str(path)) and "\n" not in str(error.value)


def test_confidence_is_the_platt_curve_on_the_mean_logprob_without_eos():
    cal = Calibration(a=2.0, b=3.0, threshold=0.5)
    # mean of -1 and -2 is -1.5: sigmoid(2 * -1.5 + 3) = 0.5
    assert cal.confidence([-1.0, -2.0]) == pytest.approx(0.5)
    assert cal.confidence([-0.5]) == pytest.approx(1 / (1 + math.exp(-2.0)))
    assert cal.confidence([]) == 0.0  # no tokens, no mean
    assert cal.confidence([-1e6]) == 0.0 and cal.confidence([1e6]) == 1.0  # no overflow
    assert cal.confidence_of_mean(-1.5) == cal.confidence([-1.0, -2.0])


@pytest.mark.parametrize(
    ("data", "needle"),
    [
        ([1, 2], "not a JSON object"),
        ({"a": 1.0, "b": 0.0}, "missing kind, feature, threshold"),
        ({**CONFIDENCE, "feature": "min_logprob"}, "feature 'min_logprob'"),
        ({**CONFIDENCE, "a": True}, "a must be a finite number"),
        ({**CONFIDENCE, "a": float("inf")}, "a must be a finite number"),
        ({**CONFIDENCE, "threshold": -0.1}, "threshold must be between 0 and 1"),
    ],
)
def test_calibration_from_dict_names_the_bad_key(data, needle):
    with pytest.raises(CalibrationError, match=needle):
        Calibration.from_dict(data)


def test_calibration_load_reads_confidence_json_or_none(tmp_path):
    assert Calibration.load(tmp_path) is None
    (tmp_path / CONFIDENCE_FILE).write_text(json.dumps(CONFIDENCE))
    assert Calibration.load(tmp_path).to_dict() == CONFIDENCE
    (tmp_path / CONFIDENCE_FILE).write_text("{not json")
    with pytest.raises(CalibrationError, match=f"{CONFIDENCE_FILE}: unreadable"):
        Calibration.load(tmp_path)
