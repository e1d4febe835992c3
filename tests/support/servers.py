"""The real server as a child process for a test: started, handed over, stopped with its
exit code checked (a drain that fails or hangs fails the test that used the server)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from server.process import ServerProcess


@contextmanager
def serving(
    model: Path, log: Path, extra: list[str] | None = None, **start
) -> Iterator[ServerProcess]:
    """`ServerProcess.start(model, log, extra, **start)`; on leaving, SIGTERM, and exit code 0
    asserted with the log's tail (unless the body already failed: its error is the news)."""
    server = ServerProcess.start(model, log, extra, **start)
    try:
        yield server
    except BaseException:
        server.stop()
        raise
    code = server.stop()
    assert code == 0, f"server exited {code}:\n{log.read_text()[-3000:]}"
