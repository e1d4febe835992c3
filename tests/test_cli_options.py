"""Every command line reads its options the same way (envopts): flags, KVSERVE_* variables,
one boolean vocabulary, one error line, defaults shown in --help from the config dataclasses."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from envopts import env_name
from export import cli as export_cli
from export.config import BenchSettings, ExportOptions
from loadtest import cli as loadtest_cli
from loadtest.config import LoadConfig
from server import cli as server_cli
from server.config import ServeConfig
from server.runner import RunnerConfig
from server.scheduler import SchedulerConfig
from server.validation import Limits
from training import cli as training_cli
from training.config import EvalConfig, TrainConfig

ROOT = Path(__file__).resolve().parents[1]
BOOLEAN_ERROR = "expected true/false, 1/0, yes/no or on/off, got 'maybe'"


@dataclass(frozen=True)
class Cli:
    """One command line and one of its on/off options."""

    prog: str
    flag: str
    argument: str  # how argparse names the option in an error
    parse: Callable[[], bool]  # the option's value, parsed in-process
    module_argv: tuple[str, ...]  # `python -m ...` that gets as far as parsing

    @property
    def env(self) -> str:
        return env_name(self.flag)


CLIS = [
    Cli(
        "kvserve-serve",
        "--auth-exempt-health",
        "--auth-exempt-health",
        lambda: server_cli.parse_args(["--model", "m"]).auth_exempt_health,
        ("server", "--model", "m"),
    ),
    Cli(
        "kvserve-export",
        "--force",
        "--force/--no-force",
        lambda: export_cli.build_parser().parse_args(["ckpt", "out"]).force,
        ("export", "ckpt", "out"),
    ),
    Cli(
        "kvserve-train",
        "--resume",
        "--resume/--no-resume",
        lambda: training_cli.build_parser().parse_args(["--data", "d", "--out", "o"]).resume,
        ("training", "--data", "d", "--out", "o"),
    ),
    Cli(
        "kvserve-loadtest",
        "--ignore-eos",
        "--ignore-eos/--no-ignore-eos",
        lambda: loadtest_cli.parse_args(["--target", "h:1"]).ignore_eos,
        ("loadtest", "--target", "h:1"),
    ),
]
IDS = [cli.prog for cli in CLIS]

VOCABULARY = {
    **dict.fromkeys(["true", "True", "1", "yes", "YES", "on", "On"], True),
    **dict.fromkeys(["false", "FALSE", "0", "no", "No", "off", "OFF"], False),
}


@pytest.mark.parametrize(("text", "expected"), VOCABULARY.items())
def test_every_cli_reads_a_boolean_variable_alike(text, expected, monkeypatch):
    for cli in CLIS:
        monkeypatch.setenv(cli.env, text)
    assert {cli.prog: cli.parse() for cli in CLIS} == dict.fromkeys(IDS, expected)


def test_unset_or_empty_boolean_variables_leave_the_defaults(monkeypatch):
    assert {cli.prog: cli.parse() for cli in CLIS} == dict.fromkeys(IDS, False)
    for cli in CLIS:
        monkeypatch.setenv(cli.env, "")
    assert {cli.prog: cli.parse() for cli in CLIS} == dict.fromkeys(IDS, False)


@pytest.mark.parametrize("cli", CLIS, ids=IDS)
def test_a_bad_boolean_variable_is_the_same_one_line_error(cli, monkeypatch, capsys):
    monkeypatch.setenv(cli.env, "maybe")
    with pytest.raises(SystemExit) as exit_:
        cli.parse()
    assert exit_.value.code == 2
    assert capsys.readouterr().err == (
        f"{cli.prog}: error: argument {cli.argument}: {BOOLEAN_ERROR} (from {cli.env}) "
        "(see --help)\n"
    )


@pytest.mark.parametrize("cli", CLIS, ids=IDS)
def test_the_real_command_says_the_same_without_a_traceback(cli):
    env = {k: v for k, v in os.environ.items() if not k.startswith("KVSERVE_")}
    env[cli.env] = "maybe"
    out = subprocess.run(
        [sys.executable, "-m", *cli.module_argv],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert (out.returncode, out.stdout) == (2, "")
    assert out.stderr == (
        f"{cli.prog}: error: argument {cli.argument}: {BOOLEAN_ERROR} (from {cli.env}) "
        "(see --help)\n"
    )


NUMBERS = [  # prog, an int option, running the command up to its parser
    ("kvserve-serve", "--port", lambda: server_cli.main(["--model", "m"])),
    ("kvserve-export", "--gate-samples", lambda: export_cli.main(["ckpt", "out"])),
    ("kvserve-export bench", "--repeats", lambda: export_cli.main(["bench", "artifact"])),
    ("kvserve-train", "--seed", lambda: training_cli.main(["--data", "d", "--out", "o"])),
    ("kvserve-train eval", "--samples", lambda: training_cli.main(["eval", "c", "--data", "d"])),
    ("kvserve-loadtest", "--concurrency", lambda: loadtest_cli.main(["--target", "h:1"])),
]


@pytest.mark.parametrize(("prog", "flag", "run"), NUMBERS, ids=[n[0] for n in NUMBERS])
def test_a_bad_number_in_a_variable_names_the_variable(prog, flag, run, monkeypatch, capsys):
    monkeypatch.setenv(env_name(flag), "many")
    with pytest.raises(SystemExit) as exit_:
        run()
    assert exit_.value.code == 2
    assert capsys.readouterr().err == (
        f"{prog}: error: argument {flag}: invalid int value: 'many' (from {env_name(flag)}) "
        "(see --help)\n"
    )


def test_a_variable_outside_the_choices_is_refused_like_the_flag(monkeypatch, capsys):
    with pytest.raises(SystemExit):
        server_cli.parse_args(["--model", "m", "--log-format", "xml"])
    flag_error = capsys.readouterr().err
    monkeypatch.setenv("KVSERVE_LOG_FORMAT", "xml")
    with pytest.raises(SystemExit) as exit_:
        server_cli.parse_args(["--model", "m"])
    assert exit_.value.code == 2
    from_env = flag_error.replace(" (see --help)", " (from KVSERVE_LOG_FORMAT) (see --help)")
    assert capsys.readouterr().err == from_env
    assert flag_error.startswith("kvserve-serve: error: argument --log-format: invalid choice")


def test_a_flag_beats_its_variable_and_a_bad_variable_does_not_hide_help(monkeypatch, capsys):
    monkeypatch.setenv("KVSERVE_PORT", "many")
    assert server_cli.parse_args(["--model", "m", "--port", "7"]).port == 7
    with pytest.raises(SystemExit) as exit_:
        server_cli.parse_args(["--help"])
    assert exit_.value.code == 0 and "KVSERVE_PORT" in capsys.readouterr().out


HELP = [  # how to print the help, and lines it must show: each default, from its dataclass
    (
        lambda: server_cli.parse_args(["--help"]),
        [
            f"(default: {ServeConfig.max_queue}; env KVSERVE_MAX_QUEUE)",
            "(default: false; env KVSERVE_AUTH_EXEMPT_HEALTH)",
            "(env KVSERVE_MODEL)",
            "(env KVSERVE_HANDOVER_THRESHOLD)",  # no default of its own: the manifest's
            f"(default: {ServeConfig.handover_text}; env KVSERVE_HANDOVER_TEXT)",
        ],
    ),
    (
        lambda: export_cli.main(["--help"]),
        [
            f"(default: {ExportOptions.precision}; env KVSERVE_PRECISION)",
            "(default: false; env KVSERVE_FORCE)",
        ],
    ),
    (
        lambda: export_cli.main(["bench", "--help"]),
        [
            "(default: {}; env KVSERVE_BATCHES)".format(",".join(map(str, BenchSettings.batches))),
            f"(default: {BenchSettings.repeats}; env KVSERVE_REPEATS)",
        ],
    ),
    (
        lambda: training_cli.main(["--help"]),
        [f"(default: {TrainConfig.preset}; env KVSERVE_PRESET)", "(env KVSERVE_EXACT_MATCH)"],
    ),
    (
        lambda: training_cli.main(["eval", "--help"]),
        [f"(default: {EvalConfig.max_new_tokens}; env KVSERVE_MAX_NEW_TOKENS)"],
    ),
    (
        lambda: loadtest_cli.main(["--help"]),
        [
            f"(default: {LoadConfig.arrival}; env KVSERVE_ARRIVAL)",
            "(default: true; env KVSERVE_PROGRESS)",
        ],
    ),
]


@pytest.mark.parametrize(("show", "says"), HELP)
def test_help_shows_each_default_and_its_variable(show, says, monkeypatch, capsys):
    monkeypatch.setenv("COLUMNS", "300")  # argparse wraps help to the terminal's width
    with pytest.raises(SystemExit) as exit_:
        show()
    out = capsys.readouterr().out
    assert exit_.value.code == 0
    assert [line for line in says if line not in out] == []


def test_serve_config_builds_the_servers_parts_from_its_own_fields():
    config = ServeConfig(
        model=Path("m"),
        provider="cpu",
        threads=2,
        max_batch_size=3,
        max_queue=7,
        max_step_tokens=5,
        itl_target_ms=40,
        default_max_new_tokens=11,
        max_new_tokens_limit=13,
    )
    assert config.scheduler_config() == SchedulerConfig(
        max_batch_size=3, max_queue=7, max_step_tokens=5, itl_target_s=0.04
    )
    assert not config.scheduler_config(chunked_prefill=False).chunked_prefill
    assert config.limits(vocab_size=100) == Limits(
        default_max_new_tokens=11, max_new_tokens=13, vocab_size=100
    )
    assert config.runner_config() == RunnerConfig(provider="cpu", intra_op_threads=2, spin=True)
