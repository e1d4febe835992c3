"""The HTML report opens in headless Chromium, offline, without console errors, and shows its
charts: every chart has a size and drawn series, and a screenshot of one has the series'
colours in it.

Chromium is driven over the DevTools protocol on a pipe (--remote-debugging-pipe: JSON
messages, NUL-terminated, on fds 3 and 4), so no websocket library is needed. Skipped only
when no Chromium is installed (`make test` installs Debian's `chromium` as root).
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import select
import subprocess
import time
import zlib
from pathlib import Path

import numpy as np
import pytest

from loadtest.cli import main
from tests.support import tools
from tests.support.fake_server import FakeServer

CHROMIUM = tools.path("chromium")
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
    "--remote-debugging-pipe",
    "--window-size=1300,2400",
)
E2E_DARK = (0x08, 0x51, 0x9C)  # html_report's e2e p99 line

pytestmark = tools.requires("chromium")


class DevTools:
    """A headless Chromium and one page, spoken to over the DevTools pipe."""

    def __init__(self, profile: Path) -> None:
        to_chrome, self._write = os.pipe()  # Chromium reads commands on fd 3
        self._read, from_chrome = os.pipe()  # and writes replies and events on fd 4

        def fds() -> None:
            os.dup2(to_chrome, 3)
            os.dup2(from_chrome, 4)

        self.process = subprocess.Popen(
            [CHROMIUM, *FLAGS, f"--user-data-dir={profile}", "about:blank"],
            pass_fds=(3, 4),
            preexec_fn=fds,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        os.close(to_chrome)
        os.close(from_chrome)
        self._buffer, self._id, self.events = b"", 0, []
        target = self.call("Target.createTarget", url="about:blank")["targetId"]
        self.session = self.call("Target.attachToTarget", targetId=target, flatten=True)[
            "sessionId"
        ]

    def call(self, method: str, timeout_s: float = 30.0, page: bool = False, **params) -> dict:
        self._id += 1
        message = {"id": self._id, "method": method, "params": params}
        if page:
            message["sessionId"] = self.session
        os.write(self._write, json.dumps(message).encode() + b"\0")
        reply = self._until(lambda m: m.get("id") == self._id, timeout_s)
        if "error" in reply:
            raise RuntimeError(f"{method}: {reply['error']}")
        return reply["result"]

    def wait_event(self, method: str, timeout_s: float = 30.0) -> dict:
        seen = next((e for e in self.events if e.get("method") == method), None)
        return seen or self._until(lambda m: m.get("method") == method, timeout_s)

    def _until(self, wanted, timeout_s: float) -> dict:
        deadline = time.monotonic() + timeout_s
        while True:
            while b"\0" in self._buffer:
                raw, self._buffer = self._buffer.split(b"\0", 1)
                message = json.loads(raw)
                if "method" in message:
                    self.events.append(message)
                if wanted(message):
                    return message
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self._read], [], [], left)[0]:
                raise TimeoutError("Chromium did not answer in time")
            chunk = os.read(self._read, 1 << 20)
            if not chunk:
                raise RuntimeError("Chromium closed the pipe")
            self._buffer += chunk

    def close(self) -> None:
        with contextlib.suppress(RuntimeError, TimeoutError, OSError):
            self.call("Browser.close", timeout_s=5)
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
        os.close(self._write)
        os.close(self._read)


def png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


def decode_png(data: bytes) -> np.ndarray:
    """8-bit RGB/RGBA, non-interlaced PNG -> [H, W, C] uint8 (what Chromium writes)."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    at, idat, header = 8, b"", None
    while at < len(data):
        size = int.from_bytes(data[at : at + 4], "big")
        kind, body = data[at + 4 : at + 8], data[at + 8 : at + 8 + size]
        if kind == b"IHDR":
            header = body
        elif kind == b"IDAT":
            idat += body
        at += 12 + size
    width, height = int.from_bytes(header[0:4], "big"), int.from_bytes(header[4:8], "big")
    assert header[8] == 8 and header[9] in (2, 6) and header[12] == 0, header
    channels = 3 if header[9] == 2 else 4
    raw = np.frombuffer(zlib.decompress(idat), dtype=np.uint8).reshape(height, -1)
    out = np.zeros((height, width * channels), dtype=np.int32)
    for y in range(height):  # undo the per-row filters (PNG spec, section 9)
        kind, row = raw[y, 0], raw[y, 1:].astype(np.int32)
        up = out[y - 1] if y else np.zeros_like(row)
        if kind in (0, 2):
            out[y] = (row + (up if kind == 2 else 0)) % 256
            continue
        line = out[y]
        for x in range(row.size):
            left = line[x - channels] if x >= channels else 0
            corner = up[x - channels] if x >= channels else 0
            if kind == 1:
                guess = left
            elif kind == 3:
                guess = (left + up[x]) // 2
            else:  # Paeth
                p = left + up[x] - corner
                pa, pb, pc = abs(p - left), abs(p - up[x]), abs(p - corner)
                guess = left if pa <= pb and pa <= pc else up[x] if pb <= pc else corner
            line[x] = (row[x] + guess) % 256
    return out.reshape(height, width, channels).astype(np.uint8)


