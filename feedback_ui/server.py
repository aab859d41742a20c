"""Starting the labeling service: ``rlhf serve``, ``rlhf labelers-add``, and a background server for the loop.

Everything a user can get wrong is checked before the first request, with a message that says what to do: a
workspace that does not exist or holds no store, a database that does not open, a port in use, clips missing for
pairs in the queue. The listening socket is bound before the app starts, so "port in use" is never a traceback.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import functools
import json
import logging
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import tyro
import uvicorn
from pydantic import SecretStr, ValidationError
from uvicorn.config import STARTUP_FAILURE
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.supervisors.multiprocess import SIGNALS as SUPERVISOR_SIGNALS
from uvicorn.supervisors.multiprocess import Multiprocess

from baselines.common.config import flag
from baselines.common.errors import ConfigError
from feedback_ui.app import create_app
from feedback_ui.service import LabelingService
from feedback_ui.settings import Settings
from rlhf.store import PreferenceStore, UnknownLabelerError
from rlhf.store.engine import store_url

STORE_FILE = "prefs.sqlite"
ADMIN_TOKEN_FILE = "admin_token"
SERVER_FILE = "server.json"
"""Written into the workspace while a server runs: its URL, for ``labelers-add`` and scripts."""
LOG_FILE = "feedback_ui.log"


@dataclass(frozen=True)
class ServeConfig:
    """Serve the labeling page and JSON API for a workspace (the run folder of `rlhf run`)."""

    workspace: Path
    """Run folder holding prefs.sqlite and clips/."""
    host: str = "127.0.0.1"
    """Interface to listen on (0.0.0.0 for every interface)."""
    port: int = 8000
    """TCP port (0: any free port)."""
    db_url: str | None = None
    """SQLAlchemy URL of the preference store (default sqlite:///WORKSPACE/prefs.sqlite)."""
    workers: int = 1
    """Server processes sharing the port (more than 1 needs a PostgreSQL --db-url); a worker that dies is
    replaced."""
    media_dir: Path | None = None
    """Folder of the rendered clips (default WORKSPACE/clips)."""
    task: str | None = None
    """One-line task shown to labelers, kept in the workspace (default: the workspace's, else one per env)."""
    labels_per_pair: int | None = None
    """Labels wanted per pair for the loop's new queries, kept in the workspace (k > 1 measures agreement)."""
    lease_seconds: float | None = None
    """Seconds a served pair stays reserved for its labeler (default 300)."""
    public_url: str | None = None
    """The URL people open, when it is not http://HOST:PORT (behind a reverse proxy, or listening on 0.0.0.0): the
    printed links use it, and requests must name its host (the Host header check)."""
    allowed_hosts: tuple[str, ...] = ()
    """More host names requests may carry in their Host header (besides --public-url's, localhost and --host);
    '*' allows any."""
    allow_missing_clips: bool = False
    """Start even if pairs in the queue have no clip file (they show a 'clip missing' note)."""
    log_level: Literal["critical", "error", "warning", "info", "debug"] = "warning"
    """Server log level (info logs every request)."""
    announce: Literal["text", "json"] = "text"
    """How to print the URLs once listening (json: one line, for start_server_in_background)."""


@dataclass(frozen=True)
class LabelersAddConfig:
    """Add a labeler to a workspace and print their personal labeling URL (the token is shown once)."""

    name: tyro.conf.Positional[str]
    """The labeler's name (unique in the workspace)."""
    workspace: Path
    """Run folder holding prefs.sqlite."""
    db_url: str | None = None
    """SQLAlchemy URL of the preference store (default sqlite:///WORKSPACE/prefs.sqlite)."""
    base_url: str | None = None
    """Server URL for the link (default: the running server's, from WORKSPACE/server.json, else http://127.0.0.1:8000)."""


@dataclass(frozen=True)
class LabelersRevokeConfig:
    """Revoke a labeler's token: their personal URL stops working (their labels stay)."""

    name: tyro.conf.Positional[str]
    """The labeler's name."""
    workspace: Path
    """Run folder holding prefs.sqlite."""
    db_url: str | None = None
    """SQLAlchemy URL of the preference store (default sqlite:///WORKSPACE/prefs.sqlite)."""


@dataclass(frozen=True)
class LabelersRotateConfig:
    """Give a labeler a new token and print their new personal URL (the old one stops working)."""

    name: tyro.conf.Positional[str]
    """The labeler's name."""
    workspace: Path
    """Run folder holding prefs.sqlite."""
    db_url: str | None = None
    """SQLAlchemy URL of the preference store (default sqlite:///WORKSPACE/prefs.sqlite)."""
    base_url: str | None = None
    """Server URL for the link (default: the running server's, from WORKSPACE/server.json, else http://127.0.0.1:8000)."""


_TOKEN_PARAMETER = re.compile(r"(?<![A-Za-z0-9_])(token=)[^&;#\s\"]*", re.IGNORECASE)


class RedactTokens(logging.Filter):
    """Shows ``token=[redacted]`` for token query parameters in access-log lines. The links this service prints
    keep the token in the URL's fragment, which browsers never send; links of older versions sent ``?token=``."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(
                _TOKEN_PARAMETER.sub(r"\1[redacted]", arg) if isinstance(arg, str) else arg for arg in record.args
            )
        return True


def redact_tokens_in_access_log() -> None:
    """Install :class:`RedactTokens` on uvicorn's access log (once)."""
    access = logging.getLogger("uvicorn.access")
    if not any(isinstance(existing, RedactTokens) for existing in access.filters):
        access.addFilter(RedactTokens())


def labeler_url(base_url: str, token: str) -> str:
    """A labeler's personal URL. The token is in the fragment: browsers never send it, so no log records it."""
    return f"{base_url.rstrip('/')}/#token={token}"


def admin_url(base_url: str, token: str) -> str:
    return f"{base_url.rstrip('/')}/admin#token={token}"


def _check_workspace(workspace: Path, db_url: str | None) -> None:
    if db_url is not None and "://" not in db_url:
        raise ConfigError(
            f"--db-url {db_url!r} is not a database URL; use e.g. sqlite:///PATH/prefs.sqlite or "
            "postgresql+psycopg://USER@HOST/DB"
        )
    if not workspace.is_dir():
        raise ConfigError(
            f"workspace {workspace} does not exist; pass the run folder of `rlhf run` (it holds {STORE_FILE})"
        )
    if db_url is None and not (workspace / STORE_FILE).is_file():
        raise ConfigError(
            f"workspace {workspace} holds no preference store ({STORE_FILE}); start `rlhf run --teacher human --out "
            f"{workspace}` first, or pass --db-url"
        )


def workspace_admin_token(workspace: Path) -> str:
    """The workspace's admin token, created (mode 600) on first use."""
    path = workspace / ADMIN_TOKEN_FILE
    if path.is_file():
        token = path.read_text().strip()
        if token:
            return token
    token = secrets.token_urlsafe(32)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as file:
        file.write(token + "\n")
    return token


def bind_socket(host: str, port: int) -> socket.socket:
    """A listening TCP socket, or a ConfigError that says why not (port in use, no such address, privileged)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as error:
        raise ConfigError(f"cannot listen on host {host!r}: {error.strerror}") from error
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
        sock.listen(2048)
    except OSError as error:
        sock.close()
        if error.errno == errno.EADDRINUSE:
            raise ConfigError(
                f"port {port} on {host} is in use (another server?); pick another with --port, or stop that one"
            ) from error
        if error.errno == errno.EACCES:
            raise ConfigError(f"no permission to listen on port {port} of {host}; use a port above 1023") from error
        raise ConfigError(f"cannot listen on {host}:{port}: {error.strerror}") from error
    sock.set_inheritable(True)
    return sock


def make_settings(config: ServeConfig, port: int) -> Settings:
    """Settings from the command line over ``RLHF_UI_*`` variables; a ConfigError for out-of-range values."""
    overrides: dict[str, Any] = {"workspace": config.workspace, "host": config.host, "port": port}
    for name, value in (
        ("db_url", config.db_url),
        ("media_dir", config.media_dir),
        ("task_description", config.task),
        ("labels_per_pair", config.labels_per_pair),
        ("lease_seconds", config.lease_seconds),
        ("public_url", config.public_url),
        ("allowed_hosts", config.allowed_hosts or None),
    ):
        if value is not None:
            overrides[name] = value
    try:
        settings = Settings(**overrides)
        if settings.admin_token is None:
            settings = settings.model_copy(update={"admin_token": SecretStr(workspace_admin_token(config.workspace))})
    except ValidationError as error:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in error.errors())
        raise ConfigError(f"invalid labeling-service settings: {problems}") from error
    return settings


def bounded_http(max_head_bytes: int) -> type[HttpToolsProtocol]:
    """uvicorn's httptools protocol that stops reading a request head (target and headers) past ``max_head_bytes``
    and answers 431: llhttp itself would buffer a header of any size. Counted per received chunk, so the bound
    holds to within one read (at most 256 KiB); the app's :class:`feedback_ui.middleware.HeaderSizeLimit` checks
    the exact size of heads that fit."""
    body = json.dumps({"detail": f"request headers over {max_head_bytes} bytes"}).encode()
    refusal = (
        b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-type: application/json\r\n"
        + f"content-length: {len(body)}\r\nconnection: close\r\n\r\n".encode()
        + body
    )

    class BoundedHttpToolsProtocol(HttpToolsProtocol):
        _head_bytes = 0
        _in_head = True

        def data_received(self, data: bytes) -> None:
            if self.transport.is_closing():
                return
            if self._in_head:
                self._head_bytes += len(data)
            super().data_received(data)
            if self._in_head and self._head_bytes > max_head_bytes and not self.transport.is_closing():
                self.transport.write(refusal)
                self.transport.close()

        def on_headers_complete(self) -> None:
            self._in_head, self._head_bytes = False, 0
            super().on_headers_complete()

        def on_message_complete(self) -> None:
            super().on_message_complete()
            self._in_head, self._head_bytes = True, 0

    return BoundedHttpToolsProtocol


class WorkerConfig(uvicorn.Config):
    """uvicorn's configuration for one of several server processes (``--workers N``).

    uvicorn's supervisor pickles it to each worker it spawns (and to the replacement of a worker that died); the
    worker builds its own app, store connections and protocol class from ``settings`` when it loads, so nothing
    that cannot cross a process boundary is made in the supervisor.
    """

    def __init__(self, settings: Settings, **options: Any) -> None:
        super().__init__("feedback_ui.app:create_app", factory=True, **options)
        self.settings = settings
        self.supervisor_pid = os.getpid()
        self.replacing = False
        """Set once the first workers were spawned: a worker spawned after that replaces one that died."""

    def load(self) -> None:
        _die_with(self.supervisor_pid)
        self.app = functools.partial(create_app, self.settings)
        self.http = bounded_http(self.settings.max_header_bytes)
        try:
            super().load()
        except ConfigError as error:
            logging.getLogger("uvicorn.error").error("feedback_ui: error: %s", error)
            if not self.replacing:  # the first workers: the supervisor stops, `rlhf serve` says why
                sys.exit(STARTUP_FAILURE)
            # A replacement while the database is away (restarting, out of connections): the others go on
            # serving what they can; the supervisor spawns another after this pause.
            time.sleep(REPLACEMENT_RETRY_S)
            sys.exit(1)
        redact_tokens_in_access_log()


REPLACEMENT_RETRY_S = 2.0
"""How long a replacement worker that cannot open the store waits before it exits (and is spawned again)."""


class Supervisor(Multiprocess):
    """uvicorn's supervisor, telling the workers it spawns after the first ones that they are replacements."""

    def __init__(self, config: WorkerConfig, sockets: list[socket.socket]) -> None:
        super().__init__(config, sockets)
        self.worker_config = config

    def init_processes(self) -> None:
        super().init_processes()
        self.worker_config.replacing = True

    @property
    def failed_to_start(self) -> bool:
        """Whether it stopped because a worker could not start."""
        return any(process.exitcode == STARTUP_FAILURE for process in self.processes)


_PR_SET_PDEATHSIG = 1


def _die_with(supervisor_pid: int) -> None:
    """Ask Linux to send SIGTERM to this worker when its supervisor dies, even of SIGKILL (no orphan keeps serving
    the port); elsewhere a no-op."""
    if not sys.platform.startswith("linux"):
        return
    with contextlib.suppress(OSError, AttributeError):
        if ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0) != 0:
            return  # not granted: the worker outlives a killed supervisor, as without this
    if os.getppid() != supervisor_pid:  # the supervisor died before the request took effect (we were adopted)
        sys.exit(0)


