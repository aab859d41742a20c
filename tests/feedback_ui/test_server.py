"""Startup: clear errors for a missing workspace, a database that does not open, a port in use, missing clips;
`labelers-add`; the background server for the loop (a subprocess, or a thread)."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from baselines.common.errors import ConfigError
from feedback_ui.server import (
    ADMIN_TOKEN_FILE,
    LabelersAddConfig,
    ServeConfig,
    prepare_server,
    run_labelers_add,
    start_server_in_background,
)
from rlhf.store import PreferenceStore
from tests.feedback_ui.conftest import bearer, queue_pairs


def test_missing_workspace(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"workspace .*nowhere does not exist"):
        prepare_server(ServeConfig(workspace=tmp_path / "nowhere", port=0))


def test_workspace_without_a_store(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"holds no preference store \(prefs.sqlite\); start `rlhf run"):
        prepare_server(ServeConfig(workspace=tmp_path, port=0))


@pytest.mark.parametrize(
    ("db_url", "message"),
    [
        ("sqlite:////nonexistent-dir/prefs.sqlite", "directory /nonexistent-dir does not exist"),
        ("postgresql+nosuchdriver://user@127.0.0.1:1/db", "cannot open the preference store"),
        ("not a url", "is not a database URL"),
        ("sqlite:///{tmp}/garbage.sqlite", "file is not a database"),
    ],
)
def test_database_that_does_not_open(tmp_path: Path, db_url: str, message: str) -> None:
    (tmp_path / "garbage.sqlite").write_bytes(b"this is not an SQLite file" * 100)
    with pytest.raises(ConfigError, match=message):
        prepare_server(ServeConfig(workspace=tmp_path, port=0, db_url=db_url.format(tmp=tmp_path)))


def test_port_in_use(workspace: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(ConfigError, match=f"port {port} on 127.0.0.1 is in use"):
            prepare_server(ServeConfig(workspace=workspace, port=port))


def test_bad_settings_values(workspace: Path) -> None:
    with pytest.raises(ConfigError, match="lease_seconds"):
        prepare_server(ServeConfig(workspace=workspace, port=0, lease_seconds=-1))


def test_missing_clip_file(workspace: Path, store: PreferenceStore) -> None:
    queue_pairs(store, 2)
    victim = store.get_query(1).segment_a
    (workspace / "clips" / f"{victim}.mp4").unlink()
    with pytest.raises(ConfigError, match=rf"1 clip\(s\) of pairs in the queue are missing .*{victim}"):
        prepare_server(ServeConfig(workspace=workspace, port=0))
    prepared = prepare_server(ServeConfig(workspace=workspace, port=0, allow_missing_clips=True))
    prepared.sock.close()
    prepared.service.close()


def test_labelers_add_prints_a_personal_url(workspace: Path, capsys: pytest.CaptureFixture[str]) -> None:
    result = run_labelers_add(LabelersAddConfig(name="alice", workspace=workspace))
    printed = capsys.readouterr().out.strip()
    assert printed == f"alice: {result['url']}"
    assert result["url"].startswith("http://127.0.0.1:8000/#token=")
    token = result["url"].split("token=")[1]
    with PreferenceStore(workspace / "prefs.sqlite") as store:
        labeler = store.labeler_for_token(token)
        assert labeler is not None and labeler.name == "alice"
    with pytest.raises(ConfigError, match="already exists"):
        run_labelers_add(LabelersAddConfig(name="alice", workspace=workspace))


def test_background_process_server(workspace: Path, store: PreferenceStore) -> None:
    queue_pairs(store, 3)
    _, token = store.add_labeler("alice")
    with start_server_in_background(workspace, port=0, task="prefer upright") as handle:
        assert handle.process is not None and handle.pid != 0
        assert json.loads((workspace / "server.json").read_text())["url"] == handle.url
        pair = httpx.get(f"{handle.url}/api/queries/next", headers=bearer(token)).json()["pair"]
        assert pair is not None
        admin = httpx.get(f"{handle.url}/api/admin/stats", headers=bearer(handle.admin_token))
        assert admin.status_code == 200 and admin.json()["task"] == "prefer upright"
        assert handle.admin_token == (workspace / ADMIN_TOKEN_FILE).read_text().strip()
        # labelers-add finds the running server's URL.
        url = run_labelers_add(LabelersAddConfig(name="bob", workspace=workspace))["url"]
        assert url.startswith(f"{handle.url}/#token=")
    assert handle.process.returncode == 0  # SIGTERM: graceful
    assert not (workspace / "server.json").exists()


def test_background_process_reports_startup_errors(workspace: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(ConfigError, match=f"did not start: feedback_ui: error: port {port} on 127.0.0.1 is in use"):
            start_server_in_background(workspace, port=port, timeout_s=30)


def test_background_thread_server(workspace: Path) -> None:
    with start_server_in_background(workspace, port=0, mode="thread") as handle:
        assert httpx.get(f"{handle.url}/api/health").json()["status"] == "ok"
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{handle.url}/api/health")


def test_module_entry_point_prints_one_line_errors(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "feedback_ui", "--workspace", str(tmp_path / "nope"), "--port", "0"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"feedback_ui: error: workspace {tmp_path / 'nope'} does not exist; pass the run folder of `rlhf run` "
        "(it holds prefs.sqlite)"
    ]


def test_server_file_of_a_killed_server_is_recognised_as_stale(workspace: Path) -> None:
    handle = start_server_in_background(workspace, port=0)
    assert handle.process is not None
    handle.process.kill()  # kill -9: no cleanup runs
    handle.process.wait()
    assert (workspace / "server.json").exists()
    url = run_labelers_add(LabelersAddConfig(name="carol", workspace=workspace))["url"]
    assert url.startswith("http://127.0.0.1:8000/#token=")  # not the dead server's URL
    assert not (workspace / "server.json").exists()


def test_a_server_leaving_keeps_the_server_file_of_another(workspace: Path) -> None:
    first = start_server_in_background(workspace, port=0)
    with start_server_in_background(workspace, port=0) as second:
        first.stop()  # the first one leaves while the second, which wrote server.json last, still runs
        assert json.loads((workspace / "server.json").read_text())["url"] == second.url
        url = run_labelers_add(LabelersAddConfig(name="dan", workspace=workspace))["url"]
        assert url.startswith(f"{second.url}/#token=")
    assert not (workspace / "server.json").exists()


@pytest.mark.parametrize(
    ("media", "message"),
    [("prefs.sqlite", "is a file, not a folder of clips"), ("nowhere", "does not exist; pass the folder")],
)
def test_a_media_dir_that_is_no_folder_is_refused(workspace: Path, media: str, message: str) -> None:
    command = ["serve", "--workspace", str(workspace), "--port", "0", "--media-dir", str(workspace / media)]
    # A subprocess with a deadline: a server that accepted the folder would serve until stopped.
    result = subprocess.run(
        [sys.executable, "-m", "rlhf.cli", *command], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 2, result.stderr
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1
