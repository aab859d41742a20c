"""A person in the loop, end to end: `rlhf run --teacher human` in a subprocess, a scripted labeler in Debian's
Chromium answering about one pair a second, and what they see at the end (issue 18).

Simulated teachers answer instantly and never meet the pacing or the end of a run; this labeler does: the policy
must wait for each round's labels, every label of the budget must reach the reward model, and the page must end on
"the run has finished", never on a lost server.
"""

from __future__ import annotations

import base64
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Page, sync_playwright

from rlhf.store import PreferenceStore
from tests.interrupt import logged_steps

CHROMIUM = Path("/usr/bin/chromium")
pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists() and not os.environ.get("CI"),
    reason="Debian's chromium is not installed (apt-get install chromium); CI installs it",
)
LAUNCH_ARGS = ["--no-sandbox", "--headless", "--disable-gpu", "--disable-background-networking"]
LABELS = 20
PACE_S = 1.0  # a brisk human: one answer a second
# Every message the page shows, kept as it changes (installed by evaluate, which the page's CSP does not govern).
WATCH_MESSAGES = """() => {
    window.seenMessages = [];
    const message = document.getElementById("message");
    new MutationObserver(() => window.seenMessages.push(message.textContent))
        .observe(message, { childList: true, characterData: true, subtree: true });
}"""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _start_run(out: Path, port: int, *extra: str) -> subprocess.Popen[str]:
    args = ["run", "--env", "CartPole-v1", "--teacher", "human", "--labels", str(LABELS), "--total-steps", "20000",
            "--eval-episodes", "3", "--port", str(port), "--out", str(out), *extra]  # fmt: skip
    return subprocess.Popen(
        [sys.executable, "-c", "import sys; from rlhf.cli import main; sys.exit(main())", *args],
        env={**os.environ, "WANDB_MODE": "disabled"},
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )


def _drain(process: subprocess.Popen[str]) -> list[str]:
    """The run's stderr lines, read on a thread as they come (a full pipe would stall the run)."""
    lines: list[str] = []
    assert process.stderr is not None
    threading.Thread(target=lambda: lines.extend(iter(process.stderr.readline, "")), daemon=True).start()  # type: ignore[union-attr]
    return lines


def _labeling_link(process: subprocess.Popen[str], lines: list[str]) -> str:
    """Wait until the run prints the personal labeling link."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None:
        for line in list(lines):
            match = re.search(r"label here: (\S+)", line)
            if match:
                return match.group(1)
        time.sleep(0.1)
    raise AssertionError(f"no labeling link printed: {''.join(lines)}")


@pytest.fixture
def page() -> Iterator[Page]:
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=LAUNCH_ARGS)
        yield browser.new_page(viewport={"width": 1280, "height": 1000})
        browser.close()


def _answer_like_a_person(page: Page, store_path: Path, answers: int) -> list[int]:
    """Answer ``answers`` pairs, each about PACE_S after it showed, preferring the clip whose episode went on
    longer (what a person sees); return the answered query ids."""
    store = PreferenceStore(store_path)
    answered: list[int] = []
    try:
        while len(answered) < answers:
            page.wait_for_function(
                """previous => {
                    const pair = document.getElementById("pair");
                    const ready = !document.querySelector('.choices button[data-side="left"]').disabled;
                    return !pair.hidden && ready && Number(pair.dataset.queryId) !== previous;
                }""",
                arg=answered[-1] if answered else -1,
                timeout=120_000,
            )
            query_id = int(page.get_attribute("#pair", "data-query-id") or "0")
            query = store.get_query(query_id)
            left, right = store.get_segment(query.left_segment), store.get_segment(query.right_segment)
            page.wait_for_timeout(PACE_S * 1000)
            page.keyboard.press("ArrowLeft" if left.true_return >= right.true_return else "ArrowRight")
            answered.append(query_id)
    finally:
        store.close()
    return answered


@pytest.mark.slow
def test_a_person_labeling_at_a_human_pace_gets_every_label_used_and_sees_the_end(tmp_path: Path, page: Page) -> None:
    out, port = tmp_path / "run", _free_port()
    process = _start_run(out, port)
    lines = _drain(process)
    try:
        page.goto(_labeling_link(process, lines))
        page.evaluate(WATCH_MESSAGES)
        page.wait_for_selector("#pair:not([hidden])", timeout=120_000)
        # The policy waits for the first round: no PPO update (no metrics row) before its labels are in.
        assert logged_steps(out) == []
        answered = _answer_like_a_person(page, out / "prefs.sqlite", LABELS)
        page.get_by_text("This run has finished").wait_for(timeout=120_000)
        assert process.wait(timeout=120) == 0
        # The service is gone now; the page stays on its finished panel and reports no lost server.
        page.keyboard.press("ArrowLeft")
        page.wait_for_timeout(3000)
        page.keyboard.press("ArrowRight")
        page.wait_for_timeout(1000)
        shown = page.evaluate("() => [...window.seenMessages, document.body.innerText].join('\\n')")
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    err = "".join(lines)
    assert "cannot be reached" not in shown and "Could not do that" not in shown, shown
    assert page.get_by_text("This run has finished").is_visible()
    assert len(answered) == LABELS == len(set(answered))
    summary = json.loads((out / "summary.json").read_text())
    assert summary["labels_used"] == LABELS and summary["env_steps"] >= 20000
    assert "waiting for" in err and "labeling service closes in" in err
    with PreferenceStore(out / "prefs.sqlite") as store:
        assert len(store.effective_labels()) == LABELS and store.open_label_count() == 0
        status = store.loop_status()
    assert status is not None and status.phase == "finished" and status.policy_clip == "policy-final.mp4"
    # The report shows the final policy as a clip the browser plays.
    _assert_report_plays_a_clip(page, out / "report.html", clips=1)


def _assert_report_plays_a_clip(page: Page, report: Path, clips: int) -> None:
    html = report.read_text()
    sources = re.findall(r"src='data:video/mp4;base64,([A-Za-z0-9+/=]+)'", html)
    assert len(sources) == clips
    assert all(base64.b64decode(source)[4:8] == b"ftyp" for source in sources)  # an MP4 file
    page.goto(report.as_uri())
    page.wait_for_function(
        "() => [...document.querySelectorAll('video')].every(v => v.readyState >= 2 && v.duration > 0)",
        timeout=30_000,
    )
    assert page.evaluate("() => document.querySelectorAll('video').length") == clips
