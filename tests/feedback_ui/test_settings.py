"""Settings: defaults from the workspace, RLHF_UI_ variables, the cached dependency that create_app overrides."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError

from feedback_ui.app import create_app
from feedback_ui.settings import Settings, get_settings
from tests.feedback_ui.conftest import make_settings


def test_workspace_defaults(tmp_path: Path) -> None:
    settings = Settings(workspace=tmp_path)
    assert settings.resolved_db_url == f"sqlite:///{tmp_path.resolve()}/prefs.sqlite"
    assert settings.resolved_media_dir == tmp_path / "clips"
    assert settings.base_url == "http://127.0.0.1:8000"
    assert Settings(workspace=tmp_path, host="::1", port=9).base_url == "http://[::1]:9"


def test_environment_variables(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RLHF_UI_WORKSPACE", str(tmp_path))
    monkeypatch.setenv("RLHF_UI_ADMIN_TOKEN", "secret")
    monkeypatch.setenv("RLHF_UI_LEASE_SECONDS", "42")
    monkeypatch.setenv("RLHF_UI_DB_URL", "sqlite:///elsewhere.sqlite")
    settings = Settings()
    assert settings.workspace == tmp_path and settings.lease_seconds == 42
    assert settings.admin_token is not None and settings.admin_token.get_secret_value() == "secret"
    assert "secret" not in repr(settings)
    assert settings.resolved_db_url == "sqlite:///elsewhere.sqlite"
    assert Settings(lease_seconds=7).lease_seconds == 7  # arguments win over the environment


def test_out_of_range_values_are_refused() -> None:
    with pytest.raises(ValidationError, match="lease_seconds"):
        Settings(lease_seconds=0)
    with pytest.raises(ValidationError, match="labels_per_pair"):
        Settings(labels_per_pair=0)


def test_create_app_uses_the_settings_given_else_the_cached_environment_ones(
    workspace: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = make_settings(workspace, task_description="prefer upright")
    app = create_app(settings)
    assert app.state.settings is settings
    assert app.dependency_overrides == {}  # any override makes FastAPI rebuild dependencies on every request
    get_settings.cache_clear()
    monkeypatch.setenv("RLHF_UI_WORKSPACE", str(workspace))
    monkeypatch.setenv("RLHF_UI_ADMIN_TOKEN", "from-env")
    monkeypatch.setenv("RLHF_UI_ALLOWED_HOSTS", '["testserver"]')
    try:
        from_env = create_app()
        assert from_env.state.settings is get_settings() and get_settings().workspace == workspace
        with TestClient(from_env) as client:
            assert client.get("/api/admin/stats", headers={"Authorization": "Bearer from-env"}).status_code == 200
    finally:
        get_settings.cache_clear()
