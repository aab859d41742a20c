"""``rlhf serve --workers N``: several server processes on one port over one PostgreSQL store.

uvicorn's supervisor runs the workers; a worker killed mid-load is replaced, and the labels it acknowledged are stored
exactly once. The PostgreSQL tests need ``RLHF_TEST_POSTGRES_URL`` (set by .ci/run) and skip without it.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

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
def test_the_workers_redact_tokens_in_their_access_logs_and_ctrl_c_stops_them(workspace: Path) -> None:
    db_url = postgres_copy(workspace)
    command = [sys.executable, "-m", "rlhf", "serve", "--workspace", str(workspace), "--port", "0"]
    command += ["--workers", "2", "--db-url", db_url, "--log-level", "info"]
    # Its own process group, as a terminal's foreground job: Ctrl-C signals the whole group.
    server = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True
    )
    try:
        assert server.stdout is not None
        first = server.stdout.readline()  # "Labeling service: URL (2 server processes)"
        url = first.split()[2]
        assert first.startswith("Labeling service: http://") and "(2 server processes)" in first, first
        assert _wait_for(lambda: _healthy(url), 60)
        for _ in range(4):
            assert httpx.get(f"{url}/api/health?token=secret-token-123", timeout=30).status_code == 200
    finally:
        os.killpg(server.pid, signal.SIGINT)  # Ctrl-C
        output, _ = server.communicate(timeout=60)
    assert server.returncode == 0, output
    assert output.count("GET /api/health?token=[redacted]") == 4, output
    assert "secret-token-123" not in output
    assert _port_refuses(url)


@NEEDS_POSTGRES
def test_the_store_url_may_come_from_the_environment(workspace: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RLHF_UI_DB_URL", postgres_copy(workspace))
    prepared = prepare_server(ServeConfig(workspace=workspace, port=0, workers=2))
    prepared.sock.close()
    assert prepared.workers == 2


@contextlib.contextmanager
def _refusing_new_connections(url: str) -> Iterator[None]:
    """The database takes no new connection inside the block (those open stay); one held open sets it back."""
    engine = create_engine(url, isolation_level="AUTOCOMMIT")
    database = make_url(url).database
    try:
        with engine.connect() as conn:
            conn.execute(text(f"ALTER DATABASE {database} CONNECTION LIMIT 0"))
            try:
                yield
            finally:
                conn.execute(text(f"ALTER DATABASE {database} CONNECTION LIMIT -1"))
    finally:
        engine.dispose()


@NEEDS_POSTGRES
@pytest.mark.slow
def test_a_worker_replaced_while_the_database_refuses_connections_waits_for_it(workspace: Path) -> None:
    """The replacement of a killed worker cannot open the store (here: no new connection allowed); the supervisor
    must not take that for a broken setup and stop every worker: the other goes on serving, and the replacement
    serves once the database takes connections again."""
    db_url = postgres_copy(workspace)
    with start_server_in_background(workspace, port=0, db_url=db_url, workers=2) as handle:
        victim, survivor = handle.worker_pids()
        with _refusing_new_connections(db_url):
            os.kill(victim, signal.SIGKILL)
            time.sleep(3 * 0.5 + 2.0)  # a replacement spawned, failed to open the store, and waited
            assert handle.process is not None and handle.process.poll() is None  # the supervisor goes on
            assert _alive(survivor)
            assert httpx.get(f"{handle.url}/api/health", timeout=30).status_code == 200
        assert _wait_for(lambda: len(handle.worker_pids()) == 2 and victim not in handle.worker_pids(), 30)


@NEEDS_POSTGRES
@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("unshare") is None, reason="needs root and unshare")
def test_workers_serve_under_a_supervisor_that_is_pid_1(workspace: Path) -> None:
    """As in a container whose entrypoint is `rlhf serve --workers N`: the workers' parent is PID 1."""
    db_url = postgres_copy(workspace)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    command = ["unshare", "--pid", "--fork", "--kill-child", "--mount-proc", sys.executable, "-m", "rlhf", "serve"]
    command += ["--workspace", str(workspace), "--port", str(port), "--workers", "2", "--db-url", db_url]
    command += ["--log-level", "info"]  # the supervisor logs each worker that died
    server = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        assert _wait_for(lambda: _healthy(f"http://127.0.0.1:{port}"), 60), "no worker served"
        time.sleep(1.5)  # the supervisor checks its workers every 0.5 s
    finally:
        server.kill()  # unshare ignores SIGTERM; --kill-child ends the namespace's PID 1, and with it every worker
        _, errors = server.communicate(timeout=60)
    assert "died" not in errors, errors


def _healthy(url: str) -> bool:
    try:
        return httpx.get(f"{url}/api/health", timeout=2).status_code == 200
    except httpx.TransportError:
        return False
