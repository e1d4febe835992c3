"""training/: formatting and masking, data errors, the CLI's exits, and one real tiny run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from artifact import PromptTemplate
from training.cli import build_parser, main
from training.collator import PadCollator
from training.data import DataError, QAExample, load_data, split_examples
from training.formatting import IGNORE_INDEX, encode_example
from training.tokenizer import train_bpe_tokenizer

TEMPLATE = PromptTemplate()


class CharTokenizer:
    """One token per character (id = code point), eos = 0: masks can be checked by hand."""

    eos_token_id = 0

    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
        return [ord(c) for c in text]


def ids(text: str) -> list[int]:
    return [ord(c) for c in text]


def write_lines(path: Path, *lines: str) -> Path:
    path.write_text("".join(line + "\n" for line in lines))
    return path


# --- formatting / masking -------------------------------------------------------------


def test_labels_mask_the_prompt_and_keep_answer_plus_eos() -> None:
    ex = QAExample(question="Why?", answer="Because.")
    enc = encode_example(CharTokenizer(), TEMPLATE, ex, max_length=256)
    prompt, target = ids("Question: Why?\nAnswer:"), ids(" Because.") + [0]
    assert enc.input_ids == prompt + target
    assert enc.labels == [IGNORE_INDEX] * len(prompt) + target
    assert enc.attention_mask == [1] * (len(prompt) + len(target))


def test_context_uses_the_context_template_and_strips_whitespace() -> None:
    ex = QAExample(question=" Q? ", answer=" A ", context=" C ")
    enc = encode_example(CharTokenizer(), TEMPLATE, ex, max_length=256)
    prompt = ids("Context: C\nQuestion: Q?\nAnswer:")
    assert enc.input_ids == prompt + ids(" A") + [0]
    assert enc.labels[: len(prompt)] == [IGNORE_INDEX] * len(prompt)
    assert enc.labels[len(prompt) :] == ids(" A") + [0]


def test_long_target_is_cut_and_too_long_prompt_is_dropped() -> None:
    ex = QAExample(question="Q", answer="a long answer")
    prompt_len = len("Question: Q\nAnswer:")
    enc = encode_example(CharTokenizer(), TEMPLATE, ex, max_length=prompt_len + 3)
    assert enc is not None
    assert enc.input_ids[prompt_len:] == ids(" a ")
    assert enc.labels == [IGNORE_INDEX] * prompt_len + ids(" a ")
    assert encode_example(CharTokenizer(), TEMPLATE, ex, max_length=prompt_len) is None


def test_tokenizer_without_eos_is_an_error() -> None:
    tok = CharTokenizer()
    tok.eos_token_id = None
    with pytest.raises(ValueError, match="eos"):
        encode_example(tok, TEMPLATE, QAExample("q", "a"), max_length=64)


def test_bpe_tokenizer_round_trips_and_labels_decode_to_the_answer() -> None:
    examples = [QAExample(f"What is {n}?", f"It is {n}.") for n in ("one", "two", "three")]
    texts = [TEMPLATE.format(e.question) + " " + e.answer for e in examples]
    tok = train_bpe_tokenizer(texts, vocab_size=300, model_max_length=64)
    assert tok.eos_token == tok.pad_token == "<|endoftext|>"
    assert tok.decode(tok.encode("Unseen: ünïcode ✓", add_special_tokens=False)) == (
        "Unseen: ünïcode ✓"  # byte-level: nothing is unknown
    )
    enc = encode_example(tok, TEMPLATE, examples[1], max_length=64)
    prompt = tok.encode(TEMPLATE.format("What is two?"), add_special_tokens=False)
    assert enc.input_ids[: len(prompt)] == prompt
    answer_ids = [t for t, label in zip(enc.input_ids, enc.labels, strict=True) if label != -100]
    assert answer_ids[-1] == tok.eos_token_id
    assert tok.decode(answer_ids[:-1]) == " It is two."


def test_collator_pads_right_with_pad_id_minus_100_and_zero_mask() -> None:
    rows = [
        {"input_ids": [5, 6, 7], "labels": [-100, 6, 7], "attention_mask": [1, 1, 1]},
        {"input_ids": [8], "labels": [8], "attention_mask": [1]},
    ]
    batch = PadCollator(pad_token_id=0)(rows)
    assert batch["input_ids"].tolist() == [[5, 6, 7], [8, 0, 0]]
    assert batch["labels"].tolist() == [[-100, 6, 7], [8, -100, -100]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]
    assert PadCollator(0, pad_to_multiple_of=4)(rows)["input_ids"].shape == (2, 4)


# --- data loading -----------------------------------------------------------------------


def test_jsonl_loads_with_defaults_and_splits(tmp_path: Path) -> None:
    path = write_lines(
        tmp_path / "qa.jsonl",
        '{"question": "Q1", "answer": "A1", "fact_id": "f1", "split": "train"}',
        "",
        '{"question": "Q2", "answer": 42, "context": "C"}',
        '{"question": "Q3", "answer": "A3", "split": "heldout"}',
    )
    examples = load_data(path).examples
    assert examples[0] == QAExample("Q1", "A1", split="train", fact_id="f1")
    assert examples[1] == QAExample("Q2", "42", context="C", split="train")
    train, heldout = split_examples(examples)
    assert [e.question for e in train] == ["Q1", "Q2"]
    assert [e.question for e in heldout] == ["Q3"]


def test_csv_loads(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "qa.csv", "question,answer,split", "Q1,A1,train", '"Q,2",A2,')
    assert load_data(path).examples == [QAExample("Q1", "A1"), QAExample("Q,2", "A2")]


@pytest.mark.parametrize(
    ("name", "lines", "message"),
    [
        ("empty.jsonl", [], r"empty\.jsonl: no examples"),
        ("blank.jsonl", ["", "  "], r"blank\.jsonl: no examples"),
        ("bad.jsonl", ['{"question": "q", "answer": 1}', "{no"], r"bad\.jsonl:2: not valid"),
        ("list.jsonl", ['["q", "a"]'], r"list\.jsonl:1: expected a JSON object, got an array"),
        (
            "noans.jsonl",
            ['{"question": "q", "answer": "a"}', '{"question": "q"}'],
            r"noans\.jsonl:2: missing 'answer'",
        ),
        ("blankans.jsonl", ['{"question": "q", "answer": "  "}'], r":1: empty 'answer'"),
        ("nested.jsonl", ['{"question": {"x": 1}, "answer": "a"}'], r":1: 'question' must be"),
        ("split.jsonl", ['{"question": "q", "answer": "a", "split": "dev"}'], r":1: split must"),
        ("nocol.csv", ["question,reply", "q,a"], r"nocol\.csv: missing column 'answer'"),
        ("empty.csv", [], r"empty\.csv: no examples"),
    ],
)
def test_bad_data_raises_one_line_error(
    tmp_path: Path, name: str, lines: list[str], message: str
) -> None:
    path = write_lines(tmp_path / name, *lines)
    with pytest.raises(DataError, match=message) as info:
        load_data(path)
    assert "\n" not in str(info.value)


def test_missing_and_non_utf8_files(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no such file"):
        load_data(tmp_path / "nope.jsonl")
    bad = tmp_path / "latin1.jsonl"
    bad.write_bytes('{"question": "caf\xe9", "answer": "a"}\n'.encode("latin-1"))
    with pytest.raises(DataError, match="not UTF-8"):
        load_data(bad)


# --- CLI ----------------------------------------------------------------------------------


def test_cli_bad_data_exits_2_with_one_line(tmp_path: Path, capsys) -> None:
    data = write_lines(tmp_path / "qa.jsonl", '{"question": "q", "answer": "a"}', "{oops")
    assert main(["--data", str(data), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert f"{data}:2: not valid JSON" in err


def test_cli_bad_base_dir_exits_2(tmp_path: Path, capsys) -> None:
    data = write_lines(tmp_path / "qa.jsonl", '{"question": "q", "answer": "a"}')
    code = main(["--data", str(data), "--out", str(tmp_path / "o"), "--base", str(tmp_path)])
    assert code == 2
    assert "not an HF checkpoint dir" in capsys.readouterr().err


def test_cli_options_come_from_env(monkeypatch) -> None:
    monkeypatch.setenv("KVSERVE_DATA", "qa.jsonl")
    monkeypatch.setenv("KVSERVE_OUT", "runs/x")
    monkeypatch.setenv("KVSERVE_PRESET", "quality")
    monkeypatch.setenv("KVSERVE_MAX_STEPS", "7")
    monkeypatch.setenv("KVSERVE_EXACT_MATCH", "0")
    args = build_parser().parse_args([])
    assert (args.data, args.out, args.preset) == ("qa.jsonl", Path("runs/x"), "quality")
    assert args.max_steps == 7 and args.exact_match is False
    assert build_parser().parse_args(["--preset", "test"]).preset == "test"  # flag beats env


def test_cli_usage_errors_exit_2(monkeypatch, capsys) -> None:
    with pytest.raises(SystemExit) as info:
        main(["--data", "x.jsonl"])  # no --out
    assert info.value.code == 2
    monkeypatch.setenv("KVSERVE_EPOCHS", "-1")
    with pytest.raises(SystemExit) as info:
        main(["--data", "x.jsonl", "--out", "o"])
    assert info.value.code == 2
    assert "must be > 0" in capsys.readouterr().err


# --- end to end -------------------------------------------------------------------------


@pytest.mark.slow
def test_test_preset_writes_a_loadable_checkpoint(tmp_path: Path) -> None:
    from tokenizers import Tokenizer
    from transformers import AutoTokenizer, GPT2LMHeadModel

    from tests.support.training import make_test_checkpoint
    from training.evaluate import generate_scored_answers

    ckpt = make_test_checkpoint(tmp_path / "ckpt")
    names = {p.name for p in ckpt.iterdir()}
    expected = {"config.json", "model.safetensors", "tokenizer.json", "kvserve_prompt.json"}
    assert expected | {"kvserve_train.json", "kvserve_train_log.jsonl", "loss_curve.png"} <= names
    assert "kvserve_eval.json" not in names  # the test preset skips answer evaluation
    lines = (ckpt / "kvserve_train_log.jsonl").read_text().splitlines()
    log = [json.loads(line) for line in lines]
    assert [e["step"] for e in log if "loss" in e] == [1, 2, 3]
    evals = {e["step"]: e["eval_loss"] for e in log if "eval_loss" in e}
    assert list(evals) == [2, 3]  # 2 steps per epoch; max_steps ends the second one early
    assert (ckpt / "loss_curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not any(n.startswith("checkpoint") for n in names)

    config = json.loads((ckpt / "config.json").read_text())
    assert config["eos_token_id"] == config["pad_token_id"] == 0
    report = json.loads((ckpt / "kvserve_train.json").read_text())
    assert report["preset"] == "test" and report["steps"] == 3
    assert report["world_size"] == 1 and report["ranks"][0]["rows_fetched"] >= 3 * 4
    assert report["train_examples"] == 8 and report["heldout_examples"] == 2
    assert report["final_train_loss"] > 0 and report["final_eval_loss"] > 0
    assert report["final_eval_loss"] == min(evals.values())  # the best epoch is kept
    assert evals[report["best_step"]] == report["final_eval_loss"]
    assert PromptTemplate.load(ckpt) == PromptTemplate()

    model = GPT2LMHeadModel.from_pretrained(ckpt)
    tok = AutoTokenizer.from_pretrained(ckpt)
    assert tok.eos_token_id == 0 and len(tok) == model.config.vocab_size
    raw = Tokenizer.from_file(str(ckpt / "tokenizer.json"))  # what the server loads
    assert raw.decode(raw.encode("Question: hi").ids) == "Question: hi"

    # Left-padded batched greedy decoding gives what each prompt gives alone.
    examples = [QAExample("Where is my order?", "x"), QAExample("Is there a free trial?", "y")]
    batched = [a.text for a in generate_scored_answers(model, tok, TEMPLATE, examples, 8)]
    alone = [generate_scored_answers(model, tok, TEMPLATE, [e], 8)[0].text for e in examples]
    assert batched == alone


@pytest.mark.slow
def test_cli_trains_and_reloads_from_its_own_checkpoint(tmp_path: Path, capsys) -> None:
    from tests.support.training import make_test_checkpoint, write_sample_data

    first = make_test_checkpoint(tmp_path / "first")
    data = write_sample_data(tmp_path / "qa.jsonl")
    out = tmp_path / "second"
    argv = ["--base", str(first), "--data", str(data), "--out", str(out), "--preset", "test"]
    assert main([*argv, "--max-steps", "2", "--exact-match"]) == 0
    report = json.loads((out / "kvserve_train.json").read_text())
    assert report["base"] == str(first) and report["steps"] == 2
    assert 0.0 <= report["exact_match_train"] <= 1.0
    assert "checkpoint:" in capsys.readouterr().out
