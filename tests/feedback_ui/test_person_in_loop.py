"""A person in the loop: the loop's phase, the labels it waits for and its latest policy clip, in the API and on the
labeling page (Debian's Chromium, driven by Playwright, against a real server process and SQLite file)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from playwright.sync_api import Page

from feedback_ui.server import ServerHandle, start_server_in_background
from rlhf.render import render_clip
from rlhf.store import LoopStatus, PreferenceStore
from tests.feedback_ui.conftest import ADMIN_TOKEN, NEEDS_CHROMIUM, bearer, queue_pairs, shown_pair

POLICY_CLIP = "policy-012000.mp4"


def write_policy_clip(media_dir: Path, name: str = POLICY_CLIP, real_steps: int = 30, length: int = 50) -> Path:
    """A CartPole-like clip of the policy (a bar that moves, then the frozen, dimmed end), as the loop renders it."""
    frames = np.zeros((real_steps, 64, 96, 3), dtype=np.uint8)
    for step in range(real_steps):
        frames[step, 20:44, 2 * step % 80 : 2 * step % 80 + 16] = (40, 160, 230)
    render_clip(frames, length, media_dir / name, fps=50)
    return media_dir / name


def _loop(client: TestClient) -> dict[str, Any]:
    """The loop's status as the admin sees it (progress answers are cached for a moment per labeler)."""
    response = client.get("/api/admin/stats", headers=bearer(ADMIN_TOKEN))
    assert response.status_code == 200
    loop: dict[str, Any] = response.json()["loop"]
    return loop


def test_progress_tells_the_phase_and_the_policy_clip(
    client: TestClient, store: PreferenceStore, workspace: Path
) -> None:
    queue_pairs(store, 2)
    _, token = store.add_labeler("alice")
    before = client.get("/api/progress", headers=bearer(token)).json()["loop"]
    assert (before["phase"], before["labels_awaited"], before["policy_clip_url"]) == (None, None, None)

    # Waiting for 3 labels, with a policy clip the loop names but has not written (yet): no URL.
    store.record_loop_status(
        LoopStatus(1, 5, 20, 2048, 20_000, phase="waiting", labels_awaited=3, policy_clip=POLICY_CLIP)
    )
    loop = _loop(client)
    assert (loop["phase"], loop["labels_awaited"], loop["policy_clip_url"]) == ("waiting", 3, None)

    write_policy_clip(workspace / "clips")
    loop = _loop(client)
    assert loop["policy_clip_url"] == f"/media/{POLICY_CLIP}"
    assert client.post("/api/session", headers=bearer(token)).status_code == 200
    clip = client.get(loop["policy_clip_url"])
    assert clip.status_code == 200 and clip.headers["content-type"] == "video/mp4" and len(clip.content) > 500

    # The run ends: the final return and the labels used come with phase finished; the clip stays.
    store.record_loop_status(LoopStatus(3, 20, 20, 20_000, 20_000, policy_true_return=187.5, phase="finished"))
    progress = client.get("/api/progress", headers=bearer(store.add_labeler("bob")[1])).json()
    loop = progress["loop"]
    assert (loop["phase"], loop["labels_awaited"], loop["labels_used"]) == ("finished", 0, 20)
    assert loop["policy_true_return"] == 187.5 and loop["policy_clip_url"] == f"/media/{POLICY_CLIP}"


def test_a_policy_clip_outside_the_media_dir_never_becomes_a_url(
    client: TestClient, store: PreferenceStore, workspace: Path
) -> None:
    media = workspace / "clips"
    (workspace / "secret.mp4").write_bytes(b"not for labelers")
    (media / "escape.mp4").symlink_to(workspace / "secret.mp4")
    (media / "a-folder.mp4").mkdir()
    for name in ("..", "escape.mp4", "a-folder.mp4", "prefs.sqlite", "nope.mp4", " ", "x\x00.mp4"):
        store.record_loop_status(LoopStatus(1, 0, 20, 0, 20_000, policy_clip=name))
        assert _loop(client)["policy_clip_url"] is None, name

    # A name with characters that mean something in a URL is given escaped, and that URL serves the clip.
    odd = "policy #1?.mp4"
    write_policy_clip(media, odd)
    store.record_loop_status(LoopStatus(1, 0, 20, 0, 20_000, policy_clip=odd))
    url = _loop(client)["policy_clip_url"]
    assert url == "/media/policy%20%231%3F.mp4"
    _, token = store.add_labeler("carol")
    assert client.post("/api/session", headers=bearer(token)).status_code == 200
    assert client.get(url).content == (media / odd).read_bytes()


