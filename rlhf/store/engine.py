"""Where a store lives and how it talks to its database: URLs and paths, engines with SQLite's settings, and
transactions (one per store call, or one for a batch of calls).

SQLite runs in WAL mode with ``synchronous=FULL``: every commit fsyncs the write-ahead log before it returns, so an
acknowledged label survives a process crash *and* a power loss (``NORMAL`` only fsyncs at checkpoints). SQLite write
transactions start with ``BEGIN IMMEDIATE``: the writer lock is taken up front and waited for with ``busy_timeout``,
so a read-then-write never fails halfway with ``SQLITE_BUSY``; reads use deferred transactions and never block
writers (WAL).

A server database's pooled connection is checked (one round trip) only when it comes back to work after more than
:data:`PING_AFTER_IDLE_S` idle, not on every checkout: under load the check would be one of the few round trips a
label costs, and a connection that was in use a moment ago is alive. A connection that breaks anyway (the server
restarted within that second) fails its one statement; SQLAlchemy then replaces the whole pool.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

from sqlalchemy import create_engine, event
from sqlalchemy.engine import URL, Connection, Engine, make_url
from sqlalchemy.exc import ArgumentError, DisconnectionError, NoSuchModuleError
from sqlalchemy.pool import StaticPool

from baselines.common.errors import ConfigError
from rlhf.store.records import StoreError

Synchronous = Literal["FULL", "NORMAL"]
_WRITE_OPTION = "rlhf_write_transaction"
PING_AFTER_IDLE_S = 1.0
"""A server database's pooled connection idle longer than this is pinged before it is used again."""


def _sqlite_url(url_or_path: str | os.PathLike[str]) -> str:
    text = os.fspath(url_or_path)
    if "://" in text:
        return text
    return "sqlite:///" + str(Path(text).expanduser().resolve())


def store_url(url_or_path: str | os.PathLike[str]) -> URL:
    """The SQLAlchemy URL of a store location: a URL, or a file path meaning ``sqlite:///PATH``.

    Raises:
        ConfigError: it is neither.
    """
    raw = _sqlite_url(url_or_path)
    try:
        return make_url(raw)
    except (ArgumentError, ValueError) as error:
        raise ConfigError(f"{raw!r} is not a database URL or path: {error}") from error


def sqlite_file(url_or_path: str | os.PathLike[str]) -> Path | None:
    """The database file a store location names when it is SQLite (a path or a ``sqlite:///`` URL), else None."""
    try:
        url = make_url(_sqlite_url(url_or_path))
    except (ArgumentError, ValueError):
        return None  # PreferenceStore says what is wrong with it
    database = url.database
    return Path(database) if url.drivername.startswith("sqlite") and database and database != ":memory:" else None


def open_engine(url: URL, busy_timeout_s: float, synchronous: Synchronous) -> Engine:
    """An engine for ``url``; on SQLite with the store's pragmas and ``BEGIN IMMEDIATE`` for write transactions.

    Raises:
        ConfigError: unknown driver, a driver that is not installed, or a SQLite file in a missing directory.
    """
    where = url.render_as_string(hide_password=True)
    if synchronous not in ("FULL", "NORMAL"):
        raise ConfigError(f"sqlite_synchronous must be FULL or NORMAL, not {synchronous!r}")
    try:
        if url.get_backend_name() != "sqlite":
            engine = create_engine(url)
            _ping_when_idle(engine)
            return engine
        database = url.database
        if not database or database == ":memory:":
            # One shared connection, otherwise each connection would see its own empty in-memory database.
            engine = create_engine(url, poolclass=StaticPool, connect_args={"check_same_thread": False})
        else:
            if not database.startswith("file:"):
                directory = Path(database).expanduser().resolve().parent
                if not directory.is_dir():
                    raise ConfigError(
                        f"cannot open the preference store at {where}: directory {directory} does not exist"
                    )
            engine = create_engine(url)
    except (ArgumentError, NoSuchModuleError, ImportError) as error:
        raise ConfigError(f"cannot open the preference store at {where}: {error}") from error

    timeout_ms = int(busy_timeout_s * 1000)

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy's "begin" event below emit BEGIN, instead of pysqlite's own implicit transactions.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute(f"PRAGMA busy_timeout = {timeout_ms}")
        cursor.execute("PRAGMA foreign_keys = ON")
        if database and database != ":memory:":
            _enter_wal(cursor, busy_timeout_s)
        cursor.execute(f"PRAGMA synchronous = {synchronous}")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        # IMMEDIATE takes the writer lock up front, so a read-then-write transaction never hits SQLITE_BUSY
        # midway; read-only transactions stay deferred and never block anyone under WAL.
        conn.exec_driver_sql("BEGIN IMMEDIATE" if conn.get_execution_options().get(_WRITE_OPTION) else "BEGIN")

    return engine