@dataclass
class PreparedServer:
    """A bound socket and a checked app, ready to run (in this process, or in ``workers`` processes)."""

    server: uvicorn.Server
    sock: socket.socket
    settings: Settings
    service: LabelingService
    workers: int = 1

    @property
    def url(self) -> str:
        return self.settings.base_url

    def run(self) -> None:
        """Serve until SIGINT/SIGTERM (or ``server.should_exit``); then close the socket."""
        server_file = self.settings.workspace / SERVER_FILE if self.settings.workspace is not None else None
        in_main_thread = threading.current_thread() is threading.main_thread()
        # uvicorn re-raises SIGTERM after its graceful shutdown; exiting through SystemExit lets `finally` clean up.
        # Several workers: uvicorn's supervisor handles the signals, stopping its workers gracefully.
        handled = (signal.SIGTERM,) if self.workers == 1 else tuple(SUPERVISOR_SIGNALS)
        previous = {number: signal.getsignal(number) for number in handled} if in_main_thread else {}
        if in_main_thread and self.workers == 1:
            signal.signal(signal.SIGTERM, _exit_on_sigterm)
        try:
            if server_file is not None:
                server_file.write_text(json.dumps({"url": self.url, "pid": os.getpid()}) + "\n")
            if self.workers > 1:
                config = self.server.config
                assert isinstance(config, WorkerConfig)
                supervisor = Supervisor(config, sockets=[self.sock])
                supervisor.run()
                if supervisor.failed_to_start:
                    raise ConfigError("a server process could not start; its error is in the log above")
            else:
                self.server.run(sockets=[self.sock])
        finally:
            self.sock.close()
            if server_file is not None and _written_by_this_process(server_file):
                with contextlib.suppress(OSError):
                    server_file.unlink()
            for number, handler in previous.items():
                if handler is not None:
                    signal.signal(number, handler)