@pytest.fixture(scope="module")
def report_html(tmp_path_factory) -> Path:
    """A real report with every section: open loop, server metrics, a warning."""
    out = tmp_path_factory.mktemp("html")
    with FakeServer("--metrics") as fake:
        code = main(
            [
                "--target",
                fake.target,
                "--rate",
                "150",
                "--requests",
                "60",
                "--metrics-url",
                fake.metrics_url,
                "--lag-warn-ms",
                "0.0001",
                "--slo",
                "ttft=55ms",
                "--no-progress",
                "--out",
                str(out),
            ]
        )
    assert code == 0
    return next(out.glob("*.html"))


def test_html_report_renders_its_charts_in_headless_chromium(report_html, tmp_path):
    browser = DevTools(tmp_path / "profile")
    try:
        for domain in ("Page", "Runtime", "Log", "Network"):
            browser.call(f"{domain}.enable", page=True)
        browser.call("Page.navigate", url=report_html.as_uri(), page=True)
        browser.wait_event("Page.loadEventFired")
        charts = json.loads(
            browser.call("Runtime.evaluate", page=True, returnByValue=True, expression=CHARTS_JS)[
                "result"
            ]["value"]
        )
        full = browser.call(
            "Page.captureScreenshot", page=True, format="png", captureBeyondViewport=True
        )
        first = charts[0]["box"]
        clip = browser.call(
            "Page.captureScreenshot", page=True, format="png", clip={**first, "scale": 1}
        )
    finally:
        browser.close()
    shot = tmp_path / "report.png"
    shot.write_bytes(base64.b64decode(full["data"]))
    print(f"screenshot: {shot}")

    problems = [e for e in browser.events if is_problem(e)]
    assert problems == [], problems
    urls = [
        e["params"]["request"]["url"]
        for e in browser.events
        if e["method"] == "Network.requestWillBeSent"
    ]
    assert urls and all(u.startswith(("file:", "data:")) for u in urls), urls  # offline
    titles = [c["title"] for c in charts]
    assert titles == [
        "Latency over time",
        "Throughput over time",
        "Output tokens over time",
        "In-flight requests over time",
        "Send lag over time",
        "CDF of TTFT",
        "CDF of ITL",
        "CDF of E2E",
    ]
    for c in charts:
        assert c["box"]["width"] > 300 and c["box"]["height"] > 200, c
        assert c["drawn"] >= 1 and c["ticks"] >= 4, c
    width, height = png_size(shot.read_bytes())
    assert height > 1500 and width >= 1200  # the whole page, every section on it
    pixels = decode_png(base64.b64decode(clip["data"]))[..., :3].astype(int)
    near = np.abs(pixels - np.array(E2E_DARK)).sum(axis=-1) < 60
    assert near.sum() > 50, "the e2e p99 line is not on the screenshot"
    assert (pixels.sum(axis=-1) < 600).mean() > 0.01  # more than a blank frame


CHARTS_JS = """JSON.stringify([...document.querySelectorAll('svg.chart')].map(svg => {
  const r = svg.getBoundingClientRect();
  const series = [...svg.querySelectorAll('path.line, path.points')];
  const drawn = series.filter(p => { const b = p.getBBox(); return b.width + b.height > 0; });
  return {title: svg.getAttribute('aria-label'), drawn: drawn.length,
          ticks: svg.querySelectorAll('text.tick').length,
          box: {x: r.x + scrollX, y: r.y + scrollY, width: r.width, height: r.height}};
}))"""


def is_problem(event: dict) -> bool:
    """A console error, an uncaught exception, or an error-level log entry."""
    method, params = event["method"], event.get("params", {})
    if method == "Runtime.consoleAPICalled":
        return params.get("type") in ("error", "assert")
    if method == "Log.entryAdded":
        return params["entry"]["level"] == "error"
    return method == "Runtime.exceptionThrown"
