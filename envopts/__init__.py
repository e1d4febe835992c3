"""Command-line options that also come from KVSERVE_<OPTION> environment variables.

Every kvserve command line builds its parser with these, so they all behave alike:

    p = Parser("kvserve-serve", DESCRIPTION)
    option(p, "--max-queue", 256, "waiting requests beyond this are refused", type=int)
    switch(p, "--force", False, "replace OUT_DIR if it exists")      # --force / --no-force

- A flag's default is its variable (`--max-queue` -> KVSERVE_MAX_QUEUE) when that is set and
  not empty; a flag on the command line beats it.
- argparse parses a string default with the option's `type`, as it parses a flag's value;
  `option` also checks `choices` there (argparse checks them for flags only) and adds the
  variable's name to the error: `prog: error: argument --port: invalid int value: 'x'
  (from KVSERVE_PORT) (see --help)`.
- One boolean vocabulary everywhere (`boolean`): true/false, 1/0, yes/no, on/off, any case.
- Errors are one line on stderr, exit status 2; `--help` shows each default and variable.

Standard library only, so every stage (and the slim serving image) can import it; argparse
does the work, this adds only the environment and the error line.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable, Iterable, Sequence
from typing import Any, NoReturn

PREFIX = "KVSERVE_"
TRUE = ("true", "1", "yes", "on")
FALSE = ("false", "0", "no", "off")

__all__ = [
    "Parser",
    "boolean",
    "env_name",
    "environ",
    "from_env",
    "option",
    "positive",
    "switch",
]


def env_name(flag: str) -> str:
    """--max-queue -> KVSERVE_MAX_QUEUE."""
    return PREFIX + flag.lstrip("-").replace("-", "_").upper()


def environ(flag: str) -> str | None:
    """The text of the flag's variable; None when it is unset or empty."""
    return os.environ.get(env_name(flag)) or None


def from_env(flag: str, type: Callable[[str], Any] = str) -> Any:
    """The flag's variable parsed with `type`, None when unset or empty: for options a caller
    resolves itself (say, one of several flags where a flag beats every variable). A bad value
    raises argparse.ArgumentTypeError worded as `option` words it."""
    text = environ(flag)
    return None if text is None else _checked(type, None, env_name(flag))(_EnvText(text))


def boolean(text: str) -> bool:
    """An argparse `type`: the one boolean vocabulary of every kvserve option."""
    value = text.strip().lower()
    if value in TRUE:
        return True
    if value in FALSE:
        return False
    raise argparse.ArgumentTypeError(f"expected true/false, 1/0, yes/no or on/off, got {text!r}")


def positive(kind: Callable[[str], Any]) -> Callable[[str], Any]:
    """An argparse `type`: a number of `kind` (int, float) that must be > 0."""

    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
        if not value > 0:  # `not >` also catches NaN
            raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
        return value

    parse.__name__ = getattr(kind, "__name__", "number")
    return parse


class Parser(argparse.ArgumentParser):
    """argparse, but a bad input is one line, `prog: error: message (see --help)`, exit 2
    (not usage + error), and --help keeps the description's and epilog's line breaks."""

    def __init__(self, prog: str, description: str, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", argparse.RawDescriptionHelpFormatter)
        super().__init__(prog=prog, description=description, **kwargs)

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def option(
    parser: argparse.ArgumentParser | argparse._ArgumentGroup,
    flag: str,
    default: Any,
    help: str,
    *,
    aliases: Iterable[str] = (),
    type: Callable[[str], Any] = str,
    choices: Sequence[Any] | None = None,
    required: bool = False,
    **kwargs: Any,
) -> argparse.Action:
    """A flag taking a value, whose default is KVSERVE_<FLAG> when set; `required` only
    while the variable is unset. Other keywords go to `add_argument` as they are."""
    env = env_name(flag)
    text = environ(flag)
    if text is not None:
        type = _checked(type, choices, env)
    return parser.add_argument(
        flag,
        *aliases,
        default=default if text is None else _EnvText(text),
        type=type,
        choices=choices,
        required=required and text is None,
        help=_help(help, default, env),
        **kwargs,
    )


def switch(
    parser: argparse.ArgumentParser | argparse._ArgumentGroup,
    flag: str,
    default: bool | None,
    help: str,
) -> argparse.Action:
    """--flag / --no-flag (argparse's BooleanOptionalAction), default from KVSERVE_<FLAG> in
    the boolean vocabulary. A None default lets the caller tell "not said" from off."""
    env = env_name(flag)
    text = environ(flag)
    return parser.add_argument(
        flag,
        action=_Switch,
        env=env,
        default=default if text is None else _EnvText(text),
        help=_help(help, default, env),
    )


class _EnvText(str):
    """A default read from the environment: its converter names the variable on failure.
    (Values from the command line are plain str.)"""


class _Switch(argparse.BooleanOptionalAction):
    """A BooleanOptionalAction whose string default (the environment's) argparse parses with
    `boolean`: set as an attribute, since newer argparse deprecates `type=` for this action."""

    def __init__(self, option_strings: list[str], dest: str, env: str, **kwargs: Any) -> None:
        super().__init__(option_strings, dest, **kwargs)
        self.type = _checked(boolean, None, env)


def _checked(
    kind: Callable[[str], Any], choices: Sequence[Any] | None, env: str
) -> Callable[[str], Any]:
    """`kind`, which for the environment's text also checks `choices` and names `env` in the
    error; a command-line value goes to `kind` alone (argparse reports it as usual)."""

    def convert(text: str) -> Any:
        if not isinstance(text, _EnvText):
            return kind(text)
        try:
            value = kind(text)
        except argparse.ArgumentTypeError as e:
            reason = str(e)
        except (TypeError, ValueError):
            reason = f"invalid {convert.__name__} value: {str(text)!r}"
        else:
            if choices is None or value in choices:
                return value
            reason = f"invalid choice: {value!r} (choose from {', '.join(map(repr, choices))})"
        raise argparse.ArgumentTypeError(f"{reason} (from {env})")

    convert.__name__ = getattr(kind, "__name__", "value")  # argparse's "invalid int value"
    return convert


def _help(text: str, default: Any, env: str) -> str:
    if default is None:
        return f"{text} (env {env})"
    return f"{text} (default: {_shown(default)}; env {env})"


def _shown(default: Any) -> str:
    if isinstance(default, bool):
        return "true" if default else "false"
    if isinstance(default, tuple | list):
        default = ",".join(str(v) for v in default)  # as a list is written in the environment
    return str(default).replace("%", "%%")  # argparse %-formats help
