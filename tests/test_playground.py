"""The playground page in headless Chromium (Debian's, driven by Playwright), served by a
real server: a person types a question, presses Enter, and watches the answer stream in.

Skipped when no Chromium is installed (Debian: `apt-get install -y chromium`); .ci/run
installs it. Screenshots stay in the test's tmp dir (printed with -s).
"""

from __future__ import annotations

import json
import re
import shutil
import urllib.request

import pytest

from server.process import ServerProcess

pytestmark = pytest.mark.slow
CHROMIUM = next(
    (p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None
)
needs_chromium = pytest.mark.skipif(
    CHROMIUM is None,
    reason="Chromium is not installed (Debian/Ubuntu: apt-get install -y chromium)",
)
# Chromium as root in a container, with nothing reaching outside (the page needs nothing)
FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
QUESTION = "How do I reset my password?"


@pytest.fixture(scope="module")
def server(tiny_artifact, tmp_path_factory):
    log = tmp_path_factory.mktemp("playground") / "server.log"
    process = ServerProcess.start(tiny_artifact, log, ["--max-batch-size", "4"], http=True)
    yield process
    assert process.stop() == 0, log.read_text()[-3000:]


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        yield chromium
        chromium.close()


def api(server, path: str, payload: dict) -> dict:
    request = urllib.request.Request(
        f"{server.http_url}{path}",
        data=json.dumps(payload).encode(),
        headers={"content-type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as reply:
        return json.load(reply)


def open_page(browser, server, width: int, height: int):
    page = browser.new_page(viewport={"width": width, "height": height})
    problems: list[str] = []
    page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: problems.append(str(e)))
    page.on("requestfailed", lambda r: problems.append(f"{r.url}: {r.failure}"))
    page.goto(f"{server.http_url}/")
    page.wait_for_function("document.querySelector('#model').textContent.startsWith('model:')")
    return page, problems


WATCH = """(selector) => {  // every text length the answer shows, as it changes
    window.lengths = [];
    const node = document.querySelector(selector);
    new MutationObserver(() => window.lengths.push(node.textContent.length))
        .observe(node, {childList: true, characterData: true, subtree: true});
}"""


@needs_chromium
def test_a_question_typed_and_sent_with_enter_streams_its_answer(browser, server, tmp_path):
    page, problems = open_page(browser, server, 1100, 900)
    page.get_by_label("Max tokens").first.fill("48")
    page.evaluate(WATCH, "#answer-ask")
    question = page.get_by_label("Question")
    question.fill(QUESTION)
    question.press("Enter")
    page.wait_for_function("document.querySelector('#answer-ask').dataset.done === 'true'")
    answer = page.locator("#answer-ask").inner_text()
    lengths = page.evaluate("window.lengths")
    stats = {
        name: page.locator(f"#panel-ask [data-stat={name}]").inner_text()
        for name in ("ttft", "tokens", "rate")
    }
    shot = tmp_path / "playground.png"
    page.screenshot(path=str(shot), full_page=True)
    print(f"\nplayground screenshot: {shot}; answer {answer!r}; {stats}")

    expected = api(
        server,
        "/v1/chat/completions",
        {
            "messages": [{"role": "user", "content": QUESTION}],
            "max_tokens": 48,
            "temperature": 0,
        },
    )
    assert answer == expected["choices"][0]["message"]["content"] and answer.strip()
    assert len(set(lengths)) > 2 and lengths == sorted(lengths)  # it grew, piece by piece
    assert re.fullmatch(r"\d+ ms", stats["ttft"])
    assert stats["tokens"] == str(expected["usage"]["completion_tokens"])
    assert re.fullmatch(r"\d+\.\d", stats["rate"]) or stats["rate"] == "–"
    assert problems == []
    page.close()


@needs_chromium
def test_raw_completion_tab_by_keyboard(browser, server):
    page, problems = open_page(browser, server, 1100, 900)
    page.get_by_role("tab", name="Ask").focus()
    page.keyboard.press("ArrowRight")  # the WAI-ARIA tabs pattern
    assert page.get_by_role("tab", name="Raw completion").get_attribute("aria-selected") == "true"
    assert page.locator("#panel-raw").is_visible() and not page.locator("#panel-ask").is_visible()
    prompt = page.get_by_label("Prompt")
    prompt.fill("Question: What does the red light mean?\nAnswer:")
    page.locator("#raw-temperature").fill("0")
    page.locator("#raw-max-tokens").fill("12")
    prompt.press("Control+Enter")
    page.wait_for_function("document.querySelector('#answer-raw').dataset.done === 'true'")
    expected = api(
        server,
        "/v1/completions",
        {
            "prompt": "Question: What does the red light mean?\nAnswer:",
            "max_tokens": 12,
            "temperature": 0,
        },
    )
    assert page.locator("#answer-raw").inner_text() == expected["choices"][0]["text"]
    assert problems == []
    page.close()


@needs_chromium
def test_every_control_has_a_label_and_a_phone_needs_no_sideways_scroll(browser, server, tmp_path):
    page, problems = open_page(browser, server, 390, 844)
    unlabelled = page.evaluate("""() => Array.from(document.querySelectorAll('input, textarea'))
        .filter(e => !e.labels.length && !e.getAttribute('aria-label')).map(e => e.id)""")
    assert unlabelled == []
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
    question = page.get_by_label("Question")
    box = question.bounding_box()
    assert box is not None and box["width"] > 300  # the question box uses the phone's width
    question.fill("Where is my order?")
    question.press("Enter")
    page.wait_for_function("document.querySelector('#answer-ask').dataset.done === 'true'")
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
    page.screenshot(path=str(tmp_path / "playground-phone.png"), full_page=True)
    assert problems == []
    page.close()


@needs_chromium
def test_an_error_is_shown_not_swallowed(browser, server):
    page, problems = open_page(browser, server, 1100, 900)
    page.get_by_label("Max tokens").first.fill("100000")  # over the server's limit
    question = page.get_by_label("Question")
    question.fill(QUESTION)
    question.press("Enter")
    alert = page.locator("#panel-ask [role=alert]")
    page.wait_for_function("document.querySelector('#panel-ask [role=alert]').textContent !== ''")
    assert alert.inner_text().startswith("max_tokens:")
    # the failed fetch's 400 is the only console line (Chromium logs failed requests)
    assert all("400" in p for p in problems), problems
    page.close()
