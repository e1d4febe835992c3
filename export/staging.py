"""Assemble the model artifact dir so it appears complete or not at all.

Everything is written into a hidden staging dir beside OUT_DIR (same filesystem, so the final
`rename` is atomic); a failed or interrupted export removes the staging dir and leaves no
OUT_DIR behind.
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

from export import ExportError


@dataclass
class Staging:
    """`with Staging(out) as stage:` ... `stage.publish()`; without publish nothing stays."""

    out: Path
    force: bool = False
    path: Path = field(init=False)
    scratch: Path = field(init=False)  # intermediate files (optimum's output, fp32 before int8)
    published: bool = field(default=False, init=False)

    def __enter__(self) -> Staging:
        self.out = Path(self.out).resolve()
        check_out_dir(self.out, self.force)
        self.out.parent.mkdir(parents=True, exist_ok=True)
        self.path = Path(tempfile.mkdtemp(prefix=f".{self.out.name}.tmp-", dir=self.out.parent))
        self.scratch = Path(tempfile.mkdtemp(prefix=f".{self.out.name}.work-", dir=self.out.parent))
        return self

    def publish(self) -> Path:
        """Move the staged dir to OUT_DIR (replacing an old one only with force)."""
        old = None
        if self.out.exists():
            old = self.out.with_name(f".{self.out.name}.old-{self.path.name[-8:]}")
            self.out.rename(old)
        self.path.chmod(0o755)  # mkdtemp makes it 0700; a server may run as another user
        self.path.rename(self.out)
        self.published = True
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
        return self.out

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        shutil.rmtree(self.scratch, ignore_errors=True)
        if not self.published:
            shutil.rmtree(self.path, ignore_errors=True)


def check_out_dir(out: Path, force: bool) -> None:
    """Refuse to overwrite an existing non-empty OUT_DIR unless forced (checked up front)."""
    if out.exists() and not out.is_dir():
        raise ExportError(f"{out}: exists and is not a directory")
    if out.is_dir() and any(out.iterdir()) and not force:
        raise ExportError(f"{out}: already exists and is not empty (use --force to replace it)")


def move_into(files: list[Path], directory: Path) -> None:
    for path in files:
        shutil.move(str(path), directory / path.name)


def file_sizes(directory: Path) -> dict[str, int]:
    return {p.name: p.stat().st_size for p in sorted(directory.iterdir()) if p.is_file()}