def test_an_answer_to_a_closed_pair_is_a_409_that_says_the_run_finished(
    client: TestClient, store: PreferenceStore
) -> None:
    queue_pairs(store, 3)
    _, token = store.add_labeler("dave")
    pair = client.get("/api/queries/next", headers=bearer(token)).json()["pair"]
    assert store.close_open_queries() == 3
    body = {"query_id": pair["query_id"], "side": "left", "seconds_taken": 1.0}
    response = client.post("/api/labels", json=body, headers=bearer(token))
    assert response.status_code == 409
    assert response.json()["detail"] == f"pair {pair['query_id']} is closed: the run has finished"
    assert client.get("/api/queries/next", headers=bearer(token)).json()["pair"] is None


# ------------------------------------------------------------------------------------------------ in the browser

RUNNING = LoopStatus(1, 5, 20, 2048, 20_000, reward_val_accuracy=0.75)
FINISHED = LoopStatus(3, 20, 20, 20_000, 20_000, policy_true_return=187.5, phase="finished")
UNREACHABLE = "cannot be reached"


@pytest.fixture
def server(workspace: Path, store: PreferenceStore) -> Iterator[ServerHandle]:
    queue_pairs(store, 8)
    store.record_loop_status(RUNNING)
    with start_server_in_background(workspace, port=0) as handle:
        yield handle


def _open(page: Page, server: ServerHandle, store: PreferenceStore, name: str = "alice") -> int:
    """Open the labeling page as a new labeler; returns the id of the pair it shows."""
    _, token = store.add_labeler(name)
    page.goto(f"{server.url}/#token={token}")
    return shown_pair(page)


def _frames(page: Page, selector: str) -> int:
    return int(page.eval_on_selector(selector, "v => v.getVideoPlaybackQuality().totalVideoFrames"))


def _plays(page: Page, selector: str) -> None:
    """The video has data and decodes frames as time passes."""
    page.wait_for_function(f"() => document.querySelector('{selector}').readyState >= 2", timeout=10_000)
    before = _frames(page, selector)
    page.wait_for_function(
        f"() => document.querySelector('{selector}').getVideoPlaybackQuality().totalVideoFrames > {before}",
        timeout=5_000,
    )


def _finished_without_errors(page: Page) -> None:
    assert page.is_visible("#finished") and not page.is_visible("#fatal")
    assert UNREACHABLE not in (page.text_content("body") or "")
    assert "Could not" not in (page.text_content("#message") or "")


