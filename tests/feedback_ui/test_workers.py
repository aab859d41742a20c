"""``rlhf serve --workers N``: several server processes on one port over one PostgreSQL store.

uvicorn's supervisor runs the workers; a worker killed mid-load is replaced, and the labels it acknowledged are stored
exactly once. The PostgreSQL tests need ``RLHF_TEST_POSTGRES_URL`` (set by .ci/run) and skip without it.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from baselines.common.errors import ConfigError
from feedback_ui.server import ServeConfig, prepare_server, start_server_in_background
from rlhf.store import PreferenceStore
from tests.feedback_ui.conftest import POSTGRES_URL, postgres_copy, queue_pairs
from tests.feedback_ui.load import label_concurrently

NEEDS_POSTGRES = pytest.mark.skipif(not POSTGRES_URL, reason="set RLHF_TEST_POSTGRES_URL to run it on PostgreSQL")


@pytest.mark.parametrize(
    ("workers", "db_url", "message"),
    [
        (2, None, r"--workers 2 needs a PostgreSQL store \(--db-url postgresql\+psycopg://"),
        (4, "sqlite:///{workspace}/prefs.sqlite", r"--workers 4 needs a PostgreSQL store"),
        (0, None, r"--workers must be at least 1, not 0"),
    ],
)
def test_several_workers_need_postgresql(workspace: Path, workers: int, db_url: str | None, message: str) -> None:
    url = None if db_url is None else db_url.format(workspace=workspace)
    with pytest.raises(ConfigError, match=message):
        prepare_server(ServeConfig(workspace=workspace, port=0, workers=workers, db_url=url))


def test_the_command_line_refuses_workers_on_sqlite_in_one_line(workspace: Path) -> None:
    command = [sys.executable, "-m", "rlhf", "serve", "--workspace", str(workspace), "--port", "0", "--workers", "2"]
    finished = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert finished.returncode == 2
    lines = finished.stderr.strip().splitlines()
    assert len(lines) == 1 and "--workers 2 needs a PostgreSQL store" in lines[0], finished.stderr


def test_workers_need_their_own_process(workspace: Path) -> None:
    with pytest.raises(ConfigError, match="need mode='process'"):
        start_server_in_background(workspace, port=0, mode="thread", workers=2, db_url="postgresql+psycopg://x@y/z")


def _wait_for(condition: Callable[[], bool], timeout_s: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.1)
    return condition()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"  # not a zombie


@NEEDS_POSTGRES
@pytest.mark.slow
def test_a_worker_killed_mid_load_loses_no_acknowledged_label(workspace: Path) -> None:
    db_url = postgres_copy(workspace)
    with PreferenceStore(db_url) as store:
        queue_pairs(store, 400)
        labelers = {f"labeler-{i}": store.add_labeler(f"labeler-{i}")[1] for i in range(8)}
    with start_server_in_background(workspace, port=0, db_url=db_url, workers=2) as handle:
        workers = handle.worker_pids()
        assert len(workers) == 2 and handle.pid not in workers
        results = []
        load = threading.Thread(
            target=lambda: results.append(label_concurrently(handle.url, labelers, 40, retries=5)), daemon=True
        )
        load.start()
        with PreferenceStore(db_url) as store:
            assert _wait_for(lambda: len(store.labels()) >= 80, 60)
        port = int(handle.url.rsplit(":", 1)[1])
        victim = max(workers, key=lambda pid: _connections(pid, port))
        assert _connections(victim, port) > 0  # it is serving labelers
        os.kill(victim, signal.SIGKILL)  # mid-load
        load.join(120)
        assert not load.is_alive()
        # uvicorn's supervisor replaces the dead worker.
        assert _wait_for(lambda: len(handle.worker_pids()) == 2 and victim not in handle.worker_pids())
        assert httpx.get(f"{handle.url}/api/health").status_code == 200
    result = results[0]
    assert result.errors == [] and result.unanswered == []
    assert len(result.acknowledged) == 8 * 40  # every labeler carried on through the kill
    with PreferenceStore(db_url) as store:
        stored = {label.id: label for label in store.labels()}
        effective = store.effective_labels()
    assert len(stored) == len(result.acknowledged)  # nothing stored that no one was told about
    for ack in result.acknowledged:
        assert ack.label_id in stored, f"acknowledged label {ack.label_id} was lost"
        assert stored[ack.label_id].query_id == ack.query_id and stored[ack.label_id].idempotency_key == ack.key
    assert max(Counter(label.query_id for label in effective).values()) == 1


def _connections(pid: int, port: int) -> int:
    """Established TCP connections to ``port`` held by process ``pid`` (Linux)."""
    established = set()
    for table in ("tcp", "tcp6"):
        for line in Path(f"/proc/net/{table}").read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "01" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                established.add(fields[9])
    held = 0
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        held += target.startswith("socket:[") and target[8:-1] in established
    return held


def _port_refuses(url: str) -> bool:
    host, port = url.removeprefix("http://").split(":")
    with socket.socket() as probe:
        return probe.connect_ex((host, int(port))) != 0


@NEEDS_POSTGRES
@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGKILL])
def test_the_workers_end_with_their_supervisor(workspace: Path, stop: signal.Signals) -> None:
    """SIGTERM: the supervisor stops its workers gracefully. SIGKILL: the workers see their parent die and stop,
    so no orphan keeps serving the port."""
    db_url = postgres_copy(workspace)
    handle = start_server_in_background(workspace, port=0, db_url=db_url, workers=2)
    try:
        workers = handle.worker_pids()
        assert len(workers) == 2
        assert handle.process is not None
        os.kill(handle.pid, stop)
        handle.process.wait(30)
        assert _wait_for(lambda: not any(_alive(pid) for pid in workers)), workers
        assert _port_refuses(handle.url)
    finally:
        handle.stop()
        for pid in workers:
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)


@NEEDS_POSTGRES
def test_the_workers_redact_tokens_in_their_access_logs(workspace: Path) -> None:
    db_url = postgres_copy(workspace)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    command = [sys.executable, "-m", "rlhf", "serve", "--workspace", str(workspace), "--port", str(port)]
    command += ["--workers", "2", "--db-url", db_url, "--log-level", "info"]
    server = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        url = f"http://127.0.0.1:{port}"
        assert _wait_for(lambda: not _port_refuses(url), 60)
        for _ in range(4):
            assert httpx.get(f"{url}/api/health?token=secret-token-123", timeout=30).status_code == 200
    finally:
        server.send_signal(signal.SIGINT)  # Ctrl-C
        output, _ = server.communicate(timeout=60)
    assert server.returncode == 0, output
    assert output.count("GET /api/health?token=[redacted]") == 4, output
    assert "secret-token-123" not in output
