"""Fixtures: a workspace of real CartPole segments with rendered clips (built once, copied per test), and a
FastAPI TestClient over a real SQLite file."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from feedback_ui.app import create_app
from feedback_ui.settings import Settings
from rlhf.sample_workspace import add_random_queries, build_workspace
from rlhf.store import PreferenceStore

ADMIN_TOKEN = "admin-token-for-tests"
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
