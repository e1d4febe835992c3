"""The programs some tests run besides Python, and the Debian package that brings each.

`make test` installs the missing ones first when it can (scripts/test_deps.sh, which asks
`python -m tests.support.tools` what is missing); a test whose program is still missing is
skipped with `missing()`'s reason, and the run ends with a line naming what to install
(`skip_summary`, printed by conftest).
"""

from __future__ import annotations

import shutil
import sys
from dataclasses import dataclass

import pytest

SKIP_PREFIX = "not installed: "


@dataclass(frozen=True)
class Tool:
    name: str
    commands: tuple[str, ...]  # any one will do
    package: str | None  # Debian's; None when Debian has no usable one (see `hint`)
    used_for: str
    hint: str = ""

    def path(self) -> str | None:
        for command in self.commands:
            # /usr/bin too: some shells and CI runners start with a PATH that lacks it
            found = shutil.which(command) or shutil.which(command, path="/usr/bin")
            if found:
                return found
        return None


KUBECTL_HINT = (
    "Debian's kubernetes-client is too old for the overlays; see "
    "https://kubernetes.io/docs/tasks/tools/install-kubectl-linux/"
)
TOOLS = {
    t.name: t
    for t in (
        Tool(
            "chromium",
            ("chromium", "chromium-browser", "google-chrome"),
            "chromium",
            "the HTML report test (headless Chromium on its DevTools pipe: no driver)",
        ),
        Tool(
            "prometheus",
            ("prometheus",),
            "prometheus",
            "the test running every dashboard and alert query on a real Prometheus",
        ),
        Tool(
            "promtool",
            ("promtool",),
            "prometheus",
            "the checks of the shipped Prometheus config, rules and adapter queries",
        ),
        Tool("openssl", ("openssl",), "openssl", "the TLS tests (they make their certificates)"),
        Tool("kubectl", ("kubectl",), None, "the kustomize overlay tests", KUBECTL_HINT),
    )
}


def path(name: str) -> str | None:
    """Where the tool is installed, or None."""
    return TOOLS[name].path()


def missing(*names: str) -> str | None:
    """A skip reason naming the tools (of `names`) that are not installed; None if all are."""
    absent = [TOOLS[n] for n in names if TOOLS[n].path() is None]
    if not absent:
        return None
    sources = [f"Debian package {t.package}" if t.package else t.hint for t in absent]
    return SKIP_PREFIX + ", ".join(t.name for t in absent) + f" ({'; '.join(sources)})"


def requires(*names: str) -> pytest.MarkDecorator:
    """Skip the marked tests unless every tool of `names` is installed."""
    reason = missing(*names)
    return pytest.mark.skipif(reason is not None, reason=reason or "")


def install_hint(tools: list[Tool]) -> str:
    packages = sorted({t.package for t in tools if t.package})
    hints = [f"{t.name}: {t.hint}" for t in tools if not t.package]
    apt = f"sudo apt-get install -y {' '.join(packages)} (`make test` does this as root)"
    command = [apt] if packages else []
    return "; ".join(command + hints)


def absent() -> list[Tool]:
    return [t for t in TOOLS.values() if t.path() is None]


def skip_summary(reasons: list[str]) -> str | None:
    """The run's closing line when tests were skipped for want of a program, else None."""
    wanting = [r for r in reasons if SKIP_PREFIX in r]
    tools = absent()
    if not wanting or not tools:
        return None
    names = ", ".join(t.name for t in tools)
    return f"{len(wanting)} skipped for want of {names}. To run them: {install_hint(tools)}"


def main() -> None:
    """Print the Debian packages of the missing tools on one line (nothing when none is);
    tools Debian cannot provide go to stderr with where to get them."""
    tools = absent()
    for t in tools:
        if not t.package:
            print(f"note: no {t.name}: {t.used_for} will be skipped ({t.hint})", file=sys.stderr)
    print(" ".join(sorted({t.package for t in tools if t.package})))


if __name__ == "__main__":
    main()
