"""The engine's serve options reach the scheduler and runner settings they name."""

from __future__ import annotations

from server.config import parse_args


def test_ort_threads_do_not_spin_unless_asked_to():
    assert parse_args(["--model", "m"]).ort_spin is False
    assert parse_args(["--model", "m", "--ort-spin", "true"]).ort_spin is True
