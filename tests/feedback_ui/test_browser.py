"""The labeling page in Debian's Chromium (headless, driven by Playwright) against a real server and database."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Page, Route

from feedback_ui.server import ServerHandle, start_server_in_background
from rlhf.store import LabelerQuality, LoopStatus, PreferenceStore
from tests.feedback_ui.conftest import NEEDS_CHROMIUM, queue_pairs, shown_pair

pytestmark = NEEDS_CHROMIUM


@pytest.fixture
def server(workspace: Path, store: PreferenceStore) -> Iterator[ServerHandle]:
    queue_pairs(store, 8)
    store.record_loop_status(LoopStatus(1, 10, 100, 2048, 50_000, reward_val_accuracy=0.8))
    with start_server_in_background(workspace, port=0) as handle:
        yield handle


def _labels_done(page: Page, expected: int) -> None:
    page.wait_for_function(f'document.getElementById("labels-done").textContent === "{expected}"', timeout=10_000)


@pytest.mark.slow
def test_label_by_keyboard_and_click_then_undo(server: ServerHandle, store: PreferenceStore, page: Page) -> None:
    _, token = store.add_labeler("alice")
    page.goto(f"{server.url}/#token={token}")
    assert "token" not in page.url  # taken out of the address bar
    query_id = shown_pair(page)
    _labels_done(page, 0)
    assert page.text_content("#loop-round") == "1" and page.text_content("#loop-accuracy") == "80%"

    # The clips play: both report a duration and decode frames as time passes.
    durations = page.eval_on_selector_all("#pair video", "videos => videos.map(v => v.duration)")
    assert len(durations) == 2 and all(d > 0 for d in durations)
    frames_before = page.eval_on_selector_all(
        "#pair video", "videos => videos.map(v => v.getVideoPlaybackQuality().totalVideoFrames)"
    )
    page.wait_for_timeout(700)
    frames_after = page.eval_on_selector_all(
        "#pair video", "videos => videos.map(v => v.getVideoPlaybackQuality().totalVideoFrames)"
    )
    assert all(after > before for before, after in zip(frames_before, frames_after, strict=True))

    answers: list[tuple[int, str]] = []
    for key, side in (("ArrowLeft", "left"), ("ArrowRight", "right"), ("ArrowUp", "tie")):
        page.keyboard.press(key)
        answers.append((query_id, side))
        query_id = shown_pair(page, previous=query_id)
        _labels_done(page, len(answers))
    page.get_by_role("button", name="Can't tell").click()
    answers.append((query_id, "skip"))
    last_answered = query_id
    query_id = shown_pair(page, previous=query_id)
    _labels_done(page, 4)

    page.keyboard.press("z")  # undo the click: its pair comes back
    assert shown_pair(page, previous=query_id) == last_answered
    _labels_done(page, 3)
    assert "Undid your answer" in (page.text_content("#message") or "")
    page.wait_for_function('document.getElementById("labels-done").textContent === "3"')

    effective = store.effective_labels()
    assert [(label.query_id, label.labeler) for label in effective] == [(q, "alice") for q, _ in answers[:3]]
    for label, (query, side) in zip(effective, answers[:3], strict=True):
        assert label.choice == store.get_query(query).choice_for_side(side)  # type: ignore[arg-type]
    records = store.labels()
    assert [r.choice for r in records][-1] == "undo" and len(records) == 5


@pytest.mark.slow
def test_bad_link_and_phone_layout(server: ServerHandle, store: PreferenceStore, page: Page) -> None:
    page.goto(f"{server.url}/#token=not-a-token")
    page.wait_for_selector("#fatal:not([hidden])")
    assert "This link is not valid" in (page.text_content("#fatal") or "")

    _, token = store.add_labeler("bob")
    page.set_viewport_size({"width": 390, "height": 844})
    page.goto(f"{server.url}/?token={token}")  # a link of an older version still works
    shown_pair(page)
    assert "token" not in page.url
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= 390  # no horizontal scrolling on a phone
    for name in ("Left better", "Right better", "Equally good", "Can't tell", "Undo last", "Replay"):
        box = page.get_by_role("button", name=name).bounding_box()
        assert box is not None and box["height"] >= 44 and box["x"] + box["width"] <= 390
    assert page.get_by_label("Playback speed").is_visible()


@pytest.mark.slow
def test_admin_page(server: ServerHandle, store: PreferenceStore, page: Page) -> None:
    dora = store.get_or_create_labeler("dora").id
    quality = LabelerQuality(dora, "dora", 40, 0.81, 0.74, 0.9, estimated_weight=1.25, weight=1.25)
    store.record_labeler_quality([quality])
    store.get_or_create_labeler("erin")
    store.set_labeler_weight("erin", 0.0)
    page.goto(server.admin_url)
    page.wait_for_selector("#cards .card")
    page.fill("#labeler-name", "carol")
    page.get_by_role("button", name="Add labeler").click()
    page.wait_for_selector("#new-labeler code")
    assert (page.text_content("#new-labeler code") or "").startswith(f"{server.url}/#token=")
    page.wait_for_function("() => document.querySelector('#curves .main-svg') !== null", timeout=10_000)  # plotly drew
    # The loop's status from the store: its latest accuracy on a card, its history on the curve (x: labels).
    assert "80%" in (page.text_content("#cards") or "")
    curve = page.evaluate("(() => { const t = document.getElementById('curves').data[0]; return [t.x, t.y]; })()")
    assert curve == [[10], [0.8]]
    assert "carol" in (page.text_content("#labelers") or "")
    # Each labeler's agreement with the model and with peers, and the weight of their labels in training.
    headers = page.eval_on_selector_all("#labelers", "b => [...b[0].closest('table').querySelectorAll('th')]"
                                        ".map(th => th.textContent)")  # fmt: skip
    assert headers[-4:] == ["Agreement with model", "Agreement with peers", "Weight", "Token"]
    rows = page.eval_on_selector_all("#labelers tr", "rows => rows.map(r => [...r.cells].map(c => c.textContent))")
    by_name = {row[0]: row[-4:-1] for row in rows}
    assert by_name["dora"] == ["81%", "74%", "1.25"] and by_name["erin"] == ["–", "–", "0.00 · set by operator"]
    assert "rlhf labelers weight" in (page.text_content("main") or "")

    # A new link for carol, then her access revoked (the page asks first).
    first = store.get_labeler_by_name("carol")
    old_token = (page.text_content("#new-labeler code") or "").rsplit("#token=", 1)[1]
    carol = page.locator("#labelers tr", has_text="carol")
    carol.get_by_role("button", name="New link").click()
    page.wait_for_function("() => document.getElementById('new-labeler').textContent.startsWith('New personal URL')")
    new_token = (page.text_content("#new-labeler code") or "").rsplit("#token=", 1)[1]
    assert new_token != old_token and first is not None
    assert store.labeler_for_token(old_token) is None and store.labeler_for_token(new_token) == first
    page.once("dialog", lambda dialog: dialog.accept())
    carol.get_by_role("button", name="Revoke").click()
    page.wait_for_function("() => document.getElementById('new-labeler').textContent.startsWith('Revoked carol')")
    assert store.labeler_for_token(new_token) is None
    page.wait_for_function(
        "() => [...document.querySelectorAll('#labelers tr')].some(r => r.cells[0].textContent === 'carol'"
        " && r.cells[r.cells.length - 1].textContent.startsWith('revoked'))"
    )


@pytest.mark.slow
def test_api_reference_works_offline(server: ServerHandle, page: Page) -> None:
    """/docs renders Swagger UI from files of this server alone: every other host is unreachable here."""
    elsewhere: list[str] = []

    def only_this_server(route: Route) -> None:
        if route.request.url.startswith(server.url):
            route.continue_()
        else:
            elsewhere.append(route.request.url)
            route.abort()

    page.route("**/*", only_this_server)
    page.goto(f"{server.url}/docs")
    page.wait_for_function("() => document.querySelectorAll('.opblock').length >= 10", timeout=15_000)
    assert "/api/labels" in (page.text_content("#swagger-ui") or "")
    assert elsewhere == []
