"""The engine's serve options reach the scheduler and runner settings they name."""

from __future__ import annotations

import pytest

from server.cli import parse_args


def test_ort_threads_spin_unless_told_not_to():
    assert parse_args(["--model", "m"]).ort_spin is True
    assert parse_args(["--model", "m", "--ort-spin", "false"]).ort_spin is False


def test_prefill_budget_is_off_by_default_and_never_negative():
    assert parse_args(["--model", "m"]).max_prefill_tokens == 0
    assert parse_args(["--model", "m", "--max-prefill-tokens", "512"]).max_prefill_tokens == 512
    with pytest.raises(SystemExit):
        parse_args(["--model", "m", "--max-prefill-tokens", "-1"])