def _written_by_this_process(server_file: Path) -> bool:
    """Whether server.json still names this process (a second server on the workspace may have written it since)."""
    try:
        return bool(json.loads(server_file.read_text()).get("pid") == os.getpid())
    except (OSError, ValueError, AttributeError):
        return False


def _exit_on_sigterm(_signum: int, _frame: object) -> None:
    raise SystemExit(0)


def prepare_server(config: ServeConfig) -> PreparedServer:
    """Check everything, bind the port and build the app; raises ConfigError with what to do."""
    _check_workspace(config.workspace, config.db_url)
    if not 0 <= config.port <= 65_535:
        raise ConfigError(f"--port must be 0-65535, not {config.port}")
    sock = bind_socket(config.host, config.port)
    try:
        settings = make_settings(config, port=int(sock.getsockname()[1]))
        _check_workers(config.workers, settings.resolved_db_url)
        app = create_app(settings)
        service: LabelingService = app.state.service
        missing = [] if config.allow_missing_clips else service.missing_clips()
        if missing:
            service.close()
            raise ConfigError(
                f"{len(missing)} clip(s) of pairs in the queue are missing from {settings.resolved_media_dir} "
                f"(segments {', '.join(missing[:3])}{', ...' if len(missing) > 3 else ''}); check --media-dir, or "
                f"start with --allow-missing-clips (those pairs then show a 'clip missing' note)"
            )
    except BaseException:
        sock.close()
        raise
    options: dict[str, Any] = {
        "log_level": config.log_level,
        "access_log": config.log_level in ("info", "debug"),
        "timeout_graceful_shutdown": 5,
    }
    uvicorn_config: uvicorn.Config
    if config.workers > 1:
        service.close()  # checked; each worker opens its own connections
        uvicorn_config = WorkerConfig(settings, workers=config.workers, **options)
    else:
        uvicorn_config = uvicorn.Config(app, http=bounded_http(settings.max_header_bytes), **options)
    redact_tokens_in_access_log()  # after uvicorn.Config, which configures its loggers
    return PreparedServer(uvicorn.Server(uvicorn_config), sock, settings, service, workers=config.workers)


