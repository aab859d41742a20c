"""The store's tables and indexes, the schema version, and the migration of older stores.

Labels are append-only: undo appends a record (choice ``undo``) whose ``supersedes`` names the voided label, and the
*effective* labels are the answers no record supersedes (:func:`is_effective`). Each query keeps ``labels_done``,
its count of effective answers, so that "still wants labels" (:data:`OPEN`) is a column comparison a partial index
serves.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

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
    exists,
    func,
    insert,
    inspect,
    select,
    text,
    update,
)
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError
from sqlalchemy.sql.elements import ColumnElement
from sqlalchemy.sql.selectable import NamedFromClause

from baselines.common.errors import ConfigError
from rlhf.store.records import UNDO

if TYPE_CHECKING:
    from rlhf.store.engine import Transactions

SCHEMA_VERSION = 5
"""2: queries count their labels (labels_done); 3: the loop's status is a record in the meta table; 4: labeler
quality estimates and operator weights (``rlhf_labeler_quality``); 5: queries can be closed (``closed_at``)."""
MAX_KEY_LENGTH = 200
"""Longest idempotency key."""
SCHEMA_KEY = "rlhf.schema_version"
ENV_KEY = "rlhf.env"
LOOP_STATUS_KEY = "rlhf.loop_status"
"""Keys of the meta table that the store itself writes (``rlhf.`` is reserved)."""

metadata = MetaData()

meta_table = Table(
    "rlhf_meta",
    metadata,
    Column("key", String(200), primary_key=True),
    Column("value", Text, nullable=False),
)

segments_table = Table(
    "rlhf_segments",
    metadata,
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
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("name", String(200), nullable=False, unique=True),
    Column("token_hash", String(64), nullable=True, unique=True),
    Column("created_at", Float, nullable=False),
)

queries_table = Table(
    "rlhf_queries",
    metadata,
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
    # Set when the run that asked the query ended before it had its labels: it is served and answered no more.
    Column("closed_at", Float, nullable=True),
    CheckConstraint("segment_a <> segment_b", name="ck_rlhf_queries_distinct_segments"),
    CheckConstraint("labels_wanted >= 1", name="ck_rlhf_queries_labels_wanted"),
    Index("ix_rlhf_queries_lease", "lease_labeler"),
)
Index("ix_rlhf_queries_priority", queries_table.c.priority.desc(), queries_table.c.id)


def is_open(query: NamedFromClause) -> ColumnElement[bool]:
    """SQL predicate on the queries table or an alias: the query still wants labels (and is not closed)."""
    return and_(query.c.labels_done < query.c.labels_wanted, query.c.closed_at.is_(None))


OPEN = is_open(queries_table)
"""SQL predicate: the query still wants labels (and is not closed); the open index's predicate."""
# The open queries in serving order: leasing walks this index and stops at the first match, however many queries
# were answered before.
open_index = Index(
    "ix_rlhf_queries_open",
    queries_table.c.priority.desc(),
    queries_table.c.id,
    sqlite_where=OPEN,
    postgresql_where=OPEN,
)

labels_table = Table(
    "rlhf_labels",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("query_id", Integer, ForeignKey("rlhf_queries.id"), nullable=False),
    Column("labeler_id", Integer, ForeignKey("rlhf_labelers.id"), nullable=False),
    Column("choice", String(8), nullable=False),
    Column("seconds_taken", Float, nullable=False),
    Column("created_at", Float, nullable=False),
    Column("idempotency_key", String(MAX_KEY_LENGTH), nullable=True),
    # Unique: a label is voided at most once, so two racing undos cannot void the same label twice.
    Column("supersedes", Integer, ForeignKey("rlhf_labels.id"), nullable=True, unique=True),
    CheckConstraint("choice IN ('a', 'b', 'tie', 'skip', 'undo')", name="ck_rlhf_labels_choice"),
    UniqueConstraint("labeler_id", "idempotency_key", name="uq_rlhf_labels_idempotency"),
    Index("ix_rlhf_labels_query", "query_id"),
    Index("ix_rlhf_labels_labeler", "labeler_id", "id"),
)

labeler_quality_table = Table(
    "rlhf_labeler_quality",
    metadata,
    Column("labeler_id", Integer, ForeignKey("rlhf_labelers.id"), primary_key=True, autoincrement=False),
    # The latest estimate (rlhf.labelers), all NULL until the loop records one; see LabelerQuality.
    Column("labels", Integer, nullable=True),
    Column("model_agreement", Float, nullable=True),
    Column("peer_agreement", Float, nullable=True),
    Column("accuracy", Float, nullable=True),
    Column("estimated_weight", Float, nullable=True),
    Column("estimated_at", Float, nullable=True),
    # The operator's weight, NULL for automatic; it outlives the estimates, which each round replaces.
    Column("weight_override", Float, nullable=True),
    Column("override_at", Float, nullable=True),
    CheckConstraint("weight_override >= 0", name="ck_rlhf_labeler_quality_override"),
)

