"""The engine's serve options reach the scheduler and runner settings they name."""

from __future__ import annotations

import pytest

from server.cli import parse_args


def test_ort_threads_spin_unless_told_not_to():
    assert parse_args(["--model", "m"]).ort_spin is True
    assert parse_args(["--model", "m", "--ort-spin", "false"]).ort_spin is False


def test_the_slot_engines_own_budgets_are_gone_for_the_one_step_budget(capsys):
    for gone in ("--max-batch-tokens", "--max-prefill-tokens"):
        with pytest.raises(SystemExit):
            parse_args(["--model", "m", gone, "512"])
        assert "unrecognized arguments" in capsys.readouterr().err
    config = parse_args(["--model", "m", "--max-step-tokens", "256", "--itl-target-ms", "80"])
    assert config.scheduler_config().max_step_tokens == 256
    assert config.scheduler_config().itl_target_s == pytest.approx(0.08)


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["--threads", "-1"], "--threads must be >= 0"),
        (["--kv-cache-memory", "-5"], "--kv-cache-memory: expected a size"),
        (["--kv-cache-memory", "lots"], "expected a size such as 2GiB"),
        (["--kv-block-size", "0"], "--kv-block-size must be >= 1"),
        (["--max-step-tokens", "0"], "--max-step-tokens must be >= 1"),
        (["--itl-target-ms", "-5"], "--itl-target-ms must be >= 0"),
    ],
)
def test_bad_engine_values_are_one_line_naming_the_option(argv, says, capsys):
    with pytest.raises(SystemExit) as exit_:
        parse_args(["--model", "m", *argv])
    err = capsys.readouterr().err.strip().splitlines()
    assert exit_.value.code == 2 and says in err[-1] and "Traceback" not in "".join(err)


def test_paged_cache_options_reach_the_config():
    config = parse_args(["--model", "m", "--kv-cache-memory", "512MiB", "--kv-block-size", "32"])
    assert config.kv_cache_memory == 512 << 20 and config.kv_block_size == 32
    assert config.scheduler_config().max_step_tokens == 512  # the default budget
    assert parse_args(["--model", "m", "--prefix-caching", "off"]).prefix_caching is False


def test_the_prefix_cache_budget_reaches_the_pool_in_blocks():
    from types import SimpleNamespace

    import numpy as np

    from artifact import Architecture
    from server.app import engine_parts
    from server.paged_runner import PagedRunner

    arch = Architecture(
        num_layers=2, num_heads=2, head_dim=8, hidden_size=16, vocab_size=50, max_positions=64
    )
    runner = PagedRunner(SimpleNamespace(provider="cpu"), arch, np.int8, block_size=4)
    block = runner.block_bytes()  # 2 layers x k, v x 2 heads x 4 tokens x 8 dims x 1 byte
    argv = ["--model", "m", "--kv-cache-memory", str(100 * block)]
    assert parse_args(argv).prefix_cache_memory == 64 << 20  # the default
    config = parse_args([*argv, "--prefix-cache-memory", str(10 * block + 1)])
    scheduler, _ = engine_parts(config, runner)
    assert scheduler.cache.blocks.num_blocks == 100 and scheduler.cache.blocks.cache_blocks == 10
    with pytest.raises(SystemExit):
        parse_args([*argv, "--prefix-cache-memory", "-1"])
