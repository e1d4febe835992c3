"""The container recipes (Dockerfile, Dockerfile.cuda): not built here, but every file they
COPY exists, gets through .dockerignore, and only the serving install is made."""

from __future__ import annotations

import fnmatch
import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILES = ("Dockerfile", "Dockerfile.cuda")


def instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) per instruction: continuations joined, comments dropped."""
    lines = [ln for ln in path.read_text().splitlines() if not ln.lstrip().startswith("#")]
    text = re.sub(r"\\\n", " ", "\n".join(lines))
    out = []
    for line in text.splitlines():
        if line.strip():
            word, _, rest = line.strip().partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def copy_sources(path: Path) -> list[str]:
    """Sources of every COPY/ADD from the build context (not `--from=` another stage)."""
    sources = []
    for word, rest in instructions(path):
        if word not in ("COPY", "ADD"):
            continue
        args = json.loads(rest) if rest.startswith("[") else rest.split()
        flags = [a for a in args if a.startswith("--")]
        if any(f.startswith("--from=") for f in flags):
            continue
        *srcs, _dest = [a for a in args if not a.startswith("--")]
        sources += srcs
    return sources


def dockerignore_allows(source: str) -> bool:
    """.dockerignore is an allow-list (`*` then `!path`): the source, or a folder above it,
    must be let through."""
    rules = [ln.strip() for ln in (ROOT / ".dockerignore").read_text().splitlines()]
    allowed = [r[1:].rstrip("/") for r in rules if r.startswith("!")]
    parts = Path(source.rstrip("/")).parts
    return any(
        fnmatch.fnmatch(str(Path(*parts[:i])), pattern)
        for pattern in allowed
        for i in range(1, len(parts) + 1)
    )


@pytest.mark.parametrize("name", DOCKERFILES)
def test_every_copied_file_exists_and_is_in_the_context(name):
    sources = copy_sources(ROOT / name)
    assert sources, f"{name}: no COPY found (the parser is wrong)"
    for source in sources:
        assert not Path(source).is_absolute() and ".." not in Path(source).parts
        assert (ROOT / source).exists(), f"{name}: COPY {source}: no such file in the repo"
        assert dockerignore_allows(source), f"{name}: COPY {source}: excluded by .dockerignore"


@pytest.mark.parametrize("name", DOCKERFILES)
def test_installs_the_serving_dependencies_only(name):
    runs = " ".join(rest for word, rest in instructions(ROOT / name) if word == "RUN")
    assert re.search(r"pip install [^&;]*\.(\s|$)", runs), "installs the project itself"
    assert "[train" not in runs and "[dev" not in runs
    for heavy in ("torch", "transformers", "optimum"):
        assert heavy not in runs
    # the copied packages are exactly what pyproject's serving entry point needs
    copied = {s.rstrip("/") for s in copy_sources(ROOT / name)}
    assert {"server", "proto", "artifact", "envopts", "loadtest", "pyproject.toml"} <= copied
    assert "training" not in copied


@pytest.mark.parametrize("name", DOCKERFILES)
def test_every_package_the_server_imports_is_copied_and_built(name):
    first_party = {p.parent.name for p in ROOT.glob("*/__init__.py")}
    imported = set()
    for path in (ROOT / "server").glob("*.py"):
        for match in re.finditer(r"^\s*(?:from|import) (\w+)", path.read_text(), re.M):
            imported.add(match.group(1))
    copied = {s.rstrip("/") for s in copy_sources(ROOT / name)}
    assert imported & first_party <= copied, "the image would miss a package server/ imports"
    # the C++ kernels build inside `pip install`: setup.py and a compiler in the build stage
    runs = " ".join(rest for word, rest in instructions(ROOT / name) if word == "RUN")
    assert "kernels" in copied and "setup.py" in copied and "g++" in runs


@pytest.mark.parametrize("name", DOCKERFILES)
def test_server_is_the_entrypoint_in_exec_form(name):
    entry = [rest for word, rest in instructions(ROOT / name) if word == "ENTRYPOINT"]
    # exec form: kvserve-serve is PID 1 and receives SIGTERM itself (graceful drain)
    assert [json.loads(e) for e in entry] == [["kvserve-serve"]]


def test_the_copy_parser_reads_flags_stages_and_json_form(tmp_path):
    path = tmp_path / "Dockerfile"
    path.write_text(
        "FROM x AS a\n# COPY ignored/ here\nCOPY --chown=1:1 a.txt \\\n  b/ /dst/\n"
        'COPY ["c d.txt", "/dst/"]\nCOPY --from=a /opt /opt\nADD e.tar /\n'
    )
    assert copy_sources(path) == ["a.txt", "b/", "c d.txt", "e.tar"]