def _enter_wal(cursor: Any, busy_timeout_s: float) -> None:
    """Put the database in WAL mode (a no-op when it already is), retrying while another connection holds a lock.

    Switching a new file to WAL needs an exclusive lock, and SQLite answers ``database is locked`` at once, without
    its busy handler, when another process is opening the same new file; so the retries wait here instead, up to
    the store's busy timeout.
    """
    deadline = time.monotonic() + busy_timeout_s
    delay_s = 0.002
    while True:
        try:
            cursor.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as error:
            busy = "locked" in str(error) or "busy" in str(error)
            if not busy or time.monotonic() + delay_s > deadline:
                raise
        time.sleep(delay_s)
        delay_s = min(2 * delay_s, 0.05)


def _ping_when_idle(engine: Engine) -> None:
    """Check a pooled connection before use when it has been idle for more than :data:`PING_AFTER_IDLE_S` (a dead
    one is replaced by a new one, as ``pool_pre_ping`` does on every checkout)."""

    @event.listens_for(engine, "checkin")
    def _on_checkin(_dbapi_connection: Any, record: Any) -> None:
        record.info["rlhf_idle_since"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _on_checkout(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        idle_since = record.info.get("rlhf_idle_since")
        if idle_since is None or time.monotonic() - idle_since <= PING_AFTER_IDLE_S:
            return
        try:
            alive = engine.dialect.do_ping(dbapi_connection)
        except Exception as error:  # the pool discards this connection and checks out another
            raise DisconnectionError(f"a pooled connection is dead: {error}") from error
        if not alive:
            raise DisconnectionError("a pooled connection is dead")


class Transactions:
    """Transactions on one engine: one per call, or, inside :meth:`batch` on this thread, savepoints of the
    batch's one transaction."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._batch = threading.local()

    @contextmanager
    def __call__(self, write: bool = False) -> Iterator[Connection]:
        """A connection in a transaction (``write``: one that takes SQLite's writer lock up front)."""
        batch: Connection | None = getattr(self._batch, "conn", None)
        if batch is not None:
            # Inside batch(): join its transaction; a savepoint undoes just this call's writes if it raises. Plain
            # SQL, because SQLAlchemy's begin_nested() compiles its SAVEPOINT afresh every time.
            depth = self._batch.depth = self._batch.depth + 1
            savepoint = f"rlhf_call_{depth}"
            batch.exec_driver_sql(f"SAVEPOINT {savepoint}")
            try:
                yield batch
            except BaseException:
                batch.exec_driver_sql(f"ROLLBACK TO SAVEPOINT {savepoint}")
                batch.exec_driver_sql(f"RELEASE SAVEPOINT {savepoint}")
                raise
            finally:
                self._batch.depth = depth - 1
            batch.exec_driver_sql(f"RELEASE SAVEPOINT {savepoint}")
            return
        with self.engine.connect() as conn:
            if write:
                conn.execution_options(**{_WRITE_OPTION: True})
            with conn.begin():
                yield conn

    @contextmanager
    def autocommit(self) -> Iterator[Connection]:
        """A connection on which each statement commits on its own, with no BEGIN and COMMIT round trips (for a
        call that is one statement)."""
        with self.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            yield conn

    @contextmanager
    def batch(self) -> Iterator[None]:
        """Run the transactions opened on this thread inside the block as one write transaction.

        Raises:
            StoreError: batches do not nest.
        """
        if getattr(self._batch, "conn", None) is not None:
            raise StoreError("store batches do not nest")
        with self.engine.connect() as conn:
            conn.execution_options(**{_WRITE_OPTION: True})
            with conn.begin():
                self._batch.conn, self._batch.depth = conn, 0
                try:
                    yield
                finally:
                    self._batch.conn = None
