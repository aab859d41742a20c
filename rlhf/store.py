"""The preference store: segments, queries, labels and labelers in one SQL database (SQLite by default).

The RLHF loop writes segments and queries; labelers (people through the labeling service, or simulated teachers)
lease queries and append labels; reward training reads the effective labels back. Every public method is one
transaction (or one savepoint of a :meth:`PreferenceStore.batch`), so several threads, processes or server machines
can share one store.

Design choices, at the points where they matter:

* **Durability.** SQLite runs in WAL mode with ``synchronous=FULL``: every commit fsyncs the write-ahead log before
  it returns, so an acknowledged label survives a process crash *and* a power loss. ``NORMAL`` would only fsync at
  checkpoints and could lose the last commits on power loss; one fsync per label costs a few milliseconds, far below
  the pace of human labeling. Bulk writes (segments, queries, teacher labels) are batched into one transaction;
  a server answering many labelers runs their calls in :meth:`PreferenceStore.batch` (group commit: one fsync for
  all the writes that waited), and simulated-teacher runs may opt into ``sqlite_synchronous="NORMAL"``.
* **The queue.** Each query keeps ``labels_done`` (its effective answers, updated by answers and undos), and a
  partial index holds the open queries (``labels_done < labels_wanted``) in serving order: leasing reads a few index
  entries whatever the number of answered queries.
* **Write serialization.** SQLite write transactions start with ``BEGIN IMMEDIATE`` (the writer lock is taken
  up front and waited for with ``busy_timeout``), so a read-then-write never fails halfway with ``SQLITE_BUSY``.
  Reads use plain deferred transactions and never block writers (WAL). On PostgreSQL the row checks that must not
  race (one answer per labeler and query, one undo at a time) lock their row with ``SELECT ... FOR UPDATE``.
* **Leases.** :meth:`PreferenceStore.lease_next` picks a candidate, then claims it with a conditional
  ``UPDATE ... WHERE <lease is free>`` and checks the row count; a lost race retries with the next candidate. This
  optimistic claim is correct on SQLite and on PostgreSQL under READ COMMITTED. One labeler holds a query at a time;
  a pair that wants ``k > 1`` labels is served to ``k`` different labelers one after another.
* **Append-only labels.** Labels are never updated or deleted. Undo appends a record (choice ``"undo"``) whose
  ``supersedes`` names the voided label; the *effective* labels are the answers that no record supersedes.
* **Arrays.** Segment arrays are stored as ``np.save`` bytes (dtype and shape in the header, never pickles),
  zlib-compressed, so they round-trip exactly.
* **Time.** Timestamps are float Unix seconds from an injectable ``clock`` (tests control lease expiry with it).
  Several server machines must keep their clocks in sync (NTP) for leases to expire on time.

This module imports numpy, gymnasium, SQLAlchemy and the standard library (and :mod:`rlhf.segments`), never
torch: the labeling service uses it unchanged.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
import re
import secrets
import threading
import time
import zlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import gymnasium as gym
import numpy as np
from sqlalchemy import (
    Boolean,
    CheckConstraint,
    Column,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    and_,
    bindparam,
    case,
    create_engine,
    event,
    exists,
    func,
    insert,
    inspect,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import URL, Connection, Engine, Row, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, IntegrityError, NoSuchModuleError
from sqlalchemy.pool import StaticPool
from sqlalchemy.sql.elements import BindParameter, ColumnElement
from sqlalchemy.sql.selectable import NamedFromClause

from baselines.common.errors import ConfigError
from rlhf.segments import Segment

Choice = Literal["a", "b", "tie", "skip"]
"""An answer: segment ``a`` better, segment ``b`` better, equally good, or can't tell. ``a``/``b`` name the query's
``segment_a``/``segment_b``, never the screen sides (see :meth:`Query.choice_for_side`)."""

CHOICES: tuple[str, ...] = ("a", "b", "tie", "skip")
UNDO = "undo"
"""The ``choice`` of a record that voids the label named in its ``supersedes``."""

SCHEMA_VERSION = 2
DEFAULT_LEASE_SECONDS = 600.0
_MAX_CLAIM_ATTEMPTS = 100
_MAX_KEY_LENGTH = 200
_SEGMENT_ID_PATTERN = re.compile(r"[A-Za-z0-9_-]{1,64}")
_WRITE_OPTION = "rlhf_write_transaction"
_ENV_KEY = "rlhf.env"
_SCHEMA_KEY = "rlhf.schema_version"


# --------------------------------------------------------------------------------------------------- errors


class StoreError(ConfigError):
    """A request the store refuses (unknown ids, a second answer, a bad choice); the message says why."""


class UnknownSegmentError(StoreError):
    """A segment id that the store does not hold."""


class UnknownQueryError(StoreError):
    """A query id that the store does not hold."""


class UnknownLabelerError(StoreError):
    """A labeler id or name that the store does not hold."""


class DuplicateLabelerError(StoreError):
    """A labeler name that is already taken."""


class InvalidLabelError(StoreError):
    """A label with a choice outside ``a|b|tie|skip`` or an invalid ``seconds_taken``."""


class AlreadyLabeledError(StoreError):
    """The labeler already has an effective answer for this query (undo it first to change it)."""


class IdempotencyConflictError(StoreError):
    """An idempotency key that this labeler already used for a different request."""


# --------------------------------------------------------------------------------------------------- records


@dataclass(frozen=True)
class Query:
    """A pair of segments waiting for (or holding) labels.

    Attributes:
        id: query id.
        segment_a: id of segment ``a`` (a ``"a"`` answer prefers it).
        segment_b: id of segment ``b``.
        priority: higher is served first.
        left_is_a: whether segment ``a`` is shown on the left (randomized per query by the caller, recorded here).
        round: loop round that created the query.
        created_at: Unix seconds.
        labels_wanted: how many labelers should answer it (k labels per pair).
        lease_labeler: labeler id holding the lease, or None.
        lease_expires_at: Unix seconds when the lease lapses, or None.
    """

    id: int
    segment_a: str
    segment_b: str
    priority: float
    left_is_a: bool
    round: int
    created_at: float
    labels_wanted: int
    lease_labeler: int | None
    lease_expires_at: float | None

    @property
    def left_segment(self) -> str:
        return self.segment_a if self.left_is_a else self.segment_b

    @property
    def right_segment(self) -> str:
        return self.segment_b if self.left_is_a else self.segment_a

    def choice_for_side(self, side: Literal["left", "right", "tie", "skip"]) -> Choice:
        """Translate a screen answer ("left better", ...) into a stored choice about segments ``a``/``b``."""
        if side == "left":
            return "a" if self.left_is_a else "b"
        if side == "right":
            return "b" if self.left_is_a else "a"
        if side in ("tie", "skip"):
            return side
        raise InvalidLabelError(f"side must be one of left, right, tie, skip, not {side!r}")


@dataclass(frozen=True)
class Label:
    """One appended label record.

    Attributes:
        id: label id (increasing in insertion order).
        query_id: the query answered.
        labeler_id: who answered.
        choice: ``a``, ``b``, ``tie``, ``skip``; or ``undo`` for a record that voids label ``supersedes``.
        seconds_taken: time the labeler spent on the pair.
        created_at: Unix seconds.
        idempotency_key: client-chosen key that makes retries safe (unique per labeler), or None.
        supersedes: for an undo record, the id of the label it voids; otherwise None.
    """

    id: int
    query_id: int
    labeler_id: int
    choice: str
    seconds_taken: float
    created_at: float
    idempotency_key: str | None
    supersedes: int | None

    @property
    def is_undo(self) -> bool:
        return self.choice == UNDO


@dataclass(frozen=True)
class Labeler:
    """A person or a simulated teacher. Tokens are never stored, only their SHA-256."""

    id: int
    name: str
    created_at: float
    has_token: bool


@dataclass(frozen=True)
class LabeledPair:
    """An effective label joined with its query's segment ids: what reward training and export read.

    Attributes:
        label_id: the label record.
        query_id: the query answered.
        segment_a: id of segment ``a``.
        segment_b: id of segment ``b``.
        choice: ``a``, ``b``, ``tie`` or ``skip`` (about segments a/b, not screen sides).
        labeler_id: who answered.
        labeler: the labeler's name.
        seconds_taken: time spent on the pair.
        created_at: Unix seconds.
        round: loop round that created the query.
        left_is_a: whether segment ``a`` was shown on the left (for position-bias analysis).
    """

    label_id: int
    query_id: int
    segment_a: str
    segment_b: str
    choice: str
    labeler_id: int
    labeler: str
    seconds_taken: float
    created_at: float
    round: int
    left_is_a: bool


@dataclass(frozen=True)
class EnvBinding:
    """The env a store belongs to, recorded by :meth:`PreferenceStore.bind_env` on first use."""

    env_id: str
    obs_shape: tuple[int, ...]
    action_spec: dict[str, Any]
    segment_length: int


@dataclass(frozen=True)
class StoreStats:
    """Counts for dashboards.

    Attributes:
        segments: stored segments.
        queries: all queries.
        queries_pending: queries that still want labels.
        queries_leased: queries under an unexpired lease.
        labels: effective labels (skips included).
        labels_voided: labels voided by undo.
        choices: effective labels per choice.
        labelers: registered labelers (teachers included).
        mean_seconds_taken: mean time per effective label, or None before the first one.
    """

    segments: int
    queries: int
    queries_pending: int
    queries_leased: int
    labels: int
    labels_voided: int
    choices: dict[str, int]
    labelers: int
    mean_seconds_taken: float | None


# --------------------------------------------------------------------------------------------------- schema

_metadata = MetaData()

meta_table = Table(
    "rlhf_meta",
    _metadata,
    Column("key", String(200), primary_key=True),
    Column("value", Text, nullable=False),
)

status_table = Table(
    "rlhf_status",
    _metadata,
    Column("key", String(200), primary_key=True),
    Column("value", Text, nullable=False),
    Column("updated_at", Float, nullable=False),
)

segments_table = Table(
    "rlhf_segments",
    _metadata,
    Column("id", String(64), primary_key=True),
    Column("length", Integer, nullable=False),
    Column("obs", LargeBinary, nullable=False),
    Column("actions", LargeBinary, nullable=False),
    Column("true_rewards", LargeBinary, nullable=False),
    Column("mask", LargeBinary, nullable=False),
    Column("round", Integer, nullable=False),
    Column("created_at", Float, nullable=False),
    Column("clip_path", Text, nullable=True),
)

labelers_table = Table(
    "rlhf_labelers",
    _metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("name", String(200), nullable=False, unique=True),
    Column("token_hash", String(64), nullable=True, unique=True),
    Column("created_at", Float, nullable=False),
)

queries_table = Table(
    "rlhf_queries",
    _metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("segment_a", String(64), ForeignKey("rlhf_segments.id"), nullable=False),
    Column("segment_b", String(64), ForeignKey("rlhf_segments.id"), nullable=False),
    Column("priority", Float, nullable=False),
    Column("left_is_a", Boolean, nullable=False),
    Column("round", Integer, nullable=False),
    Column("created_at", Float, nullable=False),
    Column("labels_wanted", Integer, nullable=False, default=1),
    # Effective answers so far (skips included), kept by add_label and undo_last: "still wants labels" is then a
    # column comparison that a partial index serves, instead of counting labels per query.
    Column("labels_done", Integer, nullable=False, default=0, server_default="0"),
    Column("lease_labeler", Integer, ForeignKey("rlhf_labelers.id"), nullable=True),
    Column("lease_expires_at", Float, nullable=True),
    CheckConstraint("segment_a <> segment_b", name="ck_rlhf_queries_distinct_segments"),
    CheckConstraint("labels_wanted >= 1", name="ck_rlhf_queries_labels_wanted"),
    Index("ix_rlhf_queries_lease", "lease_labeler"),
)
Index("ix_rlhf_queries_priority", queries_table.c.priority.desc(), queries_table.c.id)
_OPEN = queries_table.c.labels_done < queries_table.c.labels_wanted  # SQL predicate: the query still wants labels
# The open queries in serving order: leasing walks this index and stops at the first match, however many queries
# were answered before.
_open_index = Index(
    "ix_rlhf_queries_open",
    queries_table.c.priority.desc(),
    queries_table.c.id,
    sqlite_where=_OPEN,
    postgresql_where=_OPEN,
)

labels_table = Table(
    "rlhf_labels",
    _metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("query_id", Integer, ForeignKey("rlhf_queries.id"), nullable=False),
    Column("labeler_id", Integer, ForeignKey("rlhf_labelers.id"), nullable=False),
    Column("choice", String(8), nullable=False),
    Column("seconds_taken", Float, nullable=False),
    Column("created_at", Float, nullable=False),
    Column("idempotency_key", String(_MAX_KEY_LENGTH), nullable=True),
    # Unique: a label is voided at most once, so two racing undos cannot void the same label twice.
    Column("supersedes", Integer, ForeignKey("rlhf_labels.id"), nullable=True, unique=True),
    CheckConstraint("choice IN ('a', 'b', 'tie', 'skip', 'undo')", name="ck_rlhf_labels_choice"),
    UniqueConstraint("labeler_id", "idempotency_key", name="uq_rlhf_labels_idempotency"),
    Index("ix_rlhf_labels_query", "query_id"),
    Index("ix_rlhf_labels_labeler", "labeler_id", "id"),
)


# Aliases of the labels table, built once (building them per call costs more than the SQL it runs). Each role has
# its own pair so that subqueries nested in one statement never share an alias.
_counted, _counted_voider = labels_table.alias("counted"), labels_table.alias("counted_voider")
_own, _own_voider = labels_table.alias("own"), labels_table.alias("own_voider")
_label, _label_voider = labels_table.alias("label"), labels_table.alias("label_voider")


def _is_effective(label: NamedFromClause, voider: NamedFromClause) -> ColumnElement[bool]:
    """SQL predicate: ``label`` is an answer (not an undo record) and no undo record (``voider``) voids it."""
    return and_(label.c.choice != UNDO, ~exists().where(voider.c.supersedes == label.c.id))


def _effective_count(query: NamedFromClause) -> ColumnElement[int]:
    """SQL: the effective labels of ``query``, counted (what ``labels_done`` holds; for migrations and checks)."""
    return (
        select(func.count())
        .select_from(_counted)
        .where(_counted.c.query_id == query.c.id, _is_effective(_counted, _counted_voider))
        .scalar_subquery()
    )


def _answered_by(query: NamedFromClause, labeler_id: int | BindParameter[int]) -> ColumnElement[bool]:
    """SQL predicate: ``labeler_id`` has an effective label on ``query``."""
    return exists().where(
        _own.c.query_id == query.c.id, _own.c.labeler_id == labeler_id, _is_effective(_own, _own_voider)
    )


# The statements of the hot paths (leasing and answering), built once with bind parameters: building a statement
# costs more than running it. Parameter names start with ``p_`` (column names are reserved in UPDATE values).
_q = queries_table
_P_LABELER: BindParameter[int] = bindparam("p_labeler")
_P_NOW: BindParameter[float] = bindparam("p_now")
_P_QUERY: BindParameter[int] = bindparam("p_query")
_WANTED_BY_LABELER = and_(_OPEN, ~_answered_by(_q, _P_LABELER))
_LEASE_FREE = or_(_q.c.lease_labeler.is_(None), _q.c.lease_expires_at <= _P_NOW, _q.c.lease_labeler == _P_LABELER)
_SERVING_ORDER = (_q.c.priority.desc(), _q.c.id)
# Two small queries rather than one ORDER BY "held first": each walks an index and stops at the first match.
_HELD_QUERY = (
    select(_q.c.id)
    .where(_q.c.lease_labeler == _P_LABELER, _q.c.lease_expires_at > _P_NOW, _WANTED_BY_LABELER)
    .order_by(*_SERVING_ORDER)
    .limit(1)
)
_FREE_QUERY = select(_q.c.id).where(_WANTED_BY_LABELER, _LEASE_FREE).order_by(*_SERVING_ORDER).limit(1)
# Optimistic claim: only succeeds if nobody leased the row since it was read.
_CLAIM_QUERY = (
    update(_q)
    .where(_q.c.id == _P_QUERY, _WANTED_BY_LABELER, _LEASE_FREE)
    .values(lease_labeler=_P_LABELER, lease_expires_at=bindparam("p_until"))
    .returning(*_q.c)
)
_LOCK_QUERY = select(_q.c.id).where(_q.c.id == _P_QUERY).with_for_update()
_LABEL_BY_KEY = select(labels_table).where(
    labels_table.c.labeler_id == _P_LABELER, labels_table.c.idempotency_key == bindparam("p_key")
)
_ANSWER_OF_LABELER = select(_own.c.id).where(
    _own.c.query_id == _P_QUERY, _own.c.labeler_id == _P_LABELER, _is_effective(_own, _own_voider)
)
_INSERT_LABEL = insert(labels_table).returning(*labels_table.c)
# An answer counts for its query and ends the answering labeler's lease on it.
_COUNT_ANSWER = (
    update(_q)
    .where(_q.c.id == _P_QUERY)
    .values(
        labels_done=_q.c.labels_done + 1,
        lease_labeler=case((_q.c.lease_labeler == _P_LABELER, None), else_=_q.c.lease_labeler),
        lease_expires_at=case((_q.c.lease_labeler == _P_LABELER, None), else_=_q.c.lease_expires_at),
    )
)
_UNCOUNT_ANSWER = update(_q).where(_q.c.id == _P_QUERY).values(labels_done=_q.c.labels_done - 1)
_LABELER_BY_ID = select(labelers_table).where(labelers_table.c.id == _P_LABELER)


# --------------------------------------------------------------------------------------------------- helpers


def _pack(array: np.ndarray) -> bytes:
    """Array -> compressed ``np.save`` bytes (dtype and shape kept exactly, pickles refused)."""
    if array.dtype.hasobject:
        raise StoreError(f"segment arrays must have a numeric or bool dtype, not {array.dtype}")
    buffer = io.BytesIO()
    np.save(buffer, np.ascontiguousarray(array), allow_pickle=False)
    return zlib.compress(buffer.getvalue(), 6)


def _unpack(blob: bytes) -> np.ndarray:
    array: np.ndarray = np.load(io.BytesIO(zlib.decompress(blob)), allow_pickle=False)
    return array


def _hash_token(token: str) -> str:
    # Tokens are 256-bit random strings, so a fast hash is enough: there is nothing to brute-force.
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def _query_from_row(row: Row[Any]) -> Query:
    return Query(
        id=int(row.id),
        segment_a=str(row.segment_a),
        segment_b=str(row.segment_b),
        priority=float(row.priority),
        left_is_a=bool(row.left_is_a),
        round=int(row.round),
        created_at=float(row.created_at),
        labels_wanted=int(row.labels_wanted),
        lease_labeler=None if row.lease_labeler is None else int(row.lease_labeler),
        lease_expires_at=None if row.lease_expires_at is None else float(row.lease_expires_at),
    )


def _label_from_row(row: Row[Any]) -> Label:
    return Label(
        id=int(row.id),
        query_id=int(row.query_id),
        labeler_id=int(row.labeler_id),
        choice=str(row.choice),
        seconds_taken=float(row.seconds_taken),
        created_at=float(row.created_at),
        idempotency_key=row.idempotency_key,
        supersedes=None if row.supersedes is None else int(row.supersedes),
    )


def _labeler_from_row(row: Row[Any]) -> Labeler:
    return Labeler(
        id=int(row.id), name=str(row.name), created_at=float(row.created_at), has_token=row.token_hash is not None
    )


def _segment_from_row(row: Row[Any]) -> Segment:
    return Segment(
        id=str(row.id),
        obs=_unpack(row.obs),
        actions=_unpack(row.actions),
        true_rewards=_unpack(row.true_rewards),
        mask=_unpack(row.mask),
    )


def _chunks(items: Sequence[str], size: int = 500) -> Iterator[Sequence[str]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def describe_action_space(space: gym.Space[Any]) -> dict[str, Any]:
    """A JSON description of a Discrete or Box action space, for :meth:`PreferenceStore.bind_env`."""
    if isinstance(space, gym.spaces.Discrete):
        return {"type": "Discrete", "n": int(space.n)}
    if isinstance(space, gym.spaces.Box):
        return {
            "type": "Box",
            "shape": [int(d) for d in space.shape],
            "low": np.asarray(space.low).tolist(),
            "high": np.asarray(space.high).tolist(),
        }
    raise ConfigError(f"the preference store records Discrete or Box action spaces, not {space}")


def _sqlite_url(url_or_path: str | os.PathLike[str]) -> str:
    text = os.fspath(url_or_path)
    if "://" in text:
        return text
    return "sqlite:///" + str(Path(text).expanduser().resolve())


def sqlite_file(url_or_path: str | os.PathLike[str]) -> Path | None:
    """The database file a store location names when it is SQLite (a path or a ``sqlite:///`` URL), else None."""
    try:
        url = make_url(_sqlite_url(url_or_path))
    except (ArgumentError, ValueError):
        return None  # PreferenceStore says what is wrong with it
    database = url.database
    return Path(database) if url.drivername.startswith("sqlite") and database and database != ":memory:" else None


# --------------------------------------------------------------------------------------------------- the store


class PreferenceStore:
    """Segments, queries, labels and labelers behind one SQLAlchemy engine.

    Args:
        url_or_path: an SQLAlchemy URL (``sqlite:///runs/x/prefs.sqlite``, ``postgresql+psycopg://...``) or a file
            path, which means ``sqlite:///PATH``. The directory must exist; the tables are created if missing.
        clock: returns Unix seconds; used for ``created_at`` and lease expiry (tests pass a controllable clock).
        busy_timeout_s: how long an SQLite writer waits for another writer before failing.
        sqlite_synchronous: ``FULL`` (default) fsyncs every commit: acknowledged writes survive power loss.
            ``NORMAL`` skips that fsync (about 6 ms per commit on a VM disk): still safe against process crashes
            and never corrupt, but the last commits may be lost on power loss. Meant for simulated-teacher runs.

    Raises:
        ConfigError: the URL is malformed, its driver is missing, the database cannot be opened or written, or it
            holds a store of another schema version.
    """

    def __init__(
        self,
        url_or_path: str | os.PathLike[str],
        *,
        clock: Callable[[], float] = time.time,
        busy_timeout_s: float = 30.0,
        sqlite_synchronous: Literal["FULL", "NORMAL"] = "FULL",
    ) -> None:
        raw = _sqlite_url(url_or_path)
        try:
            url = make_url(raw)
        except (ArgumentError, ValueError) as error:
            raise ConfigError(f"{raw!r} is not a database URL or path: {error}") from error
        self.url = url.render_as_string(hide_password=True)
        """The URL with any password hidden, for messages."""
        self._clock = clock
        self._known_labelers: set[int] = set()
        self._batch = threading.local()
        if sqlite_synchronous not in ("FULL", "NORMAL"):
            raise ConfigError(f"sqlite_synchronous must be FULL or NORMAL, not {sqlite_synchronous!r}")
        self._engine = self._create_engine(url, busy_timeout_s, sqlite_synchronous)
        try:
            self._initialize()
        except DBAPIError as error:
            self._engine.dispose()
            raise ConfigError(f"cannot open the preference store at {self.url}: {error.orig}") from error
        except ConfigError:
            self._engine.dispose()
            raise

    # ----------------------------------------------------------------------------------------- plumbing

    def _create_engine(self, url: URL, busy_timeout_s: float, synchronous: str) -> Engine:
        try:
            backend = url.get_backend_name()
            if backend != "sqlite":
                return create_engine(url, pool_pre_ping=True)
            database = url.database
            if not database or database == ":memory:":
                # One shared connection, otherwise each connection would see its own empty in-memory database.
                engine = create_engine(url, poolclass=StaticPool, connect_args={"check_same_thread": False})
            else:
                if not database.startswith("file:"):
                    directory = Path(database).expanduser().resolve().parent
                    if not directory.is_dir():
                        raise ConfigError(
                            f"cannot open the preference store at {self.url}: directory {directory} does not exist"
                        )
                engine = create_engine(url)
        except (ArgumentError, NoSuchModuleError, ImportError) as error:
            raise ConfigError(f"cannot open the preference store at {self.url}: {error}") from error

        timeout_ms = int(busy_timeout_s * 1000)

        @event.listens_for(engine, "connect")
        def _on_connect(dbapi_connection: Any, _record: Any) -> None:
            # Let SQLAlchemy's "begin" event below emit BEGIN, instead of pysqlite's own implicit transactions.
            dbapi_connection.isolation_level = None
            cursor = dbapi_connection.cursor()
            cursor.execute(f"PRAGMA busy_timeout = {timeout_ms}")
            cursor.execute("PRAGMA foreign_keys = ON")
            if database and database != ":memory:":
                cursor.execute("PRAGMA journal_mode = WAL")
            cursor.execute(f"PRAGMA synchronous = {synchronous}")
            cursor.close()

        @event.listens_for(engine, "begin")
        def _on_begin(conn: Connection) -> None:
            # IMMEDIATE takes the writer lock up front, so a read-then-write transaction never hits SQLITE_BUSY
            # midway; read-only transactions stay deferred and never block anyone under WAL.
            conn.exec_driver_sql("BEGIN IMMEDIATE" if conn.get_execution_options().get(_WRITE_OPTION) else "BEGIN")

        return engine

    @contextmanager
    def _transaction(self, write: bool = False) -> Iterator[Connection]:
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
        with self._engine.connect() as conn:
            if write:
                conn.execution_options(**{_WRITE_OPTION: True})
            with conn.begin():
                yield conn

    @property
    def serializes_writes(self) -> bool:
        """Whether the database runs one write transaction at a time (SQLite), so that :meth:`batch` costs no
        concurrency and cannot deadlock with other processes."""
        return self._engine.dialect.name == "sqlite"

    @contextmanager
    def batch(self) -> Iterator[None]:
        """Run the store calls made on this thread inside the block as one write transaction (group commit).

        A server that answers many labelers pays one commit (one fsync) per batch instead of one per call. Each call
        in the block still behaves as its own transaction towards its caller: one that raises leaves no writes
        behind (it runs in a savepoint), the others stand. Nothing is visible to other connections, and so nothing
        should be acknowledged to anyone, before the block exits; if the commit fails, every call in it is undone.

        Meant for SQLite (see :attr:`serializes_writes`). On a server database a batch holds the row locks of all
        its calls until it commits, so batches of two processes can deadlock; there, commit call by call (the
        server groups concurrent commits itself).

        Raises:
            StoreError: batches do not nest.
        """
        if getattr(self._batch, "conn", None) is not None:
            raise StoreError("store batches do not nest")
        try:
            with self._engine.connect() as conn:
                conn.execution_options(**{_WRITE_OPTION: True})
                with conn.begin():
                    self._batch.conn, self._batch.depth = conn, 0
                    try:
                        yield
                    finally:
                        self._batch.conn = None
        except BaseException:
            self._known_labelers.clear()  # a labeler added in the batch may have been rolled back
            raise

    def _initialize(self) -> None:
        try:
            with self._transaction(write=True) as conn:
                _metadata.create_all(conn)
        except DBAPIError:
            # Another process may have created the tables between our check and our CREATE (PostgreSQL).
            if not set(_metadata.tables) <= set(inspect(self._engine).get_table_names()):
                raise
        with self._transaction(write=True) as conn:
            stored = conn.execute(select(meta_table.c.value).where(meta_table.c.key == _SCHEMA_KEY)).scalar()
            if stored is None:
                self._upsert(conn, meta_table, _SCHEMA_KEY, {"value": json.dumps(SCHEMA_VERSION)})
            elif json.loads(stored) == 1:
                self._migrate_from_1(conn)
            elif json.loads(stored) != SCHEMA_VERSION:
                raise ConfigError(
                    f"the preference store at {self.url} has schema version {stored}; this code reads version "
                    f"{SCHEMA_VERSION}. Use a new database or a matching version of rlhf-pipeline"
                )

    def _migrate_from_1(self, conn: Connection) -> None:
        """Schema 1 -> 2: queries gain ``labels_done`` (counted from the labels) and the open-queries index."""
        columns = {column["name"] for column in inspect(conn).get_columns(queries_table.name)}
        if "labels_done" not in columns:
            conn.execute(text(f"ALTER TABLE {queries_table.name} ADD COLUMN labels_done INTEGER NOT NULL DEFAULT 0"))
        conn.execute(update(queries_table).values(labels_done=_effective_count(queries_table)))
        _open_index.create(conn, checkfirst=True)
        self._upsert(conn, meta_table, _SCHEMA_KEY, {"value": json.dumps(SCHEMA_VERSION)})

    @staticmethod
    def _upsert(conn: Connection, table: Table, key: str, values: dict[str, Any]) -> None:
        """Insert or update the row ``key`` of a key/value table."""
        if conn.dialect.name == "sqlite":
            sqlite_statement = sqlite_insert(table).values(key=key, **values)
            conn.execute(sqlite_statement.on_conflict_do_update(index_elements=[table.c.key], set_=values))
            return
        if conn.dialect.name == "postgresql":
            postgresql_statement = postgresql_insert(table).values(key=key, **values)
            conn.execute(postgresql_statement.on_conflict_do_update(index_elements=[table.c.key], set_=values))
            return
        if conn.execute(update(table).where(table.c.key == key).values(**values)).rowcount == 0:
            conn.execute(insert(table).values(key=key, **values))

    def close(self) -> None:
        """Close all pooled connections."""
        self._engine.dispose()

    def __enter__(self) -> PreferenceStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"PreferenceStore({self.url!r})"

    # ----------------------------------------------------------------------------------------- metadata

    def set_meta(self, key: str, value: Any) -> None:
        """Record a JSON-serializable workspace value (keys starting with ``rlhf.`` are reserved)."""
        if key.startswith("rlhf."):
            raise ConfigError(f"meta keys starting with 'rlhf.' are reserved for the store, not {key!r}")
        with self._transaction(write=True) as conn:
            self._upsert(conn, meta_table, key, {"value": json.dumps(value)})

    def get_meta(self, key: str, default: Any = None) -> Any:
        """The value recorded under ``key``, or ``default``."""
        with self._transaction() as conn:
            stored = conn.execute(select(meta_table.c.value).where(meta_table.c.key == key)).scalar()
        return default if stored is None else json.loads(stored)

    def bind_env(
        self, env_id: str, obs_shape: Sequence[int], action_spec: Mapping[str, Any], segment_length: int
    ) -> EnvBinding:
        """Record which env this store belongs to (first call), or check that it is the same env.

        Args:
            env_id: gymnasium id, e.g. ``CartPole-v1``.
            obs_shape: shape of one observation.
            action_spec: JSON description of the action space (see :func:`describe_action_space`).
            segment_length: steps per segment.

        Raises:
            ConfigError: the store already holds another env's (or shape's, or segment length's) segments.
        """
        wanted = EnvBinding(
            env_id=env_id,
            obs_shape=tuple(int(d) for d in obs_shape),
            action_spec=json.loads(json.dumps(dict(action_spec))),
            segment_length=int(segment_length),
        )
        if wanted.segment_length < 1:
            raise ConfigError(f"segment_length must be at least 1, not {segment_length}")
        record = {
            "env_id": wanted.env_id,
            "obs_shape": list(wanted.obs_shape),
            "action_spec": wanted.action_spec,
            "segment_length": wanted.segment_length,
        }
        try:
            with self._transaction(write=True) as conn:
                stored = self._env(conn)
                if stored is None:
                    # A plain INSERT, not an upsert: of two processes binding at once, the second one fails here
                    # and then compares against the first one's binding below.
                    conn.execute(insert(meta_table).values(key=_ENV_KEY, value=json.dumps(record)))
                    return wanted
        except IntegrityError:
            stored = self.env()
            if stored is None:
                raise
        if stored.env_id != wanted.env_id:
            difference = f"{stored.env_id} segments, not {wanted.env_id}"
        elif stored.obs_shape != wanted.obs_shape:
            difference = f"{stored.env_id} segments with obs shape {stored.obs_shape}, not {wanted.obs_shape}"
        elif stored.segment_length != wanted.segment_length:
            difference = f"{stored.env_id} segments of {stored.segment_length} steps, not {wanted.segment_length}"
        elif stored.action_spec != wanted.action_spec:
            difference = f"{stored.env_id} segments with actions {stored.action_spec}, not {wanted.action_spec}"
        else:
            return stored
        raise ConfigError(f"store at {self.url} holds {difference}; use a new run folder or database")

    def env(self) -> EnvBinding | None:
        """The env recorded by :meth:`bind_env`, or None if the store is not bound yet."""
        with self._transaction() as conn:
            return self._env(conn)

    @staticmethod
    def _env(conn: Connection) -> EnvBinding | None:
        stored = conn.execute(select(meta_table.c.value).where(meta_table.c.key == _ENV_KEY)).scalar()
        if stored is None:
            return None
        record = json.loads(stored)
        return EnvBinding(
            env_id=str(record["env_id"]),
            obs_shape=tuple(int(d) for d in record["obs_shape"]),
            action_spec=dict(record["action_spec"]),
            segment_length=int(record["segment_length"]),
        )

    def set_status(self, values: Mapping[str, Any]) -> None:
        """Merge JSON-serializable loop status values (round, reward-model accuracy, ...) for the UI."""
        now = self._clock()
        with self._transaction(write=True) as conn:
            for key, value in values.items():
                self._upsert(conn, status_table, str(key), {"value": json.dumps(value), "updated_at": now})

    def get_status(self) -> dict[str, Any]:
        """All status values set so far."""
        with self._transaction() as conn:
            rows = conn.execute(select(status_table.c.key, status_table.c.value).order_by(status_table.c.key))
            return {str(row.key): json.loads(row.value) for row in rows}

    # ----------------------------------------------------------------------------------------- segments

    def add_segments(self, segments: Sequence[Segment], round: int = 0) -> None:
        """Store segments (frames are not stored: clips are files, see :meth:`set_clip_path`).

        Raises:
            StoreError: an id is malformed or already stored, or an array has an object dtype.
            ConfigError: a segment does not match the env recorded by :meth:`bind_env`.
        """
        now = self._clock()
        rows = []
        for segment in segments:
            if not _SEGMENT_ID_PATTERN.fullmatch(segment.id):
                raise StoreError(f"segment ids are 1-64 letters, digits, '_' or '-', not {segment.id!r}")
            rows.append(
                {
                    "id": segment.id,
                    "length": segment.length,
                    "obs": _pack(segment.obs),
                    "actions": _pack(segment.actions),
                    "true_rewards": _pack(segment.true_rewards),
                    "mask": _pack(np.asarray(segment.mask)),
                    "round": int(round),
                    "created_at": now,
                    "clip_path": None,
                }
            )
        if len({row["id"] for row in rows}) != len(rows):
            raise StoreError("add_segments got the same segment id twice")
        if not rows:
            return
        with self._transaction(write=True) as conn:
            binding = self._env(conn)
            if binding is not None:
                for segment in segments:
                    if segment.obs.shape[1:] != binding.obs_shape or segment.length != binding.segment_length:
                        raise ConfigError(
                            f"segment {segment.id} has {segment.length} steps of obs shape {segment.obs.shape[1:]}; "
                            f"the store at {self.url} holds {binding.env_id} segments of {binding.segment_length} "
                            f"steps with obs shape {binding.obs_shape}"
                        )
            ids = [str(row["id"]) for row in rows]
            for chunk in _chunks(ids):
                taken = conn.execute(select(segments_table.c.id).where(segments_table.c.id.in_(chunk))).scalars()
                duplicates = list(taken)
                if duplicates:
                    raise StoreError(f"segments already stored: {', '.join(duplicates[:5])}")
            conn.execute(insert(segments_table), rows)

    def get_segment(self, segment_id: str) -> Segment:
        """The stored segment (exact arrays and dtypes, ``frames=None``).

        Raises:
            UnknownSegmentError: no such segment.
        """
        return self.get_segments([segment_id])[0]

    def get_segments(self, segment_ids: Sequence[str]) -> list[Segment]:
        """The stored segments, in the order of ``segment_ids``.

        Raises:
            UnknownSegmentError: some id is not stored.
        """
        wanted = list(dict.fromkeys(segment_ids))
        found: dict[str, Segment] = {}
        with self._transaction() as conn:
            for chunk in _chunks(wanted):
                for row in conn.execute(select(segments_table).where(segments_table.c.id.in_(chunk))):
                    found[str(row.id)] = _segment_from_row(row)
        missing = [segment_id for segment_id in wanted if segment_id not in found]
        if missing:
            raise UnknownSegmentError(f"unknown segment ids in the store at {self.url}: {', '.join(missing[:5])}")
        return [found[segment_id] for segment_id in segment_ids]

    def segment_ids(self, round: int | None = None) -> list[str]:
        """Ids of the stored segments (of one round if given), sorted by round, then id."""
        statement = select(segments_table.c.id).order_by(segments_table.c.round, segments_table.c.id)
        if round is not None:
            statement = statement.where(segments_table.c.round == round)
        with self._transaction() as conn:
            return [str(segment_id) for segment_id in conn.execute(statement).scalars()]

    def set_clip_path(self, segment_id: str, path: str | os.PathLike[str] | None) -> None:
        """Record where the segment's rendered clip lives (relative to the media dir, typically).

        Raises:
            UnknownSegmentError: no such segment.
        """
        value = None if path is None else os.fspath(path)
        with self._transaction(write=True) as conn:
            result = conn.execute(
                update(segments_table).where(segments_table.c.id == segment_id).values(clip_path=value)
            )
            if result.rowcount != 1:
                raise UnknownSegmentError(f"unknown segment id {segment_id!r} in the store at {self.url}")

    def get_clip_path(self, segment_id: str) -> str | None:
        """The clip path recorded for a segment, or None if no clip was rendered.

        Raises:
            UnknownSegmentError: no such segment.
        """
        with self._transaction() as conn:
            row = conn.execute(select(segments_table.c.clip_path).where(segments_table.c.id == segment_id)).first()
        if row is None:
            raise UnknownSegmentError(f"unknown segment id {segment_id!r} in the store at {self.url}")
        return None if row.clip_path is None else str(row.clip_path)

    # ----------------------------------------------------------------------------------------- queries

    def add_queries(
        self,
        pairs: Sequence[tuple[str, str]],
        priorities: Sequence[float],
        left_is_a: Sequence[bool],
        round: int,
        labels_wanted: int = 1,
    ) -> list[int]:
        """Queue pairs of stored segments for labeling.

        Args:
            pairs: ``(segment_a, segment_b)`` ids; the segments must be stored.
            priorities: one per pair; higher is served first.
            left_is_a: one per pair; whether ``a`` is shown on the left (draw it with the caller's Generator).
            round: loop round creating the queries.
            labels_wanted: labels wanted per pair (k), the same for every pair of this call.

        Returns:
            The new query ids, in the order of ``pairs``.

        Raises:
            StoreError: lengths differ, a pair repeats a segment, a priority is not finite, or a segment is unknown.
        """
        if not (len(pairs) == len(priorities) == len(left_is_a)):
            raise StoreError(
                f"add_queries needs one priority and one left_is_a per pair, got {len(pairs)} pairs, "
                f"{len(priorities)} priorities, {len(left_is_a)} left_is_a"
            )
        if labels_wanted < 1:
            raise StoreError(f"labels_wanted must be at least 1, not {labels_wanted}")
        now = self._clock()
        rows = []
        for (segment_a, segment_b), priority, a_left in zip(pairs, priorities, left_is_a, strict=True):
            if segment_a == segment_b:
                raise StoreError(f"a query compares two different segments, got {segment_a!r} twice")
            if not math.isfinite(float(priority)):
                raise StoreError(f"query priorities must be finite, got {priority}")
            rows.append(
                {
                    "segment_a": str(segment_a),
                    "segment_b": str(segment_b),
                    "priority": float(priority),
                    "left_is_a": bool(a_left),
                    "round": int(round),
                    "created_at": now,
                    "labels_wanted": int(labels_wanted),
                    "labels_done": 0,
                    "lease_labeler": None,
                    "lease_expires_at": None,
                }
            )
        if not rows:
            return []
        referenced = sorted({segment_id for pair in pairs for segment_id in pair})
        with self._transaction(write=True) as conn:
            known: set[str] = set()
            for chunk in _chunks(referenced):
                known.update(conn.execute(select(segments_table.c.id).where(segments_table.c.id.in_(chunk))).scalars())
            missing = [segment_id for segment_id in referenced if segment_id not in known]
            if missing:
                raise UnknownSegmentError(f"queries refer to unknown segments: {', '.join(missing[:5])}")
            statement = insert(queries_table).returning(queries_table.c.id, sort_by_parameter_order=True)
            return [int(query_id) for query_id in conn.execute(statement, rows).scalars()]

    def get_query(self, query_id: int) -> Query:
        """The query record.

        Raises:
            UnknownQueryError: no such query.
        """
        with self._transaction() as conn:
            row = conn.execute(select(queries_table).where(queries_table.c.id == query_id)).first()
        if row is None:
            raise UnknownQueryError(f"unknown query id {query_id} in the store at {self.url}")
        return _query_from_row(row)

    def lease_next(self, labeler_id: int, lease_seconds: float = DEFAULT_LEASE_SECONDS) -> Query | None:
        """Lease the highest-priority query this labeler may answer now, or return None if there is none.

        A query qualifies when it still wants labels, this labeler has no effective label on it, and its lease is
        free, expired, or already this labeler's. A query this labeler already holds is returned first (a page
        reload gets the same pair back, lease renewed). Two concurrent callers never get the same query.

        Raises:
            UnknownLabelerError: no such labeler.
            StoreError: ``lease_seconds`` is not positive, or the claim lost the race too many times in a row.
        """
        if not lease_seconds > 0:
            raise StoreError(f"lease_seconds must be positive, not {lease_seconds}")
        for _ in range(_MAX_CLAIM_ATTEMPTS):
            with self._transaction(write=True) as conn:
                self._check_labeler(conn, labeler_id)
                now = self._clock()
                params = {"p_labeler": labeler_id, "p_now": now}
                candidate = conn.execute(_HELD_QUERY, params).scalar()
                if candidate is None:
                    candidate = conn.execute(_FREE_QUERY, params).scalar()
                if candidate is None:
                    return None
                claim = {**params, "p_query": candidate, "p_until": now + float(lease_seconds)}
                claimed = conn.execute(_CLAIM_QUERY, claim).first()
                if claimed is not None:
                    return _query_from_row(claimed)
        raise StoreError(f"could not lease a query after {_MAX_CLAIM_ATTEMPTS} attempts; the queue is contended")

    def release_lease(self, query_id: int, labeler_id: int) -> bool:
        """Give a leased query back to the queue (e.g. "show me another pair"). Returns whether a lease was held."""
        with self._transaction(write=True) as conn:
            result = conn.execute(
                update(queries_table)
                .where(queries_table.c.id == query_id, queries_table.c.lease_labeler == labeler_id)
                .values(lease_labeler=None, lease_expires_at=None)
            )
            return result.rowcount == 1

    def pending_queries(self, labeler_id: int | None = None, limit: int | None = None) -> list[Query]:
        """Queries that still want labels (and that ``labeler_id`` has not answered), highest priority first.

        Takes no lease: meant for simulated teachers, which answer them in bulk with :meth:`add_labels`.
        """
        query = queries_table
        condition = _OPEN
        if labeler_id is not None:
            condition = and_(condition, ~_answered_by(query, labeler_id))
        statement = select(query).where(condition).order_by(query.c.priority.desc(), query.c.id).limit(limit)
        with self._transaction() as conn:
            return [_query_from_row(row) for row in conn.execute(statement)]

    def queue_size(self, labeler_id: int | None = None) -> int:
        """Queries that still want labels (leased ones included); with a labeler, those this labeler may answer."""
        query = queries_table
        condition = _OPEN
        if labeler_id is not None:
            condition = and_(condition, ~_answered_by(query, labeler_id))
        with self._transaction() as conn:
            return int(conn.execute(select(func.count()).select_from(query).where(condition)).scalar_one())

    # ----------------------------------------------------------------------------------------- labels

    def add_label(
        self,
        query_id: int,
        labeler_id: int,
        choice: str,
        seconds_taken: float,
        idempotency_key: str | None = None,
    ) -> Label:
        """Append one answer and release the labeler's lease on the query.

        A label is accepted whenever the labeler has no effective answer on the query yet, with or without a lease
        (a late answer after an expired lease is still data). A retry with the same ``idempotency_key`` returns the
        stored label instead of adding a second one.

        Args:
            query_id: the query answered.
            labeler_id: who answers.
            choice: ``a``, ``b``, ``tie`` or ``skip`` about the query's segments a/b (not screen sides).
            seconds_taken: time spent, >= 0.
            idempotency_key: optional client key, unique per labeler.

        Raises:
            InvalidLabelError: bad choice or seconds.
            UnknownQueryError, UnknownLabelerError: unknown ids.
            AlreadyLabeledError: the labeler already answered this query.
            IdempotencyConflictError: the key was used for a different request.
        """
        return self.add_labels(labeler_id, [(query_id, choice, seconds_taken, idempotency_key)])[0]

    def add_labels(self, labeler_id: int, answers: Sequence[tuple[int, str, float, str | None]]) -> list[Label]:
        """Append several answers of one labeler in one transaction (simulated teachers label in bulk).

        Args:
            labeler_id: who answers.
            answers: ``(query_id, choice, seconds_taken, idempotency_key)`` tuples; see :meth:`add_label`.

        Returns:
            The labels, in the order of ``answers``. Raises (and stores nothing) if any answer is refused.
        """
        for _query_id, choice, seconds_taken, key in answers:
            self._validate_answer(choice, seconds_taken, key)
        try:
            with self._transaction(write=True) as conn:
                self._check_labeler(conn, labeler_id)
                return [self._insert_label(conn, labeler_id, *answer) for answer in answers]
        except IntegrityError:
            # PostgreSQL: a concurrent retry with the same idempotency key committed first. Replaying now finds it.
            if not any(answer[3] for answer in answers):
                raise
            with self._transaction(write=True) as conn:
                return [self._insert_label(conn, labeler_id, *answer) for answer in answers]

    @staticmethod
    def _validate_answer(choice: str, seconds_taken: float, key: str | None) -> None:
        if choice not in CHOICES:
            raise InvalidLabelError(f"choice must be one of {', '.join(CHOICES)}, not {choice!r}")
        if not (math.isfinite(float(seconds_taken)) and float(seconds_taken) >= 0):
            raise InvalidLabelError(f"seconds_taken must be a finite number >= 0, not {seconds_taken}")
        if key is not None and not 0 < len(key) <= _MAX_KEY_LENGTH:
            raise InvalidLabelError(f"idempotency keys are 1-{_MAX_KEY_LENGTH} characters, got {len(key)}")

    def _insert_label(
        self, conn: Connection, labeler_id: int, query_id: int, choice: str, seconds_taken: float, key: str | None
    ) -> Label:
        # Lock the query row first (PostgreSQL; SQLite already holds the writer lock): answers of one labeler to
        # one query then run one at a time, and each later statement sees the answer that committed before it.
        params: dict[str, Any] = {"p_query": query_id, "p_labeler": labeler_id}
        if conn.execute(_LOCK_QUERY, params).first() is None:
            raise UnknownQueryError(f"unknown query id {query_id} in the store at {self.url}")
        if key is not None:
            previous = self._label_by_key(conn, labeler_id, key)
            if previous is not None:
                if previous.query_id != query_id or previous.choice != choice:
                    raise IdempotencyConflictError(
                        f"idempotency key {key!r} was already used by labeler {labeler_id} for another request "
                        f"(query {previous.query_id}, choice {previous.choice})"
                    )
                return previous
        answered = conn.execute(_ANSWER_OF_LABELER, params).first()
        if answered is not None:
            raise AlreadyLabeledError(
                f"labeler {labeler_id} already answered query {query_id} (label {answered.id}); undo it to change it"
            )
        row = {
            "query_id": query_id,
            "labeler_id": labeler_id,
            "choice": choice,
            "seconds_taken": float(seconds_taken),
            "created_at": self._clock(),
            "idempotency_key": key,
            "supersedes": None,
        }
        stored = conn.execute(_INSERT_LABEL, row).one()
        conn.execute(_COUNT_ANSWER, params)
        return _label_from_row(stored)

    @staticmethod
    def _label_by_key(conn: Connection, labeler_id: int, key: str) -> Label | None:
        row = conn.execute(_LABEL_BY_KEY, {"p_labeler": labeler_id, "p_key": key}).first()
        return None if row is None else _label_from_row(row)

    def undo_last(self, labeler_id: int, idempotency_key: str | None = None) -> Label | None:
        """Void this labeler's most recent effective label by appending an undo record.

        The voided query returns to the queue for this labeler (and for others if it now wants labels again).
        Calling again undoes the label before that. A retry with the same ``idempotency_key`` voids nothing more.

        Returns:
            The label that was voided, or None if the labeler has no effective label.

        Raises:
            UnknownLabelerError: no such labeler.
            IdempotencyConflictError: the key was used for an answer, not an undo.
        """
        if idempotency_key is not None and not 0 < len(idempotency_key) <= _MAX_KEY_LENGTH:
            raise InvalidLabelError(f"idempotency keys are 1-{_MAX_KEY_LENGTH} characters")
        with self._transaction(write=True) as conn:
            # Lock the labeler row (PostgreSQL) so this labeler's undos run one at a time.
            self._require_labeler(conn, labeler_id, lock=True)
            if idempotency_key is not None:
                previous = self._label_by_key(conn, labeler_id, idempotency_key)
                if previous is not None:
                    if not previous.is_undo or previous.supersedes is None:
                        raise IdempotencyConflictError(
                            f"idempotency key {idempotency_key!r} was already used by labeler {labeler_id} for an "
                            f"answer, not an undo"
                        )
                    return self._label_by_id(conn, previous.supersedes)
            label = _label
            row = conn.execute(
                select(label)
                .where(label.c.labeler_id == labeler_id, _is_effective(label, _label_voider))
                .order_by(label.c.id.desc())
                .limit(1)
            ).first()
            if row is None:
                return None
            voided = _label_from_row(row)
            conn.execute(
                insert(labels_table).values(
                    query_id=voided.query_id,
                    labeler_id=labeler_id,
                    choice=UNDO,
                    seconds_taken=0.0,
                    created_at=self._clock(),
                    idempotency_key=idempotency_key,
                    supersedes=voided.id,
                )
            )
            conn.execute(_UNCOUNT_ANSWER, {"p_query": voided.query_id})
            return voided

    @staticmethod
    def _label_by_id(conn: Connection, label_id: int) -> Label:
        return _label_from_row(conn.execute(select(labels_table).where(labels_table.c.id == label_id)).one())

    def labels(self, labeler_id: int | None = None) -> list[Label]:
        """Every label record (answers and undo records), oldest first; the audit trail."""
        statement = select(labels_table).order_by(labels_table.c.id)
        if labeler_id is not None:
            statement = statement.where(labels_table.c.labeler_id == labeler_id)
        with self._transaction() as conn:
            return [_label_from_row(row) for row in conn.execute(statement)]

    def effective_labels(self, include_skips: bool = True) -> list[LabeledPair]:
        """The labels no undo voided, joined with their query's segments and labeler, oldest first."""
        label = _label
        query = queries_table
        labeler = labelers_table
        statement = (
            select(
                label.c.id.label("label_id"),
                label.c.query_id,
                query.c.segment_a,
                query.c.segment_b,
                label.c.choice,
                label.c.labeler_id,
                labeler.c.name.label("labeler"),
                label.c.seconds_taken,
                label.c.created_at,
                query.c.round,
                query.c.left_is_a,
            )
            .select_from(
                label.join(query, query.c.id == label.c.query_id).join(labeler, labeler.c.id == label.c.labeler_id)
            )
            .where(_is_effective(label, _label_voider))
            .order_by(label.c.id)
        )
        if not include_skips:
            statement = statement.where(label.c.choice != "skip")
        with self._transaction() as conn:
            return [
                LabeledPair(
                    label_id=int(row.label_id),
                    query_id=int(row.query_id),
                    segment_a=str(row.segment_a),
                    segment_b=str(row.segment_b),
                    choice=str(row.choice),
                    labeler_id=int(row.labeler_id),
                    labeler=str(row.labeler),
                    seconds_taken=float(row.seconds_taken),
                    created_at=float(row.created_at),
                    round=int(row.round),
                    left_is_a=bool(row.left_is_a),
                )
                for row in conn.execute(statement)
            ]

    def label_counts(self) -> dict[str, int]:
        """Effective labels (skips included) per labeler name; labelers without labels count 0."""
        label = _label
        labeler = labelers_table
        statement = (
            select(labeler.c.name, func.count(label.c.id))
            .select_from(
                labeler.outerjoin(label, and_(label.c.labeler_id == labeler.c.id, _is_effective(label, _label_voider)))
            )
            .group_by(labeler.c.id, labeler.c.name)
            .order_by(labeler.c.id)
        )
        with self._transaction() as conn:
            return {str(name): int(count) for name, count in conn.execute(statement)}

    def stats(self) -> StoreStats:
        """Counts for dashboards, read in one consistent snapshot."""
        label = _label
        query = queries_table
        with self._transaction() as conn:
            now = self._clock()

            def count(table: NamedFromClause, *conditions: ColumnElement[bool]) -> int:
                return int(conn.execute(select(func.count()).select_from(table).where(*conditions)).scalar_one())

            choices = {choice: 0 for choice in CHOICES}
            choice_rows = conn.execute(
                select(label.c.choice, func.count()).where(_is_effective(label, _label_voider)).group_by(label.c.choice)
            )
            for choice, n in choice_rows:
                choices[str(choice)] = int(n)
            mean_seconds = conn.execute(
                select(func.avg(label.c.seconds_taken)).where(_is_effective(label, _label_voider))
            ).scalar()
            return StoreStats(
                segments=count(segments_table),
                queries=count(query),
                queries_pending=count(query, _OPEN),
                queries_leased=count(query, query.c.lease_labeler.is_not(None), query.c.lease_expires_at > now),
                labels=sum(choices.values()),
                labels_voided=count(label, label.c.choice == UNDO),
                choices=choices,
                labelers=count(labelers_table),
                mean_seconds_taken=None if mean_seconds is None else float(mean_seconds),
            )

    # ----------------------------------------------------------------------------------------- labelers

    def add_labeler(self, name: str) -> tuple[int, str]:
        """Register a person; returns ``(labeler_id, token)``. The token is shown once: only its hash is stored.

        Raises:
            DuplicateLabelerError: the name is taken.
            StoreError: the name is empty or longer than 200 characters.
        """
        self._check_name(name)
        token = secrets.token_urlsafe(32)
        try:
            with self._transaction(write=True) as conn:
                labeler_id = conn.execute(
                    insert(labelers_table).returning(labelers_table.c.id),
                    {"name": name, "token_hash": _hash_token(token), "created_at": self._clock()},
                ).scalar_one()
        except IntegrityError as error:
            raise DuplicateLabelerError(f"a labeler named {name!r} already exists in {self.url}") from error
        return int(labeler_id), token

    def get_or_create_labeler(self, name: str) -> Labeler:
        """The labeler called ``name``, created without a token if missing (e.g. ``teacher:oracle``)."""
        self._check_name(name)
        for _ in range(2):
            existing = self.get_labeler_by_name(name)
            if existing is not None:
                return existing
            try:
                with self._transaction(write=True) as conn:
                    row = conn.execute(
                        insert(labelers_table).returning(*labelers_table.c),
                        {"name": name, "token_hash": None, "created_at": self._clock()},
                    ).one()
                    return _labeler_from_row(row)
            except IntegrityError:
                continue  # created concurrently by another process; read it back
        raise StoreError(f"could not create labeler {name!r} in {self.url}")

    def labeler_for_token(self, token: str) -> Labeler | None:
        """The labeler whose token this is, or None."""
        with self._transaction() as conn:
            row = conn.execute(select(labelers_table).where(labelers_table.c.token_hash == _hash_token(token))).first()
        return None if row is None else _labeler_from_row(row)

    def get_labeler(self, labeler_id: int) -> Labeler:
        """The labeler record.

        Raises:
            UnknownLabelerError: no such labeler.
        """
        with self._transaction() as conn:
            return self._require_labeler(conn, labeler_id)

    def get_labeler_by_name(self, name: str) -> Labeler | None:
        """The labeler called ``name``, or None."""
        with self._transaction() as conn:
            row = conn.execute(select(labelers_table).where(labelers_table.c.name == name)).first()
        return None if row is None else _labeler_from_row(row)

    def labelers(self) -> list[Labeler]:
        """All labelers, oldest first."""
        with self._transaction() as conn:
            return [
                _labeler_from_row(row) for row in conn.execute(select(labelers_table).order_by(labelers_table.c.id))
            ]

    def _require_labeler(self, conn: Connection, labeler_id: int, lock: bool = False) -> Labeler:
        statement = _LABELER_BY_ID.with_for_update() if lock else _LABELER_BY_ID
        row = conn.execute(statement, {"p_labeler": labeler_id}).first()
        if row is None:
            raise UnknownLabelerError(f"unknown labeler id {labeler_id} in the store at {self.url}")
        self._known_labelers.add(labeler_id)
        return _labeler_from_row(row)

    def _check_labeler(self, conn: Connection, labeler_id: int) -> None:
        """:meth:`_require_labeler` without the read once an id was seen (labelers are never deleted)."""
        if labeler_id not in self._known_labelers:
            self._require_labeler(conn, labeler_id)

    @staticmethod
    def _check_name(name: str) -> None:
        if not name.strip() or len(name) > 200:
            raise StoreError(f"labeler names are 1-200 characters and not blank, got {name!r}")
