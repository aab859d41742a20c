"""The store's SQL, built once, and the pure helpers around it: rows <-> records, array packing, input checks.

Building a statement costs more than running it, so the statements of the hot paths (leasing and answering) are
built here once with bind parameters; parameter names start with ``p_`` (column names are reserved in UPDATE values).
Segment arrays are stored as ``np.save`` bytes (dtype and shape in the header, never pickles), zlib-compressed, so
they round-trip exactly.
"""

from __future__ import annotations

import hashlib
import io
import math
import re
import unicodedata
import zlib
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
from sqlalchemy import and_, bindparam, case, exists, func, insert, or_, select, update
from sqlalchemy.engine import Connection, Row
from sqlalchemy.sql.elements import BindParameter, ColumnElement
from sqlalchemy.sql.selectable import NamedFromClause

from rlhf.store.records import (
    CHOICES,
    UNDO,
    AlreadyLabeledError,
    IdempotencyConflictError,
    InvalidLabelError,
    Label,
    LabeledPair,
    Labeler,
    PairUnavailableError,
    Query,
    Segment,
    StoreError,
    StoreStats,
    UnknownQueryError,
)
from rlhf.store.schema import (
    MAX_KEY_LENGTH,
    OPEN,
    is_effective,
    is_open,
    labelers_table,
    labels_table,
    queries_table,
    segments_table,
)

_SEGMENT_ID_PATTERN = re.compile(r"[A-Za-z0-9_-]{1,64}")

# Aliases of the labels table, built once (building them per call costs more than the SQL it runs). Each role has
# its own pair so that subqueries nested in one statement never share an alias.
_own, _own_voider = labels_table.alias("own"), labels_table.alias("own_voider")
label, label_voider = labels_table.alias("label"), labels_table.alias("label_voider")
EFFECTIVE = is_effective(label, label_voider)
"""SQL predicate: the row of :data:`label` is an effective label."""


def answered_by(query: NamedFromClause, labeler_id: int | BindParameter[int]) -> ColumnElement[bool]:
    """SQL predicate: ``labeler_id`` has an effective label on ``query``."""
    return exists().where(
        _own.c.query_id == query.c.id, _own.c.labeler_id == labeler_id, is_effective(_own, _own_voider)
    )


# --------------------------------------------------------------------------------------------------- hot paths

_q = queries_table
_P_LABELER: BindParameter[int] = bindparam("p_labeler")
_P_NOW: BindParameter[float] = bindparam("p_now")
_P_QUERY: BindParameter[int] = bindparam("p_query")


def _wanted_by_labeler(query: NamedFromClause) -> ColumnElement[bool]:
    """SQL predicate on the queries table or an alias: it still wants labels, not from this labeler."""
    return and_(is_open(query), ~answered_by(query, _P_LABELER))


def _lease_free(query: NamedFromClause) -> ColumnElement[bool]:
    """SQL predicate: nobody holds the query's lease, it lapsed, or this labeler holds it."""
    return or_(query.c.lease_labeler.is_(None), query.c.lease_expires_at <= _P_NOW, query.c.lease_labeler == _P_LABELER)


def _serving_order(query: NamedFromClause) -> tuple[ColumnElement[Any], ...]:
    """Highest priority first (the open index's order)."""
    return query.c.priority.desc(), query.c.id


_WANTED_BY_LABELER = _wanted_by_labeler(_q)
_LEASE_FREE = _lease_free(_q)
SERVING_ORDER = _serving_order(_q)
# Two small queries rather than one ORDER BY "held first": each walks an index and stops at the first match.
HELD_QUERY = (
    select(_q.c.id)
    .where(_q.c.lease_labeler == _P_LABELER, _q.c.lease_expires_at > _P_NOW, _WANTED_BY_LABELER)
    .order_by(*SERVING_ORDER)
    .limit(1)
)
# No SKIP LOCKED here: this is the path that finds a pair even while another transaction holds its row (an answer
# in flight to a pair wanting two labels), waiting for it. PostgreSQL first tries LEASE_NEXT, which skips them.
FREE_QUERY = select(_q.c.id).where(_WANTED_BY_LABELER, _LEASE_FREE).order_by(*SERVING_ORDER).limit(1)