def _check_workers(workers: int, db_url: str) -> None:
    if workers < 1:
        raise ConfigError(f"--workers must be at least 1, not {workers}")
    if workers > 1 and store_url(db_url).get_backend_name() != "postgresql":
        raise ConfigError(
            f"--workers {workers} needs a PostgreSQL store (--db-url postgresql+psycopg://USER@HOST/DB): on SQLite one "
            "server process, which commits the labels of many requests together, is faster than several taking "
            "turns at the file's lock"
        )


def run_serve(config: ServeConfig) -> dict[str, Any]:
    """``rlhf serve``: serve until interrupted; returns a summary."""
    prepared = prepare_server(config)
    token = prepared.settings.admin_token.get_secret_value() if prepared.settings.admin_token is not None else ""
    if config.announce == "json":
        print(json.dumps({"event": "listening", "url": prepared.url, "pid": os.getpid()}), flush=True)
    else:
        processes = f" ({config.workers} server processes)" if config.workers > 1 else ""
        print(f"Labeling service: {prepared.url}{processes}", flush=True)
        print(f"Admin page:       {admin_url(prepared.url, token)}", flush=True)
        print(f"Add a labeler:    rlhf labelers-add NAME --workspace {config.workspace}", flush=True)
    prepared.run()
    return {"url": prepared.url, "path": str(config.workspace)}


