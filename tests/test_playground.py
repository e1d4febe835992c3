"""The playground page in headless Chromium (Debian's, driven by Playwright), served by a
real server: a person types a question, presses Enter, and watches the answer stream in,
with its confidence; below the hand-over threshold the page shows the server's hand-over
text instead of the guess (a second server, at threshold 1, hands every answer over).

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
from tests.support.handover import UNDER_A_HALF, calibrated_copy

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
HANDOVER_TEXT = "Let me get a person to help you with that."


@pytest.fixture(scope="module")
def calibrated(tiny_artifact, tmp_path_factory):
    """The tiny model with a known calibration: every answer's confidence is under 0.5."""
    return calibrated_copy(tiny_artifact, tmp_path_factory.mktemp("cal") / "a", UNDER_A_HALF)


@pytest.fixture(scope="module")
def server(calibrated, tmp_path_factory):
    """Answers every question (threshold 0), each with its confidence."""
    log = tmp_path_factory.mktemp("playground") / "server.log"
    options = ["--max-batch-size", "4", "--handover-threshold", "0"]
    process = ServerProcess.start(calibrated, log, options, http=True)
    yield process
    assert process.stop() == 0, log.read_text()[-3000:]


@pytest.fixture(scope="module")
def handover_server(calibrated, tmp_path_factory):
    """Hands every answer over (threshold 1), with its own hand-over text."""
    log = tmp_path_factory.mktemp("playground-handover") / "server.log"
    options = ["--handover-threshold", "1", "--handover-text", HANDOVER_TEXT]
    process = ServerProcess.start(calibrated, log, options, http=True)
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


def ask_watched(page) -> None:
    """QUESTION typed and sent with Enter, 48 tokens at most, the answer box's text lengths
    recorded as it streams (WATCH); returns once the answer is done."""
    page.get_by_label("Max tokens").first.fill("48")
    page.evaluate(WATCH, "#answer-ask")
    question = page.get_by_label("Question")
    question.fill(QUESTION)
    question.press("Enter")
    page.wait_for_function("document.querySelector('#answer-ask').dataset.done === 'true'")


@needs_chromium
def test_a_question_typed_and_sent_with_enter_streams_its_answer(browser, server, tmp_path):
    page, problems = open_page(browser, server, 1100, 900)
    ask_watched(page)
    answer = page.locator("#answer-ask").inner_text()
    lengths = page.evaluate("window.lengths")
    stats = {
        name: page.locator(f"#panel-ask [data-stat={name}]").inner_text()
        for name in ("ttft", "tokens", "rate", "confidence")
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
    choice = expected["choices"][0]
    assert answer == choice["message"]["content"] and answer.strip()
    assert len(set(lengths)) > 2 and lengths == sorted(lengths)  # it grew, piece by piece
    assert choice["handed_over"] is False and 0 < choice["confidence"] < 0.5
    assert stats["confidence"] == f"{choice['confidence']:.2f}"
    assert page.locator("#handover-ask").is_hidden()
    assert page.locator("#answer-ask").get_attribute("data-handed-over") == "false"
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


def chat(server, question: str, **extra) -> dict:
    body = {"messages": [{"role": "user", "content": question}], "max_tokens": 48, **extra}
    return api(server, "/v1/chat/completions", {"temperature": 0, **body})["choices"][0]


@needs_chromium
def test_a_handed_over_answer_shows_the_hand_over_text_not_the_guess(
    browser, handover_server, tmp_path
):
    page, problems = open_page(browser, handover_server, 1100, 900)
    ask_watched(page)
    shown = page.locator("#answer-ask").inner_text()
    lengths = page.evaluate("window.lengths")
    notice = page.locator("#handover-ask")
    page.locator("#handover-ask summary").click()  # open "the model's guess"
    guess = page.locator("#handover-ask [data-guess]").inner_text()
    confidence = page.locator("#panel-ask [data-stat=confidence]").inner_text()
    shot = tmp_path / "playground-handover.png"
    page.screenshot(path=str(shot), full_page=True)
    print(f"\nplayground hand-over screenshot: {shot}; guess {guess!r}, confidence {confidence}")

    handed = chat(handover_server, QUESTION)  # the server's own verdict, not streamed
    answered = chat(handover_server, QUESTION, handover_threshold=0)  # the guess itself
    assert handed["handed_over"] is True and handed["message"]["content"] == HANDOVER_TEXT
    assert shown == HANDOVER_TEXT  # the streamed guess was replaced at the last chunk
    assert guess == answered["message"]["content"] and guess.strip()
    assert max(lengths) >= len(guess) and lengths[-1] == len(HANDOVER_TEXT)  # guess, then text
    assert confidence == f"{handed['confidence']:.2f}" == f"{answered['confidence']:.2f}"
    assert notice.is_visible() and "Handed over to a person" in notice.inner_text()
    assert f"({confidence}) is below the threshold" in notice.inner_text()
    assert page.locator("#answer-ask").get_attribute("data-handed-over") == "true"
    assert problems == []
    page.close()


@needs_chromium
def test_the_pages_own_threshold_goes_with_the_request(browser, handover_server):
    page, problems = open_page(browser, handover_server, 1100, 900)
    page.get_by_label("Hand-over below").fill("0")  # never, whatever the server's setting
    question = page.get_by_label("Question")
    question.fill(QUESTION)
    question.press("Enter")
    page.wait_for_function("document.querySelector('#answer-ask').dataset.done === 'true'")
    answered = chat(handover_server, QUESTION, max_tokens=64, handover_threshold=0)
    assert page.locator("#answer-ask").inner_text() == answered["message"]["content"]
    assert page.locator("#handover-ask").is_hidden()
    # a second question at the server's threshold again hands over, the notice comes back
    page.get_by_label("Hand-over below").fill("")
    question.fill(QUESTION)
    question.press("Enter")
    page.wait_for_function("document.querySelector('#answer-ask').dataset.handedOver === 'true'")
    assert page.locator("#answer-ask").inner_text() == HANDOVER_TEXT
    assert page.locator("#handover-ask").is_visible()
    assert problems == []
    page.close()