@NEEDS_CHROMIUM
@pytest.mark.slow
def test_waiting_banner_the_agent_now_and_the_finished_page(
    server: ServerHandle, store: PreferenceStore, workspace: Path, page: Page
) -> None:
    query_id = _open(page, server, store)
    assert not page.is_visible("#waiting")
    assert page.get_by_role("button", name="Show the agent now").is_disabled()  # no policy clip yet

    # The loop waits for labels: the banner says how many; the policy's latest clip becomes available.
    write_policy_clip(workspace / "clips")
    store.record_loop_status(
        LoopStatus(1, 5, 20, 2048, 20_000, phase="waiting", labels_awaited=3, policy_clip=POLICY_CLIP)
    )
    banner = page.get_by_role("status").filter(has_text="waiting for your labels")
    banner.wait_for(timeout=10_000)
    assert banner.text_content() == "The agent is waiting for your labels: 3 to go"
    page.wait_for_function("() => !document.getElementById('show-agent').disabled", timeout=10_000)

    # p shows the agent's latest clip; keys do not answer the hidden pair meanwhile; Escape closes it.
    page.keyboard.press("p")
    assert page.is_visible("#agent") and page.get_attribute("#agent-video", "src") == f"/media/{POLICY_CLIP}"
    _plays(page, "#agent-video")
    page.keyboard.press("ArrowLeft")
    page.wait_for_timeout(300)
    assert store.labels() == []
    page.keyboard.press("Escape")
    page.wait_for_selector("#agent", state="hidden")
    # The button and p again open it, p closes it; then the arrow keys answer the pair.
    page.get_by_role("button", name="Show the agent now").click()
    page.wait_for_selector("#agent", state="visible")
    page.keyboard.press("p")
    page.wait_for_selector("#agent", state="hidden")
    page.keyboard.press("ArrowLeft")
    next_id = shown_pair(page, previous=query_id)
    assert [label.query_id for label in store.labels()] == [query_id]

    store.record_loop_status(LoopStatus(1, 6, 20, 2048, 20_000, phase="waiting", labels_awaited=2))
    page.wait_for_function(
        "() => document.getElementById('waiting').textContent === 'The agent is waiting for your labels: 2 to go'",
        timeout=10_000,
    )
    page.keyboard.press("ArrowRight")
    shown_pair(page, previous=next_id)

    # The run ends: the page says so, with the final return, the labels used and this labeler's, and the clip.
    store.record_loop_status(FINISHED)
    store.close_open_queries()
    page.wait_for_selector("#finished", state="visible", timeout=10_000)
    assert page.text_content("#finished h2") == "This run has finished"
    assert page.text_content("#final-return") == "187.5"
    assert page.text_content("#final-labels-used") == "20 of 20"
    assert page.text_content("#final-labels-mine") == "2"
    assert "You can close this page" in (page.text_content("#finished") or "")
    for hidden in ("#pair", "#choices", "#tools", "#waiting", "#agent"):
        assert not page.is_visible(hidden), hidden
    assert page.get_by_role("button", name="Left better").is_hidden()
    _plays(page, "#final-video")

    # The server goes away, as it does a few seconds after the run: the page stays as it is.
    server.stop()
    page.wait_for_timeout(5_000)
    for key in ("ArrowLeft", "ArrowRight", "z", " ", "p"):
        page.keyboard.press(key)
    page.wait_for_timeout(3_000)  # longer than the page's retries of a request (0.3 + 0.6 + 1.2 s)
    _finished_without_errors(page)
    assert page.text_content("#final-return") == "187.5" and len(store.labels()) == 2


@NEEDS_CHROMIUM
@pytest.mark.slow
def test_an_answer_to_a_closed_pair_shows_the_finished_page(
    server: ServerHandle, store: PreferenceStore, page: Page
) -> None:
    _open(page, server, store)
    assert store.close_open_queries() == 8  # the run ended while the pair was on screen
    page.keyboard.press("ArrowLeft")
    page.wait_for_selector("#finished", state="visible", timeout=5_000)
    _finished_without_errors(page)
    assert page.text_content("#final-labels-mine") == "0"
    # The loop's final report arrives after the pairs closed: the page picks up its figures.
    store.record_loop_status(FINISHED)
    page.wait_for_function("() => document.getElementById('final-return').textContent === '187.5'", timeout=10_000)
    server.stop()
    page.keyboard.press("ArrowLeft")
    page.wait_for_timeout(3_000)
    _finished_without_errors(page)


@NEEDS_CHROMIUM
@pytest.mark.slow
def test_a_server_gone_without_a_finished_run_is_still_an_error(
    server: ServerHandle, store: PreferenceStore, page: Page
) -> None:
    _open(page, server, store)
    server.stop()
    page.keyboard.press("ArrowLeft")
    page.wait_for_function(
        f"() => document.getElementById('message').textContent.includes('{UNREACHABLE}')", timeout=10_000
    )
    assert not page.is_visible("#finished")


def _queue(store: PreferenceStore, real_steps: tuple[int, int]) -> tuple[str, str]:
    """Queue one pair of the workspace's segments with these real steps (first of each); returns their ids."""
    by_steps = {store.get_segment(segment_id).real_steps: segment_id for segment_id in store.segment_ids()}
    pair = (by_steps[real_steps[0]], by_steps[real_steps[1]])
    store.add_queries([pair], [1.0], [True], round=0)
    return pair


def _rates(page: Page) -> list[float]:
    return [float(rate) for rate in page.eval_on_selector_all("#pair video", "vs => vs.map(v => v.playbackRate)")]


