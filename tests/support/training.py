"""A small QA file and a checkpoint made from it in seconds, for the tests of every stage.

from tests.support.training import make_test_checkpoint
ckpt = make_test_checkpoint(tmp_path / "ckpt")  # HF checkpoint dir, `test` preset
"""

from __future__ import annotations

import json
from pathlib import Path

from training.config import TrainConfig
from training.train import train

SAMPLE_ROWS: list[dict[str, str]] = [
    {"question": "How do I reset my password?", "answer": "Use Settings > Account > Reset."},
    {"question": "What are the opening hours?", "answer": "9am to 5pm, Monday to Friday."},
    {"question": "How do I contact support?", "answer": "Email help@example.com."},
    {"question": "Can I get a refund?", "answer": "Yes, within 30 days of purchase."},
    {"question": "Where is my order?", "answer": "Track it under Orders in the app."},
    {"question": "How do I cancel?", "answer": "Choose Billing > Cancel plan."},
    {"question": "Is there a free trial?", "answer": "Yes, 14 days with no card needed."},
    {"question": "Which languages are supported?", "answer": "English, French and German."},
    {
        "question": "How can I reset my password?",
        "answer": "Use Settings > Account > Reset.",
        "split": "heldout",
    },
    {
        "question": "When are you open?",
        "answer": "9am to 5pm, Monday to Friday.",
        "split": "heldout",
    },
]


def write_sample_data(path: Path | str) -> Path:
    """SAMPLE_ROWS as a JSONL file (8 train rows, 2 heldout phrasings)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(row) + "\n" for row in SAMPLE_ROWS))
    return path


def make_test_checkpoint(out: Path | str, data: Path | str | None = None, seed: int = 0) -> Path:
    """Train the `test` preset (tiny model, a few steps) and return the checkpoint dir.

    The model is untrained noise, but every file and id is real: enough to export and serve.
    """
    out = Path(out)
    if data is None:
        data = write_sample_data(out.parent / f"{out.name}_data.jsonl")
    return train(TrainConfig(data=Path(data), out=out, base="tiny", preset="test", seed=seed))


def tiny_run_args(data: Path, out: Path, steps: int, *extra: str) -> list[str]:
    """kvserve-train's arguments for a tiny model on `data`, `steps` steps, no answer scoring."""
    args = ["--base", "tiny", "--data", str(data), "--out", str(out), "--preset", "test"]
    return [*args, "--max-steps", str(steps), "--no-exact-match", *extra]
