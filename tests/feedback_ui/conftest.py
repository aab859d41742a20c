"""Fixtures: a workspace of real CartPole segments with rendered clips (built once, copied per test), a FastAPI
TestClient over a real SQLite file, and a page in Debian's Chromium (headless, driven by Playwright)."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from playwright.sync_api import Page, sync_playwright
from sqlalchemy import create_engine

from feedback_ui.app import create_app
from feedback_ui.settings import Settings
from rlhf.sample_workspace import add_random_queries, build_workspace
from rlhf.store import PreferenceStore
from rlhf.store.schema import metadata

ADMIN_TOKEN = "admin-token-for-tests"
POSTGRES_URL = os.environ.get("RLHF_TEST_POSTGRES_URL", "")
"""A PostgreSQL database the tests may wipe (set by .ci/run); the PostgreSQL tests skip without it."""
SEGMENT_LENGTH = 25


@pytest.fixture(scope="session")
def workspace_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """12 CartPole segments (random policy, padded after episode ends) with clips; no queries."""
    path = tmp_path_factory.mktemp("template") / "workspace"
    store = build_workspace(path, "CartPole-v1", segments=12, queries=0, segment_length=SEGMENT_LENGTH, seed=0)
    store.close()
    return path


@pytest.fixture
def workspace(workspace_template: Path, tmp_path: Path) -> Path:
    """A private copy of the template workspace."""
    path = tmp_path / "workspace"
    shutil.copytree(workspace_template, path)
    return path


@pytest.fixture
def store(workspace: Path) -> Iterator[PreferenceStore]:
    opened = PreferenceStore(workspace / "prefs.sqlite")
    yield opened
    opened.close()


def queue_pairs(store: PreferenceStore, count: int, labels_wanted: int = 1, seed: int = 0) -> list[int]:
    """Queue ``count`` random pairs of the workspace's segments."""
    return add_random_queries(store, store.segment_ids(), count, np.random.default_rng(seed), labels_wanted)


def postgres_copy(workspace: Path) -> str:
    """A fresh PostgreSQL store (tables dropped) holding the workspace's segments and clip paths."""
    engine = create_engine(POSTGRES_URL)
    metadata.drop_all(engine)
    engine.dispose()
    with PreferenceStore(workspace / "prefs.sqlite") as source, PreferenceStore(POSTGRES_URL) as target:
        binding = source.env()
        assert binding is not None
        target.bind_env(binding.env_id, binding.obs_shape, binding.action_spec, binding.segment_length)
        segment_ids = source.segment_ids()
        target.add_segments(source.get_segments(segment_ids))
        for segment_id in segment_ids:
            target.set_clip_path(segment_id, source.get_clip_path(segment_id))
    return POSTGRES_URL


def make_settings(workspace: Path, **overrides: object) -> Settings:
    """Settings for a TestClient: its requests carry ``Host: testserver``."""
    values: dict[str, object] = {
        "workspace": workspace,
        "admin_token": ADMIN_TOKEN,
        "allowed_hosts": ("testserver",),
        **overrides,
    }
    return Settings.model_validate(values)


@pytest.fixture
def client(workspace: Path) -> Iterator[TestClient]:
    with TestClient(create_app(make_settings(workspace))) as test_client:
        yield test_client


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


CHROMIUM = Path("/usr/bin/chromium")
NEEDS_CHROMIUM = pytest.mark.skipif(
    not CHROMIUM.exists() and not os.environ.get("CI"),
    reason="Debian's chromium is not installed (apt-get install chromium); CI installs it",
)
"""Mark of the browser tests' modules (``pytestmark = NEEDS_CHROMIUM``)."""
LAUNCH_ARGS = ["--no-sandbox", "--headless", "--disable-gpu", "--disable-background-networking"]


@pytest.fixture
def page() -> Iterator[Page]:
    """A Chromium page; the test fails if anything on it broke the service's Content-Security-Policy."""
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=LAUNCH_ARGS)
        # Tall enough that both clips are on screen: Chromium pauses muted autoplay videos that are off-screen.
        opened = browser.new_page(viewport={"width": 1280, "height": 1000})
        violations: list[str] = []
        opened.on(
            "console", lambda message: violations.append(message.text) if "Content Security" in message.text else None
        )
        yield opened
        browser.close()
    assert violations == []


def shown_pair(page: Page, previous: int | None = None) -> int:
    """Wait for a pair other than ``previous`` to be shown and answerable on the labeling page; return its id."""
    page.wait_for_function(
        """previous => {
            const pair = document.getElementById("pair");
            const ready = !document.querySelector('.choices button[data-side="left"]').disabled;
            return !pair.hidden && ready && Number(pair.dataset.queryId) !== previous;
        }""",
        arg=previous if previous is not None else -1,
        timeout=15_000,
    )
    return int(page.get_attribute("#pair", "data-query-id") or "0")