# PostgreSQL: the pair a labeler holds, else the first free one, leased in one statement (one round trip, run in
# autocommit). The free row is taken with SKIP LOCKED; the claim re-checks it under the row lock.
_held, _free = queries_table.alias("held"), queries_table.alias("free")
_HELD_ID = (
    select(_held.c.id)
    .where(_held.c.lease_labeler == _P_LABELER, _held.c.lease_expires_at > _P_NOW, _wanted_by_labeler(_held))
    .order_by(*_serving_order(_held))
    .limit(1)
    .scalar_subquery()
)
_FREE_ID = (
    select(_free.c.id)
    .where(_wanted_by_labeler(_free), _lease_free(_free))
    .order_by(*_serving_order(_free))
    .limit(1)
    .with_for_update(skip_locked=True, of=_free)
    .scalar_subquery()
)
LEASE_NEXT = (
    update(_q)
    .where(_q.c.id == func.coalesce(_HELD_ID, _FREE_ID), _WANTED_BY_LABELER, _LEASE_FREE)
    .values(lease_labeler=_P_LABELER, lease_expires_at=bindparam("p_until"))
    .returning(*_q.c)
)
# Optimistic claim: only succeeds if nobody leased the row since it was read.
CLAIM_QUERY = (
    update(_q)
    .where(_q.c.id == _P_QUERY, _WANTED_BY_LABELER, _LEASE_FREE)
    .values(lease_labeler=_P_LABELER, lease_expires_at=bindparam("p_until"))
    .returning(*_q.c)
)
# What an answer is checked against, read with the row locked (PostgreSQL; SQLite holds the writer lock).
LOCK_QUERY = (
    select(_q.c.labels_done, _q.c.labels_wanted, _q.c.lease_labeler, _q.c.lease_expires_at, _q.c.closed_at)
    .where(_q.c.id == _P_QUERY)
    .with_for_update()
)
LABEL_BY_KEY = select(labels_table).where(
    labels_table.c.labeler_id == _P_LABELER, labels_table.c.idempotency_key == bindparam("p_key")
)
ANSWER_OF_LABELER = select(_own.c.id).where(
    _own.c.query_id == _P_QUERY, _own.c.labeler_id == _P_LABELER, is_effective(_own, _own_voider)
)
# What the answer's checks read once the row is locked, in one statement: the label this labeler stored under the
# idempotency key, and this labeler's effective answer to the query (each None when there is none).
ANSWER_CHECKS = select(
    select(labels_table.c.id)
    .where(labels_table.c.labeler_id == _P_LABELER, labels_table.c.idempotency_key == bindparam("p_key"))
    .scalar_subquery()
    .label("keyed"),
    ANSWER_OF_LABELER.limit(1).scalar_subquery().label("answered"),
)
INSERT_LABEL = insert(labels_table).returning(*labels_table.c)
# An answer counts for its query and ends the answering labeler's lease on it; never past labels_wanted.
COUNT_ANSWER = (
    update(_q)
    .where(_q.c.id == _P_QUERY, OPEN)
    .values(
        labels_done=_q.c.labels_done + 1,
        lease_labeler=case((_q.c.lease_labeler == _P_LABELER, None), else_=_q.c.lease_labeler),
        lease_expires_at=case((_q.c.lease_labeler == _P_LABELER, None), else_=_q.c.lease_expires_at),
    )
)
# PostgreSQL: count the answer and insert it in one statement (a data-modifying CTE); no row back means the count
# found the query full.
_counted = COUNT_ANSWER.returning(_q.c.id).cte("counted")
_LABEL_VALUES = ("labeler_id", "choice", "seconds_taken", "created_at", "idempotency_key", "supersedes")
COUNT_AND_INSERT_LABEL = (
    insert(labels_table)
    .from_select(
        ["query_id", *_LABEL_VALUES],
        select(_counted.c.id, *(bindparam(f"v_{name}", type_=labels_table.c[name].type) for name in _LABEL_VALUES)),
    )
    .returning(*labels_table.c)
)
UNCOUNT_ANSWER = update(_q).where(_q.c.id == _P_QUERY).values(labels_done=_q.c.labels_done - 1)
LABELER_BY_ID = select(labelers_table).where(labelers_table.c.id == _P_LABELER)

# --------------------------------------------------------------------------------------------------- reads