_counted, _counted_voider = labels_table.alias("counted"), labels_table.alias("counted_voider")


def is_effective(label: NamedFromClause, voider: NamedFromClause) -> ColumnElement[bool]:
    """SQL predicate: ``label`` is an answer (not an undo record) and no undo record (``voider``) voids it."""
    return and_(label.c.choice != UNDO, ~exists().where(voider.c.supersedes == label.c.id))


def effective_count(query: NamedFromClause) -> ColumnElement[int]:
    """SQL: the effective labels of ``query``, counted (what ``labels_done`` holds; for migrations and checks)."""
    return (
        select(func.count())
        .select_from(_counted)
        .where(_counted.c.query_id == query.c.id, is_effective(_counted, _counted_voider))
        .scalar_subquery()
    )


def upsert(conn: Connection, table: Table, key: Any, values: dict[str, Any], key_column: str = "key") -> None:
    """Insert or update the row whose primary key ``key_column`` is ``key`` (a key/value table by default)."""
    column = table.c[key_column]
    if conn.dialect.name == "sqlite":
        sqlite_statement = sqlite_insert(table).values({key_column: key, **values})
        conn.execute(sqlite_statement.on_conflict_do_update(index_elements=[column], set_=values))
        return
    if conn.dialect.name == "postgresql":
        postgresql_statement = postgresql_insert(table).values({key_column: key, **values})
        conn.execute(postgresql_statement.on_conflict_do_update(index_elements=[column], set_=values))
        return
    if conn.execute(update(table).where(column == key).values(**values)).rowcount == 0:
        conn.execute(insert(table).values({key_column: key, **values}))


def check_version(conn: Connection, where: str) -> None:
    """Record the schema version in a new store, migrate an older one, refuse a newer one.

    Raises:
        ConfigError: the store at ``where`` has a schema version this code does not read.
    """
    stored = conn.execute(select(meta_table.c.value).where(meta_table.c.key == SCHEMA_KEY)).scalar()
    if stored is None:
        upsert(conn, meta_table, SCHEMA_KEY, {"value": json.dumps(SCHEMA_VERSION)})
    elif json.loads(stored) in (1, 2, 3, 4):
        _migrate(conn, json.loads(stored))
    elif json.loads(stored) != SCHEMA_VERSION:
        raise ConfigError(
            f"the preference store at {where} has schema version {stored}; this code reads version "
            f"{SCHEMA_VERSION}. Use a new database or a matching version of rlhf-pipeline"
        )


def _migrate(conn: Connection, version: int) -> None:
    """Schema 1 -> 2: queries gain ``labels_done`` (counted from the labels) and the open-queries index.
    2 -> 3: the loop's status moved from the ``rlhf_status`` table to the meta table (a status record, see
    ``LoopStatus``); the old table goes, and with the version an older server refuses the store instead of
    showing no status. 3 -> 4: the ``rlhf_labeler_quality`` table, created with the others (empty: no estimate, no
    operator weight); with the version, older code refuses the store instead of ignoring the operator's weights.
    4 -> 5: queries gain ``closed_at`` (none closed), and the open-queries index leaves closed ones out; with the
    version, older code refuses the store instead of serving closed pairs."""
    if version == 1:
        columns = {column["name"] for column in inspect(conn).get_columns(queries_table.name)}
        if "labels_done" not in columns:
            conn.execute(text(f"ALTER TABLE {queries_table.name} ADD COLUMN labels_done INTEGER NOT NULL DEFAULT 0"))
        conn.execute(update(queries_table).values(labels_done=effective_count(queries_table)))
    if version < 3:
        conn.execute(text("DROP TABLE IF EXISTS rlhf_status"))
    if version < 5:
        columns = {column["name"] for column in inspect(conn).get_columns(queries_table.name)}
        if "closed_at" not in columns:
            conn.execute(text(f"ALTER TABLE {queries_table.name} ADD COLUMN closed_at FLOAT"))
        conn.execute(text(f"DROP INDEX IF EXISTS {open_index.name}"))  # its predicate changed
        open_index.create(conn)
    upsert(conn, meta_table, SCHEMA_KEY, {"value": json.dumps(SCHEMA_VERSION)})


def create_or_check(transaction: Transactions, where: str) -> None:
    """Create the tables that are missing, then record, migrate or refuse the schema version (:func:`check_version`).

    Raises:
        ConfigError: the store at ``where`` has a schema version this code does not read.
        sqlalchemy.exc.DBAPIError: the database refuses (the caller says where).
    """
    try:
        with transaction(write=True) as conn:
            metadata.create_all(conn)
    except DBAPIError:
        # Another process may have created the tables between our check and our CREATE (PostgreSQL).
        if not set(metadata.tables) <= set(inspect(transaction.engine).get_table_names()):
            raise
    with transaction(write=True) as conn:
        check_version(conn, where)