def _expected_rate(page: Page, chosen: float) -> float:
    """chosen x clamp(longer real part at the chosen speed / 1.5 s, 1/4, 1), from the page's clips."""
    reals = page.eval_on_selector_all(
        "#pair video", "vs => vs.map(v => v.duration * Number(v.dataset.realSteps) / Number(v.dataset.length))"
    )
    return chosen * min(1.0, max(0.25, max(reals) / chosen / 1.5))


@NEEDS_CHROMIUM
@pytest.mark.slow
def test_short_clips_play_slower_with_a_position_bar_and_the_replay_key_shown(
    workspace: Path, store: PreferenceStore, page: Page
) -> None:
    _queue(store, (23, 15))  # 0.46 s and 0.3 s of episode at 50 fps, then the frozen end
    with start_server_in_background(workspace, port=0) as server:
        _open(page, server, store)
        rates = _rates(page)
        assert rates[0] == rates[1] and rates[0] < 1
        assert rates[0] == pytest.approx(_expected_rate(page, 1.0), abs=0.006)
        assert page.text_content("#speed-note") == f"slowed to {rates[0]:g}× for short clips"

        # The bar under each clip moves with playback; a mark shows where the episode ended (23/25, 15/25).
        assert page.eval_on_selector_all("#pair .end-mark", "ms => ms.map(m => !m.hidden && m.style.left)") == [
            "92%",
            "60%",
        ]
        seen = set()
        for _ in range(12):
            seen.add(page.get_attribute("#left-clip .timeline", "aria-valuenow"))
            page.wait_for_timeout(100)
        assert len(seen) >= 4, seen
        width = page.eval_on_selector("#left-clip .played", "e => e.getBoundingClientRect().width")
        assert width >= 0

        # After the clips played through once, the replay key is shown on them.
        assert not page.is_visible("#left-clip .replay-hint")
        page.wait_for_selector("#left-clip .replay-hint", state="visible", timeout=5_000)
        assert page.text_content("#left-clip .replay-hint") == "space: replay"

        # The chosen speed stays the base: at 2x the clips are slowed from 2x.
        page.select_option("#speed", "2")
        page.wait_for_function("() => document.getElementById('left-video').playbackRate > 0.4")
        assert _rates(page)[0] == pytest.approx(_expected_rate(page, 2.0), abs=0.006) and _rates(page)[0] < 2


@NEEDS_CHROMIUM
@pytest.mark.slow
def test_clips_with_a_long_episode_play_at_the_chosen_speed(
    workspace: Path, store: PreferenceStore, page: Page
) -> None:
    pair = _queue(store, (25, 15))
    for segment_id in pair:  # 25 frames at 10 fps: 2.5 s, of which the episode lasts 2.5 s and 1.5 s
        name = store.get_clip_path(segment_id)
        assert name is not None
        frames = np.full((store.get_segment(segment_id).real_steps, 64, 96, 3), 90, dtype=np.uint8)
        render_clip(frames, 25, workspace / "clips" / name, fps=10)
    with start_server_in_background(workspace, port=0) as server:
        _open(page, server, store)
        assert _rates(page) == [1.0, 1.0]
        assert page.text_content("#speed-note") == ""
        assert page.eval_on_selector_all("#pair .end-mark", "ms => ms.map(m => m.hidden)") == [True, False]


@NEEDS_CHROMIUM
@pytest.mark.slow
def test_the_admin_page_shows_the_phase(server: ServerHandle, store: PreferenceStore, page: Page) -> None:
    page.goto(server.admin_url)
    run_card = page.locator("#cards .card", has_text="Run")
    run_card.wait_for(timeout=10_000)
    assert run_card.locator("b").text_content() == "running"
    store.record_loop_status(LoopStatus(1, 5, 20, 2048, 20_000, phase="waiting", labels_awaited=3))
    page.wait_for_function(
        "() => [...document.querySelectorAll('#cards .card b')].some(b => b.textContent === 'waiting for 3 labels')",
        timeout=10_000,
    )
    store.record_loop_status(FINISHED)
    page.wait_for_function(
        "() => [...document.querySelectorAll('#cards .card b')].some(b => b.textContent === 'finished')",
        timeout=10_000,
    )