EFFECTIVE_LABELS = (
    select(
        label.c.id.label("label_id"),
        label.c.query_id,
        _q.c.segment_a,
        _q.c.segment_b,
        label.c.choice,
        label.c.labeler_id,
        labelers_table.c.name.label("labeler"),
        label.c.seconds_taken,
        label.c.created_at,
        _q.c.round,
        _q.c.left_is_a,
    )
    .select_from(
        label.join(_q, _q.c.id == label.c.query_id).join(labelers_table, labelers_table.c.id == label.c.labeler_id)
    )
    .where(EFFECTIVE)
    .order_by(label.c.id)
)
"""The effective labels joined with their query's segments and labeler, oldest first (rows of
:func:`labeled_pair_from_row`)."""
LABEL_COUNTS = (
    select(labelers_table.c.name, func.count(label.c.id))
    .select_from(labelers_table.outerjoin(label, and_(label.c.labeler_id == labelers_table.c.id, EFFECTIVE)))
    .group_by(labelers_table.c.id, labelers_table.c.name)
    .order_by(labelers_table.c.id)
)
"""``(labeler name, effective labels)`` of every labeler, oldest labeler first."""
LAST_EFFECTIVE_OF_LABELER = (
    select(label).where(label.c.labeler_id == _P_LABELER, EFFECTIVE).order_by(label.c.id.desc()).limit(1)
)


# --------------------------------------------------------------------------------------------------- records


def pack(array: np.ndarray) -> bytes:
    """Array -> compressed ``np.save`` bytes (dtype and shape kept exactly, pickles refused)."""
    if array.dtype.hasobject:
        raise StoreError(f"segment arrays must have a numeric or bool dtype, not {array.dtype}")
    buffer = io.BytesIO()
    np.save(buffer, np.ascontiguousarray(array), allow_pickle=False)
    return zlib.compress(buffer.getvalue(), 6)


def unpack(blob: bytes) -> np.ndarray:
    array: np.ndarray = np.load(io.BytesIO(zlib.decompress(blob)), allow_pickle=False)
    return array


def hash_token(token: str) -> str:
    """What the store keeps of a labeler's token: its SHA-256, hex."""
    # Tokens are 256-bit random strings, so a fast hash is enough: there is nothing to brute-force.
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def query_from_row(row: Row[Any]) -> Query:
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


def label_from_row(row: Row[Any]) -> Label:
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


def labeler_from_row(row: Row[Any]) -> Labeler:
    return Labeler(
        id=int(row.id), name=str(row.name), created_at=float(row.created_at), has_token=row.token_hash is not None
    )