def serve(workspace: str | os.PathLike[str], host: str = "127.0.0.1", port: int = 8000, **options: Any) -> None:
    """Serve ``workspace`` on ``host:port`` until interrupted (options: the other fields of :class:`ServeConfig`)."""
    run_serve(ServeConfig(workspace=Path(workspace), host=host, port=port, **options))


def run_labelers_add(config: LabelersAddConfig) -> dict[str, Any]:
    """``rlhf labelers-add NAME``: create the labeler, print their URL."""
    _check_workspace(config.workspace, config.db_url)
    store = PreferenceStore(config.db_url or config.workspace / STORE_FILE)
    try:
        labeler_id, token = store.add_labeler(config.name)
    finally:
        store.close()
    base = config.base_url or _running_url(config.workspace) or "http://127.0.0.1:8000"
    url = labeler_url(base, token)
    print(f"{config.name}: {url}", flush=True)
    return {"labeler": config.name, "labeler_id": labeler_id, "url": url, "path": str(config.workspace)}


def run_labelers_revoke(config: LabelersRevokeConfig) -> dict[str, Any]:
    """``rlhf labelers revoke NAME``: remove the labeler's token (running servers refuse it within a second)."""
    _check_workspace(config.workspace, config.db_url)
    store = PreferenceStore(config.db_url or config.workspace / STORE_FILE)
    try:
        labeler = store.revoke_token(config.name)
    except UnknownLabelerError as error:
        raise ConfigError(str(error)) from None
    finally:
        store.close()
    print(f"{labeler.name}: token revoked (their labels stay; `rlhf labelers rotate {labeler.name}` issues a new one)")
    return {"labeler": labeler.name, "labeler_id": labeler.id, "path": str(config.workspace)}


