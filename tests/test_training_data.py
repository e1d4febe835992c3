"""training/ data in: SQuAD v1.1/v2.0 JSON, dataset dirs / hub ids, and their one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from training.cli import main
from training.data import UNANSWERABLE, DataError, QAExample, load_data
from training.hub import looks_like_hub_id, split_map

FIXTURES = Path(__file__).parent / "fixtures" / "training"


def write_json(path: Path, doc: object) -> Path:
    path.write_text(json.dumps(doc))
    return path


def squad_doc(*qas: dict, context: str = "C") -> dict:
    return {"version": "v2.0", "data": [{"paragraphs": [{"context": context, "qas": list(qas)}]}]}


# --- SQuAD JSON ------------------------------------------------------------------------


def test_squad_v1_takes_context_and_first_answer() -> None:
    data = load_data(FIXTURES / "squad_v1.json")
    assert [e.answer for e in data.examples] == ["Vellmont Labs", "179 US dollars", "two-year"]
    first = data.examples[0]
    assert first.question == "Who makes the Lumo Hearth?"
    assert first.context.startswith("The Lumo Hearth is a smart thermostat")
    assert (first.split, first.fact_id) == ("train", "q1")
    assert not data.skipped


def test_squad_v2_skips_unanswerable_with_a_count() -> None:
    data = load_data(FIXTURES / "squad_v2.json")
    assert [e.answer for e in data.examples] == ["Vellmont Labs", "Duluth, Minnesota", "amber"]
    assert data.skipped == {UNANSWERABLE: 2}


def test_squad_rows_take_the_callers_default_split() -> None:
    examples = load_data(FIXTURES / "squad_v1.json", default_split="heldout").examples
    assert {e.split for e in examples} == {"heldout"}


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ([], r"not SQuAD JSON \(expected an object with a 'data' list\)"),
        ({"version": "1.1"}, r"not SQuAD JSON"),
        ({"data": [{"title": "t"}]}, r"data\[0\]: missing 'paragraphs' list"),
        ({"data": [{"paragraphs": ["x"]}]}, r"data\[0\]\.paragraphs\[0\]: expected an object"),
        (squad_doc({"question": "q"}), r"paragraphs\[0\]\.qas\[0\]: missing 'answers' list"),
        (squad_doc({"question": "q", "answers": ["a"]}), r"qas\[0\]\.answers\[0\]: expected"),
        (squad_doc({"answers": [{"text": "a"}]}), r"qas\[0\]: missing 'question'"),
        (squad_doc({"question": "q", "answers": []}), r"no examples \(every row was skipped\)"),
    ],
)
def test_bad_squad_is_a_one_line_error(tmp_path: Path, doc: object, message: str) -> None:
    path = write_json(tmp_path / "squad.json", doc)
    with pytest.raises(DataError, match=message) as info:
        load_data(path)
    assert str(info.value).startswith(str(path)) and "\n" not in str(info.value)


def test_squad_syntax_error_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "broken.json"
    path.write_text('{"data": [\n  {"paragraphs": [}\n]}')
    with pytest.raises(DataError, match=r"broken\.json:2: not valid JSON"):
        load_data(path)


# --- datasets.load_dataset: a local dataset dir, or a hub id -----------------------------


def test_dataset_dir_maps_splits_and_skips_unanswerable() -> None:
    data = load_data(FIXTURES / "hub_dataset")
    assert [(e.question, e.answer, e.split) for e in data.examples] == [
        ("Who makes the Lumo Hearth?", "Vellmont Labs", "train"),
        ("How much is it?", "179 US dollars", "train"),
        ("Which company builds it?", "Vellmont Labs", "heldout"),
    ]
    assert data.examples[0].context == "The Lumo Hearth is made by Vellmont Labs."
    assert data.skipped == {UNANSWERABLE: 1}


def test_hub_id_goes_to_load_dataset(monkeypatch) -> None:
    import datasets

    calls = []

    def fake_load_dataset(source: str):
        calls.append(source)
        rows = {"question": ["Q1", "Q2"], "answer": ["A1", "A2"]}
        return datasets.DatasetDict(
            train=datasets.Dataset.from_dict(rows),
            test=datasets.Dataset.from_dict({"question": ["Q3"], "answer": ["A3"]}),
        )

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    examples = load_data("someone/support-qa").examples
    assert calls == ["someone/support-qa"]
    assert examples == [
        QAExample("Q1", "A1"),
        QAExample("Q2", "A2"),
        QAExample("Q3", "A3", split="heldout"),
    ]


def test_hub_errors_are_one_line(monkeypatch, tmp_path: Path, capsys) -> None:
    import datasets

    def offline(source: str):
        raise ConnectionError(
            f"Couldn't reach '{source}' on the Hub (LocalEntryNotFoundError)\n..."
        )

    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(DataError, match=r"^nobody/nothing: cannot load dataset \(Couldn't reach"):
        load_data("nobody/nothing")
    assert main(["--data", "nobody/nothing", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err == (
        "kvserve-train: error: nobody/nothing: cannot load dataset "
        "(Couldn't reach 'nobody/nothing' on the Hub (LocalEntryNotFoundError))\n"
    )

    def wrong_columns(source: str):
        return datasets.DatasetDict(train=datasets.Dataset.from_dict({"text": ["x"]}))

    monkeypatch.setattr(datasets, "load_dataset", wrong_columns)
    with pytest.raises(DataError, match=r"x/y\[train\]: needs 'question' and 'answer\(s\)'"):
        load_data("x/y")


def test_hub_ids_and_split_names() -> None:
    assert looks_like_hub_id("squad") and looks_like_hub_id("rajpurkar/squad_v2")
    assert not looks_like_hub_id("missing.jsonl") and not looks_like_hub_id("/abs/path")
    assert not looks_like_hub_id("a/b/c.csv")
    assert split_map(["train", "validation", "test"]) == {"train": "train", "validation": "heldout"}
    assert split_map(["train", "test"]) == {"train": "train", "test": "heldout"}
    assert split_map(["train", "validation"], default_split="heldout") == {"validation": "heldout"}
    assert split_map(["all"]) == {"all": "train"}


def test_missing_file_that_looks_like_a_file_is_not_a_hub_id(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"qa\.jsonl: no such file"):
        load_data("qa.jsonl")


# --- every bad-input case through the CLI: message and exit status -----------------------


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("empty.jsonl", "", "empty.jsonl: no examples (the file is empty)"),
        ("bad.jsonl", '{"question": "q", "answer": "a"}\n{oops\n', "bad.jsonl:2: not valid JSON"),
        ("col.csv", "question,reply\nq,a\n", "col.csv: missing column 'answer'"),
        (
            "row.jsonl",
            '{"question": "q", "answer": "a"}\n{"question": "q"}\n',
            "row.jsonl:2: missing 'answer'",
        ),
        (
            "held.jsonl",
            '{"question": "q", "answer": "a", "split": "heldout"}\n',
            "held.jsonl: no rows with split 'train'",
        ),
        ("sq.json", '{"data": 1}', "sq.json: not SQuAD JSON"),
        (
            "v2.json",
            json.dumps(squad_doc({"question": "q", "answers": [], "is_impossible": True})),
            "v2.json: no examples (every row was skipped)",
        ),
    ],
)
def test_cli_bad_input_exits_2_with_one_line(
    tmp_path: Path, capsys, name: str, content: str, message: str
) -> None:
    path = tmp_path / name
    path.write_text(content)
    assert main(["--data", str(path), "--out", str(tmp_path / "out"), "--preset", "test"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("kvserve-train: error: ") and err.count("\n") == 1
    assert message in err


def test_cli_missing_data_file_exits_2(tmp_path: Path, capsys) -> None:
    assert main(["--data", str(tmp_path / "nope.csv"), "--out", str(tmp_path / "o")]) == 2
    assert "nope.csv: no such file" in capsys.readouterr().err