def labeled_pair_from_row(row: Row[*tuple[Any, ...]]) -> LabeledPair:
    return LabeledPair(
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


def segment_from_row(row: Row[Any]) -> Segment:
    return Segment(
        id=str(row.id),
        obs=unpack(row.obs),
        actions=unpack(row.actions),
        true_rewards=unpack(row.true_rewards),
        mask=unpack(row.mask),
    )


def segment_rows(segments: Sequence[Segment], round: int, now: float) -> list[dict[str, Any]]:
    """Rows of new segments (without clips); StoreError for a malformed id, an id given twice or an object array."""
    rows = []
    for segment in segments:
        if not _SEGMENT_ID_PATTERN.fullmatch(segment.id):
            raise StoreError(f"segment ids are 1-64 letters, digits, '_' or '-', not {segment.id!r}")
        rows.append(
            {
                "id": segment.id,
                "length": segment.length,
                "obs": pack(segment.obs),
                "actions": pack(segment.actions),
                "true_rewards": pack(segment.true_rewards),
                "mask": pack(np.asarray(segment.mask)),
                "round": int(round),
                "created_at": now,
                "clip_path": None,
            }
        )
    if len({row["id"] for row in rows}) != len(rows):
        raise StoreError("add_segments got the same segment id twice")
    return rows


def query_rows(
    pairs: Sequence[tuple[str, str]],
    priorities: Sequence[float],
    left_is_a: Sequence[bool],
    round: int,
    labels_wanted: int,
    now: float,
) -> list[dict[str, Any]]:
    """Rows of new queries (see :meth:`PreferenceStore.add_queries`); StoreError for inputs it refuses."""
    if not (len(pairs) == len(priorities) == len(left_is_a)):
        raise StoreError(
            f"add_queries needs one priority and one left_is_a per pair, got {len(pairs)} pairs, "
            f"{len(priorities)} priorities, {len(left_is_a)} left_is_a"
        )
    if labels_wanted < 1:
        raise StoreError(f"labels_wanted must be at least 1, not {labels_wanted}")
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
    return rows


def check_key(key: str | None) -> None:
    """Refuse an idempotency key that is empty or too long."""
    if key is not None and not 0 < len(key) <= MAX_KEY_LENGTH:
        raise InvalidLabelError(f"idempotency keys are 1-{MAX_KEY_LENGTH} characters, got {len(key)}")


def check_answer(choice: str, seconds_taken: float, key: str | None) -> None:
    """Refuse an answer with a choice outside ``a|b|tie|skip``, a bad ``seconds_taken`` or a bad key."""
    if choice not in CHOICES:
        raise InvalidLabelError(f"choice must be one of {', '.join(CHOICES)}, not {choice!r}")
    if not (math.isfinite(float(seconds_taken)) and float(seconds_taken) >= 0):
        raise InvalidLabelError(f"seconds_taken must be a finite number >= 0, not {seconds_taken}")
    check_key(key)


_UNSHOWABLE = frozenset(("Cc", "Cf", "Cs", "Zl", "Zp"))
"""Unicode categories refused in labeler names: controls, format characters (bidi overrides, zero-width ones),
lone surrogates and line separators, which would garble or disguise a name on the admin page and in exports."""


def check_labeler_name(name: str) -> None:
    if not name.strip() or len(name) > 200:
        raise StoreError(f"labeler names are 1-200 characters and not blank, got {name!r}")
    bad = next((char for char in name if unicodedata.category(char) in _UNSHOWABLE), None)
    if bad is not None:
        raise StoreError(
            f"labeler names cannot hold control, format or bidi characters; {name!r} holds U+{ord(bad):04X}"
        )


def chunks(items: Sequence[str], size: int = 500) -> Iterator[Sequence[str]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def stored_segment_ids(conn: Connection, segment_ids: Sequence[str]) -> set[str]:
    """Those of ``segment_ids`` that the store holds."""
    found: set[str] = set()
    for chunk in chunks(segment_ids):
        found.update(conn.execute(select(segments_table.c.id).where(segments_table.c.id.in_(chunk))).scalars())
    return found


def insert_answer(
    conn: Connection,
    labeler_id: int,
    answer: tuple[int, str, float, str | None],
    now: float,
    where: str,
    require_lease: bool = False,
) -> Label:
    """Append one checked answer ``(query_id, choice, seconds_taken, idempotency_key)`` and count it for its query
    (see :meth:`PreferenceStore.add_label`; ``where`` names the store in messages)."""
    query_id, choice, seconds_taken, key = answer
    # Lock the query row first (PostgreSQL; SQLite already holds the writer lock): answers to one query then run
    # one at a time, and each sees the count and lease that the answer before it committed.
    params: dict[str, Any] = {"p_query": query_id, "p_labeler": labeler_id}
    locked = conn.execute(LOCK_QUERY, params).first()
    if locked is None:
        raise UnknownQueryError(f"unknown query id {query_id} in the store at {where}")
    # Read after the lock is held (a statement of its own, so it sees what the answer before it committed).
    checks = conn.execute(ANSWER_CHECKS, {**params, "p_key": key}).one()
    if checks.keyed is not None:
        previous = label_by_id(conn, int(checks.keyed))
        if previous.query_id != query_id or previous.choice != choice:
            raise IdempotencyConflictError(
                f"idempotency key {key!r} was already used by labeler {labeler_id} for another request "
                f"(query {previous.query_id}, choice {previous.choice})"
            )
        return previous
    if checks.answered is not None:
        raise AlreadyLabeledError(
            f"labeler {labeler_id} already answered query {query_id} (label {checks.answered}); undo it to change it"
        )
    check_open(locked, query_id, labeler_id, now, require_lease)
    values = {
        "labeler_id": labeler_id,
        "choice": choice,
        "seconds_taken": float(seconds_taken),
        "created_at": now,
        "idempotency_key": key,
        "supersedes": None,
    }
    if conn.dialect.name == "postgresql":
        inserted = conn.execute(COUNT_AND_INSERT_LABEL, {**params, **{f"v_{k}": v for k, v in values.items()}}).first()
        if inserted is None:  # the row is locked: only a bug gets here
            raise PairUnavailableError(f"query {query_id} already has the labels it wants", "full")
        return label_from_row(inserted)
    if conn.execute(COUNT_ANSWER, params).rowcount != 1:  # the row is locked: only a bug gets here
        raise PairUnavailableError(f"query {query_id} already has the labels it wants", "full")
    return label_from_row(conn.execute(INSERT_LABEL, {"query_id": query_id, **values}).one())


def check_open(locked: Row[*tuple[Any, ...]], query_id: int, labeler_id: int, now: float, require_lease: bool) -> None:
    """Refuse an answer to a query (its locked row: count and lease) that has all its labels, that another labeler
    holds a live lease on, or, with ``require_lease``, that this labeler does not hold (a lease that lapsed stays
    theirs until another labeler takes the query), or that was closed."""
    if locked.closed_at is not None:
        raise PairUnavailableError(f"query {query_id} is closed: the run that asked it has ended", "closed")
    if int(locked.labels_done) >= int(locked.labels_wanted):
        raise PairUnavailableError(f"query {query_id} already has the labels it wants", "full")
    holder, until = locked.lease_labeler, locked.lease_expires_at
    if holder is not None and holder != labeler_id and until is not None and float(until) > now:
        raise PairUnavailableError(f"query {query_id} is leased to another labeler", "leased")
    if require_lease and holder != labeler_id:
        raise PairUnavailableError(f"query {query_id} is not leased to labeler {labeler_id}", "not_served")


def label_by_key(conn: Connection, labeler_id: int, key: str) -> Label | None:
    row = conn.execute(LABEL_BY_KEY, {"p_labeler": labeler_id, "p_key": key}).first()
    return None if row is None else label_from_row(row)


def label_by_id(conn: Connection, label_id: int) -> Label:
    return label_from_row(conn.execute(select(labels_table).where(labels_table.c.id == label_id)).one())


def read_stats(conn: Connection, now: float) -> StoreStats:
    """The counts of :meth:`PreferenceStore.stats` (leases that lapse before ``now`` are not counted)."""

    def count(table: NamedFromClause, *conditions: ColumnElement[bool]) -> int:
        return int(conn.execute(select(func.count()).select_from(table).where(*conditions)).scalar_one())

    choices = {choice: 0 for choice in CHOICES}
    for choice, n in conn.execute(select(label.c.choice, func.count()).where(EFFECTIVE).group_by(label.c.choice)):
        choices[str(choice)] = int(n)
    mean_seconds = conn.execute(select(func.avg(label.c.seconds_taken)).where(EFFECTIVE)).scalar()
    query = queries_table
    return StoreStats(
        segments=count(segments_table),
        queries=count(query),
        queries_pending=count(query, OPEN),
        queries_leased=count(query, query.c.lease_labeler.is_not(None), query.c.lease_expires_at > now),
        labels=sum(choices.values()),
        labels_voided=count(label, label.c.choice == UNDO),
        choices=choices,
        labelers=count(labelers_table),
        mean_seconds_taken=None if mean_seconds is None else float(mean_seconds),
    )


def void_last(
    conn: Connection, labeler_id: int, key: str | None, now: float, lease_until: float | None = None
) -> Label | None:
    """Append an undo record voiding the labeler's latest effective label and uncount it; return the voided label
    (see :meth:`PreferenceStore.undo_last`). With ``lease_until``, lease its query back to the labeler until then
    (unless another labeler holds a live lease on it). A retry with the same ``key`` returns the label it voided."""
    if key is not None:
        previous = label_by_key(conn, labeler_id, key)
        if previous is not None:
            if not previous.is_undo or previous.supersedes is None:
                raise IdempotencyConflictError(
                    f"idempotency key {key!r} was already used by labeler {labeler_id} for an answer, not an undo"
                )
            return label_by_id(conn, previous.supersedes)
    row = conn.execute(LAST_EFFECTIVE_OF_LABELER, {"p_labeler": labeler_id}).first()
    if row is None:
        return None
    voided = label_from_row(row)
    undo = {
        "query_id": voided.query_id,
        "labeler_id": labeler_id,
        "choice": UNDO,
        "seconds_taken": 0.0,
        "created_at": now,
        "idempotency_key": key,
        "supersedes": voided.id,
    }
    conn.execute(insert(labels_table), undo)
    conn.execute(UNCOUNT_ANSWER, {"p_query": voided.query_id})
    if lease_until is not None:
        claim = {"p_query": voided.query_id, "p_labeler": labeler_id, "p_now": now, "p_until": lease_until}
        conn.execute(CLAIM_QUERY, claim).first()  # claimed, or held by another labeler: then theirs stays
    return voided