def run_labelers_rotate(config: LabelersRotateConfig) -> dict[str, Any]:
    """``rlhf labelers rotate NAME``: a new token for the labeler; prints their new URL."""
    _check_workspace(config.workspace, config.db_url)
    store = PreferenceStore(config.db_url or config.workspace / STORE_FILE)
    try:
        labeler, token = store.rotate_token(config.name)
    except UnknownLabelerError as error:
        raise ConfigError(str(error)) from None
    finally:
        store.close()
    base = config.base_url or _running_url(config.workspace) or "http://127.0.0.1:8000"
    url = labeler_url(base, token)
    print(f"{labeler.name}: {url}", flush=True)
    return {"labeler": labeler.name, "labeler_id": labeler.id, "url": url, "path": str(config.workspace)}


def _running_url(workspace: Path) -> str | None:
    """The URL in WORKSPACE/server.json if the server that wrote it still runs; a file left by a server that was
    killed (kill -9, power loss) is removed."""
    path = workspace / SERVER_FILE
    try:
        record = json.loads(path.read_text())
        url, pid = record.get("url"), record.get("pid")
    except (OSError, ValueError, AttributeError):
        return None
    if not isinstance(pid, int) or not _process_alive(pid):
        with contextlib.suppress(OSError):
            path.unlink()
        return None
    return url if isinstance(url, str) else None


def _process_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True


# --------------------------------------------------------------------------------------------------- background


class ServerHandle:
    """A labeling server running beside the caller (a subprocess or a thread); ``stop()`` ends it."""

    def __init__(
        self,
        url: str,
        admin_token: str,
        process: subprocess.Popen[bytes] | None = None,
        thread: threading.Thread | None = None,
        server: uvicorn.Server | None = None,
    ) -> None:
        self.url = url
        self.admin_token = admin_token
        self.process = process
        self._thread = thread
        self._server = server

    @property
    def admin_url(self) -> str:
        return admin_url(self.url, self.admin_token)

    @property
    def pid(self) -> int:
        return self.process.pid if self.process is not None else os.getpid()

    def worker_pids(self) -> list[int]:
        """The processes serving requests: with ``workers > 1`` the supervisor's workers (Linux; read from /proc),
        else the server process itself."""
        try:
            children = Path(f"/proc/{self.pid}/task/{self.pid}/children").read_text().split()
        except OSError:
            return [self.pid]
        workers = []
        for child in map(int, children):
            with contextlib.suppress(OSError):
                if b"multiprocessing.spawn" in Path(f"/proc/{child}/cmdline").read_bytes():  # not its resource tracker
                    workers.append(child)
        return workers or [self.pid]

    def stop(self, timeout_s: float = 10.0) -> None:
        """Graceful stop (SIGTERM for a subprocess), then SIGKILL after ``timeout_s``. Idempotent."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self._server is not None and self._thread is not None:
            self._server.should_exit = True
            self._thread.join(timeout_s)

    def __enter__(self) -> ServerHandle:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def wait_healthy(url: str, timeout_s: float, process: subprocess.Popen[bytes] | None = None) -> None:
    """Poll ``GET /api/health`` until it answers 200; ConfigError on timeout or if ``process`` exits."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with urllib.request.urlopen(f"{url}/api/health", timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        if process is not None and process.poll() is not None:
            raise ConfigError(f"the labeling server exited with code {process.returncode} before it answered")
        if time.monotonic() > deadline:
            raise ConfigError(f"the labeling server at {url} did not answer within {timeout_s:.0f} s")
        time.sleep(0.05)


