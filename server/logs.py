"""Structured logs: text or JSON lines, with the request's id on every line about a request.

The service opens a RequestLog per RPC and fills it as the request goes (id, tokens,
timings); a logging filter copies its request_id onto every record logged meanwhile, and
the RPC's end writes one access line (logger `kvserve.access`). The RequestLog lives in a
context variable: grpc.aio runs each RPC in its own asyncio task, which has its own copy
of the context, so a request's fields never leak into another request's lines.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import TextIO

from server.request import StreamEvent

FORMATS = ("text", "json")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
ACCESS = logging.getLogger("kvserve.access")

# LogRecord's own attributes; anything else on a record came from `extra=` and is a field.
_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName"}


@dataclass
class RequestLog:
    """One RPC's access-log fields, filled in as the request goes."""

    rpc: str
    request_id: str = ""
    prompt_tokens: int = 0
    generated_tokens: int = 0
    finish_reason: str = ""
    queue_s: float | None = None
    ttft_s: float | None = None
    http_status: int | None = None  # HTTP door only: the status sent (499: the client left)
    started: float = field(default_factory=time.monotonic)


_current: ContextVar[RequestLog | None] = ContextVar("kvserve_request_log", default=None)


def begin(rpc: str) -> RequestLog:
    """Open the calling RPC's record (never reset: the RPC's task and its context end with it)."""
    record = RequestLog(rpc)
    _current.set(record)
    return record


def current() -> RequestLog | None:
    return _current.get()


def annotate(**fields) -> None:
    """Set fields of the current RPC's record (a no-op outside an RPC)."""
    record = _current.get()
    if record is not None:
        for name, value in fields.items():
            setattr(record, name, value)


def on_event(event: StreamEvent) -> None:
    """Count a relayed engine event; the last one carries the authoritative totals."""
    record = _current.get()
    if record is None:
        return
    record.generated_tokens += len(event.token_ids)
    if record.ttft_s is None and event.token_ids:
        record.ttft_s = time.monotonic() - record.started  # replaced by the engine's own below
    if event.finish_reason is not None:
        record.finish_reason = event.finish_reason.value
        record.prompt_tokens = event.prompt_tokens
        record.generated_tokens = event.completion_tokens
        if event.timing is not None:
            record.queue_s = event.timing.queue_seconds
            record.ttft_s = event.timing.time_to_first_token_seconds


def access(record: RequestLog, code: str, total_s: float, detail: str = "") -> None:
    """The one access line of an RPC: status, tokens and timings, as text and as fields."""
    ttft = "-" if record.ttft_s is None else f"{record.ttft_s:.4f}s"
    http = "" if record.http_status is None else f" http_status={record.http_status}"
    ACCESS.info(
        "%s %s prompt_tokens=%d generated_tokens=%d ttft=%s total=%.4fs%s",
        record.rpc,
        code,
        record.prompt_tokens,
        record.generated_tokens,
        ttft,
        total_s,
        http,
        extra={
            "rpc": record.rpc,
            "code": code,
            "http_status": record.http_status,
            "prompt_tokens": record.prompt_tokens,
            "generated_tokens": record.generated_tokens,
            "finish_reason": record.finish_reason or None,
            "queue_s": _rounded(record.queue_s),
            "ttft_s": _rounded(record.ttft_s),
            "total_s": _rounded(total_s),
            "detail": detail or None,  # why a request failed
        },
    )


def _rounded(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds, 6)


class RequestIdFilter(logging.Filter):
    """Stamps the current RPC's request_id on every record (an explicit extra= wins)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not getattr(record, "request_id", ""):
            current_record = _current.get()
            record.request_id = current_record.request_id if current_record else ""
        return True


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__(TEXT_FORMAT)

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        request_id = getattr(record, "request_id", "")
        return f"{line} request_id={request_id}" if request_id else line


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, msg, then the record's extra fields."""

    def format(self, record: logging.LogRecord) -> str:
        line = {
            "ts": datetime.fromtimestamp(record.created, timezone.utc).isoformat(
                timespec="milliseconds"
            ),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for name, value in vars(record).items():
            if name not in _STANDARD and not name.startswith("_") and value not in ("", None):
                line[name] = value
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str)


def setup(level: str = "INFO", fmt: str = "text", stream: TextIO | None = None) -> logging.Handler:
    """Configure the root logger once, at startup: one handler, `fmt` lines to stderr."""
    if fmt not in FORMATS:
        raise ValueError(f"log format must be one of {FORMATS}, got {fmt!r}")
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    handler.addFilter(RequestIdFilter())
    logging.basicConfig(level=level, handlers=[handler], force=True)
    return handler
