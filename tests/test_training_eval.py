"""`kvserve-train eval`: EM/F1 per split, perplexity, JSON in the checkpoint dir, the table."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from artifact import PromptTemplate
from training import scorecard
from training.cli import main
from training.data import QAExample
from training.evaluate import ScoredAnswer
from training.metrics import f1_score

FIXTURES = Path(__file__).parent / "fixtures" / "training"
ROWS = [
    QAExample("How do I reset it?", "Hold the dial."),
    QAExample("reset", "Hold the dial."),
    QAExample("What is the price?", "It costs 179 dollars."),
    QAExample("How do I restart it?", "Hold the dial.", split="heldout"),
    QAExample("cost", "It costs 179 dollars.", split="heldout"),
]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    from tests.support.training import make_test_checkpoint

    return make_test_checkpoint(tmp_path_factory.mktemp("eval") / "ckpt")


def test_scores_per_split_with_a_scripted_model(monkeypatch) -> None:
    # The "model" answers the seen rows right and the heldout ones half right.
    answers = {
        "How do I reset it?": "Hold the dial.",
        "reset": "hold the DIAL",  # EM after normalisation
        "What is the price?": "It costs 179 dollars.",
        "How do I restart it?": "Hold the button.",
        "cost": "It costs 179 dollars.",
    }
    monkeypatch.setattr(
        scorecard,
        "generate_scored_answers",
        lambda m, t, tpl, rows, *a, **k: [ScoredAnswer(answers[r.question], (-0.5,)) for r in rows],
    )
    monkeypatch.setattr(scorecard, "perplexity", lambda m, t, tpl, rows: float(len(rows)))
    report = scorecard.evaluate_model(None, None, PromptTemplate(), ROWS, samples=1)
    seen, heldout = report.splits["seen"], report.splits["heldout"]
    assert (seen.count, seen.exact_match, seen.f1, seen.perplexity) == (3, 1.0, 1.0, 3.0)
    assert heldout.count == 2 and heldout.exact_match == 0.5
    assert heldout.f1 == pytest.approx((f1_score("Hold the button.", "Hold the dial.") + 1) / 2)
    assert [p.split for p in report.samples] == ["seen", "heldout"]
    assert len(report.predictions) == 5
    table = scorecard.format_table(report)
    assert "seen" in table and "heldout" in table and "50.0%" in table and "expected:" in table


def test_eval_cli_writes_json_and_prints_a_table(checkpoint: Path, capsys) -> None:
    data = FIXTURES / "qa.jsonl"
    assert main(["eval", str(checkpoint), "--data", str(data), "--max-new-tokens", "8"]) == 0
    out = capsys.readouterr().out
    assert "exact match" in out and "token F1" in out and "perplexity" in out
    assert "Q (seen):" in out and "Q (heldout):" in out and "expected:" in out
    report = json.loads((checkpoint / scorecard.EVAL_FILE).read_text())
    assert report["splits"]["seen"]["count"] == 5 and report["splits"]["heldout"]["count"] == 2
    assert report["splits"]["heldout"]["perplexity"] > 1.0
    predictions = (checkpoint / scorecard.PREDICTIONS_FILE).read_text().splitlines()
    assert len(predictions) == 7
    for line in map(json.loads, predictions):
        assert line["f1"] == pytest.approx(
            f1_score(line["prediction"], line["reference"]), abs=1e-4
        )


def test_eval_cli_extra_heldout_file(checkpoint: Path, capsys) -> None:
    argv = ["eval", str(checkpoint), "--data", str(FIXTURES / "qa.csv")]
    assert (
        main([*argv, "--eval-data", str(FIXTURES / "squad_v2.json"), "--max-new-tokens", "4"]) == 0
    )
    report = json.loads((checkpoint / scorecard.EVAL_FILE).read_text())
    assert report["splits"]["seen"]["count"] == 2
    assert report["splits"]["heldout"]["count"] == 1 + 3  # qa.csv's heldout row + SQuAD's


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda tmp: tmp / "missing", "missing: not a directory"),
        (lambda tmp: tmp, "not an HF checkpoint dir"),
    ],
)
def test_eval_cli_bad_checkpoint_exits_2(tmp_path: Path, capsys, make, message: str) -> None:
    code = main(["eval", str(make(tmp_path)), "--data", str(FIXTURES / "qa.jsonl")])
    assert code == 2
    err = capsys.readouterr().err
    assert err.startswith("kvserve-train eval: error: ") and err.count("\n") == 1
    assert message in err


def test_eval_cli_bad_data_exits_2(checkpoint: Path, tmp_path: Path, capsys) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"question": "q"}\n')
    assert main(["eval", str(checkpoint), "--data", str(bad)]) == 2
    assert "bad.jsonl:1: missing 'answer'" in capsys.readouterr().err


def test_train_is_the_default_command_and_can_be_named(monkeypatch) -> None:
    from training import cli

    seen = []
    monkeypatch.setattr(cli, "train_main", lambda argv: seen.append(argv) or 0)
    assert cli.main(["--data", "x"]) == 0 and cli.main(["train", "--data", "x"]) == 0
    assert seen == [["--data", "x"], ["--data", "x"]]
