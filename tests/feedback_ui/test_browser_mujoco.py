"""A MuJoCo pair on the labeling page in Debian's Chromium: the hopper's clips (drawn from observations, H.264)
play side by side."""

from __future__ import annotations

from pathlib import Path

import pytest
from playwright.sync_api import Page

from feedback_ui.server import start_server_in_background
from rlhf.sample_workspace import build_workspace
from tests.feedback_ui.conftest import NEEDS_CHROMIUM, shown_pair

pytestmark = [NEEDS_CHROMIUM, pytest.mark.slow]


def _frames(page: Page) -> list[int]:
    return page.eval_on_selector_all(
        "#pair video", "videos => videos.map(v => v.getVideoPlaybackQuality().totalVideoFrames)"
    )


def test_hopper_clips_play_side_by_side(tmp_path: Path, page: Page) -> None:
    workspace = tmp_path / "hopper"
    store = build_workspace(workspace, "Hopper-v5", segments=4, queries=2, segment_length=25, seed=0)
    _, token = store.add_labeler("alice")
    store.close()
    with start_server_in_background(workspace, port=0) as server:
        page.goto(f"{server.url}/#token={token}")
        shown_pair(page)
        sizes = page.eval_on_selector_all(
            "#pair video", "videos => videos.map(v => [v.duration, v.videoWidth, v.videoHeight])"
        )
        # 25 steps of Hopper (dt 0.008 s) at its 50 fps play for half a second, at the clips' 320x240.
        assert len(sizes) == 2
        for duration, width, height in sizes:
            assert duration == pytest.approx(0.5, abs=0.1) and (width, height) == (320, 240)
        before = _frames(page)
        page.wait_for_timeout(700)
        after = _frames(page)
        assert all(later > earlier for earlier, later in zip(before, after, strict=True))