def start_server_in_background(
    workspace: str | os.PathLike[str],
    host: str = "127.0.0.1",
    port: int = 8000,
    mode: Literal["process", "thread"] = "process",
    timeout_s: float = 60.0,
    env: dict[str, str] | None = None,
    **options: Any,
) -> ServerHandle:
    """Start the labeling service for ``workspace`` and return once it answers.

    ``process`` (default) runs ``python -m feedback_ui`` as a child process with its own interpreter, so the
    caller's training loop never delays a labeler's request; its log goes to WORKSPACE/feedback_ui.log. ``thread``
    runs uvicorn on a thread of this process (tests, notebooks).

    Args:
        workspace: the run folder (holding prefs.sqlite).
        host: interface to listen on.
        port: TCP port; 0 picks a free one (read it from ``handle.url``).
        mode: ``process`` or ``thread``.
        timeout_s: how long to wait for the server to answer.
        env: extra environment variables for the child process (e.g. ``RLHF_UI_ADMIN_TOKEN``).
        **options: other :class:`ServeConfig` fields (``task``, ``labels_per_pair``, ``lease_seconds``, ...).

    Raises:
        ConfigError: the same startup checks as ``rlhf serve`` (the child's message is passed on).
    """
    config = ServeConfig(workspace=Path(workspace), host=host, port=port, announce="json", **options)
    if mode == "thread" and config.workers > 1:
        raise ConfigError("several server processes (workers > 1) need mode='process'")
    if mode == "thread":
        prepared = prepare_server(config)
        thread = threading.Thread(target=prepared.run, name="feedback-ui", daemon=True)
        thread.start()
        wait_healthy(prepared.url, timeout_s)
        token = prepared.settings.admin_token
        return ServerHandle(
            prepared.url, token.get_secret_value() if token else "", thread=thread, server=prepared.server
        )
    _check_workspace(config.workspace, config.db_url)
    command = [sys.executable, "-m", "feedback_ui", *_flags(config)]
    log_path = config.workspace / LOG_FILE
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            command,
            stdout=subprocess.PIPE,
            stderr=log,
            stdin=subprocess.DEVNULL,
            env={**os.environ, **(env or {})},
        )
    announced = _read_announcement(process, timeout_s)
    if announced is None:
        process.kill()
        process.wait()
        raise ConfigError(f"the labeling server did not start: {_last_error(log_path)}")
    # Keep draining stdout so a chatty child can never block on a full pipe.
    assert process.stdout is not None
    threading.Thread(target=process.stdout.read, name="feedback-ui-stdout", daemon=True).start()
    try:
        wait_healthy(announced, timeout_s, process)
    except ConfigError:
        process.kill()
        process.wait()
        raise
    admin = (env or {}).get("RLHF_UI_ADMIN_TOKEN") or os.environ.get("RLHF_UI_ADMIN_TOKEN")
    return ServerHandle(announced, admin or workspace_admin_token(config.workspace), process=process)


def _flags(config: ServeConfig) -> list[str]:
    flags = []
    for name, value in vars(config).items():
        if value is None or value is False or value == ():
            continue
        if isinstance(value, tuple):
            flags.extend([flag(name), *map(str, value)])
            continue
        flags.extend([flag(name)] if value is True else [flag(name), str(value)])
    return flags


def _read_announcement(process: subprocess.Popen[bytes], timeout_s: float) -> str | None:
    """The URL from the child's JSON 'listening' line, or None if it exits or stays silent."""
    result: list[str] = []

    def read() -> None:
        assert process.stdout is not None
        for raw in process.stdout:
            with contextlib.suppress(ValueError):
                message = json.loads(raw)
                if isinstance(message, dict) and message.get("event") == "listening":
                    result.append(str(message["url"]))
                    return

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    reader.join(timeout_s)
    return result[0] if result else None


def _last_error(log_path: Path) -> str:
    try:
        lines = [line.strip() for line in log_path.read_text(errors="replace").splitlines() if line.strip()]
    except OSError:
        return f"no log at {log_path}"
    errors = [line for line in lines if "error:" in line.lower()]
    return (errors or lines or [f"see {log_path}"])[-1]
