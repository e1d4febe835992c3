"""manifest.json round trip and the clear errors the server relies on."""

from __future__ import annotations

import json

import pytest

from artifact import (
    Architecture,
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
