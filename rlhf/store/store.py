"""The :class:`PreferenceStore`: segments, queries, labels, labelers and the loop's status behind one engine."""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import time
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

from sqlalchemy import and_, func, insert, select, text, update
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.sql.elements import ColumnElement

from baselines.common.errors import ConfigError
from rlhf.store import statements as sql
from rlhf.store.engine import Synchronous, Transactions, open_engine, store_url
from rlhf.store.quality import LabelerQualityMethods
from rlhf.store.records import (
    DuplicateLabelerError,
    EnvBinding,
    Label,
    LabeledPair,
    Labeler,
    LoopStatus,
    Query,
    Segment,
    StoreError,
    StoreStats,
    UnknownLabelerError,
    UnknownQueryError,
    UnknownSegmentError,
)
from rlhf.store.schema import (
    ENV_KEY,
    LOOP_STATUS_KEY,
    OPEN,
    create_or_check,
    labelers_table,
    labels_table,
    meta_table,
    queries_table,
    segments_table,
    upsert,
)

DEFAULT_LEASE_SECONDS = 600.0
_MAX_CLAIM_ATTEMPTS = 100


class PreferenceStore(LabelerQualityMethods):
    """Segments, queries, labels and labelers (and their quality, :class:`LabelerQualityMethods`) behind one
    SQLAlchemy engine.

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
        sqlite_synchronous: Synchronous = "FULL",
    ) -> None:
        url = store_url(url_or_path)
        self.url = url.render_as_string(hide_password=True)
        """The URL with any password hidden, for messages."""
        self._clock = clock
        self._known_labelers: set[int] = set()
        self._engine = open_engine(url, busy_timeout_s, sqlite_synchronous)
        self._transaction = Transactions(self._engine)
        try:
            create_or_check(self._transaction, self.url)
        except DBAPIError as error:
            self._engine.dispose()
            reason = " ".join(str(error.orig).split())  # one line: drivers' messages span several
            raise ConfigError(f"cannot open the preference store at {self.url}: {reason}") from error
        except ConfigError:
            self._engine.dispose()
            raise

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
        try:
            with self._transaction.batch():
                yield
        except BaseException:
            self._known_labelers.clear()  # a labeler added in the batch may have been rolled back
            raise

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
            upsert(conn, meta_table, key, {"value": json.dumps(value)})

    def get_meta(self, key: str, default: Any = None) -> Any:
        """The value recorded under ``key``, or ``default``."""
        with self._transaction() as conn:
            stored = self._meta(conn, key)
        return default if stored is None else json.loads(stored)

    @staticmethod
    def _meta(conn: Connection, key: str) -> str | None:
        value = conn.execute(select(meta_table.c.value).where(meta_table.c.key == key)).scalar()
        return None if value is None else str(value)

    def bind_env(
        self, env_id: str, obs_shape: Sequence[int], action_spec: Mapping[str, Any], segment_length: int
    ) -> EnvBinding:
        """Record which env this store belongs to (first call), or check that it is the same env.

        Args:
            env_id: gymnasium id, e.g. ``CartPole-v1``.
            obs_shape: shape of one observation.
            action_spec: JSON description of the action space (see :func:`rlhf.segments.describe_action_space`).
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
        try:
            with self._transaction(write=True) as conn:
                stored = self._env(conn)
                if stored is None:
                    # A plain INSERT, not an upsert: of two processes binding at once, the second one fails here
                    # and then compares against the first one's binding below.
                    conn.execute(insert(meta_table).values(key=ENV_KEY, value=json.dumps(wanted.to_json())))
                    return wanted
        except IntegrityError:
            stored = self.env()
            if stored is None:
                raise
        difference = stored.difference(wanted)
        if difference is None:
            return stored
        raise ConfigError(f"store at {self.url} holds {difference}; use a new run folder or database")

    def env(self) -> EnvBinding | None:
        """The env recorded by :meth:`bind_env`, or None if the store is not bound yet."""
        with self._transaction() as conn:
            return self._env(conn)

    def _env(self, conn: Connection) -> EnvBinding | None:
        stored = self._meta(conn, ENV_KEY)
        return None if stored is None else EnvBinding.from_json(json.loads(stored))

    def record_loop_status(self, report: LoopStatus, rewind_to: int | None = None) -> LoopStatus:
        """Record what the RLHF loop reports, for the labeling service; returns the status now stored.

        Counters replace the stored ones; a measurement the report makes replaces the stored one and joins the
        history, one it leaves None keeps its last value (see :meth:`LoopStatus.followed_by`). A resumed run
        passes ``rewind_to`` (its checkpoint's env steps): the history past it is dropped, as it is redone.

        Raises:
            StoreError: the report carries a history (the store keeps it).
        """
        with self._transaction(write=True) as conn:
            previous = self._loop_status(conn) or LoopStatus(0, 0, 0, 0, 0)
            status = previous.rewound(rewind_to).followed_by(report, now=self._clock())
            upsert(conn, meta_table, LOOP_STATUS_KEY, {"value": json.dumps(status.to_json(), allow_nan=False)})
        return status

    def loop_status(self) -> LoopStatus | None:
        """The loop's status as last recorded by :meth:`record_loop_status`, or None before the first.

        Raises:
            StoreError: the stored status is malformed.
        """
        with self._transaction() as conn:
            return self._loop_status(conn)

    def _loop_status(self, conn: Connection) -> LoopStatus | None:
        stored = self._meta(conn, LOOP_STATUS_KEY)
        try:
            return None if stored is None else LoopStatus.from_json(json.loads(stored))
        except (StoreError, ValueError) as error:
            raise StoreError(f"the loop status in the store at {self.url} is malformed: {error}") from None

    # ----------------------------------------------------------------------------------------- segments

    def add_segments(self, segments: Sequence[Segment], round: int = 0) -> None:
        """Store segments (frames are not stored: clips are files, see :meth:`set_clip_path`).

        Raises:
            StoreError: an id is malformed or already stored, or an array has an object dtype.
            ConfigError: a segment does not match the env recorded by :meth:`bind_env`.
        """
        rows = sql.segment_rows(segments, round, self._clock())
        if not rows:
            return
        with self._transaction(write=True) as conn:
            binding = self._env(conn)
            if binding is not None:
                binding.check_segments(segments, self.url)
            duplicates = sql.stored_segment_ids(conn, [str(row["id"]) for row in rows])
            if duplicates:
                raise StoreError(f"segments already stored: {', '.join(sorted(duplicates)[:5])}")
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
            for chunk in sql.chunks(wanted):
                for row in conn.execute(select(segments_table).where(segments_table.c.id.in_(chunk))):
                    found[str(row.id)] = sql.segment_from_row(row)
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
        rows = sql.query_rows(pairs, priorities, left_is_a, round, labels_wanted, self._clock())
        if not rows:
            return []
        referenced = sorted({segment_id for pair in pairs for segment_id in pair})
        with self._transaction(write=True) as conn:
            known = sql.stored_segment_ids(conn, referenced)
            missing = [segment_id for segment_id in referenced if segment_id not in known]
            if missing:
                raise UnknownSegmentError(f"queries refer to unknown segments: {', '.join(missing[:5])}")
            statement = insert(queries_table).returning(queries_table.c.id, sort_by_parameter_order=True)
            query_ids = [int(query_id) for query_id in conn.execute(statement, rows).scalars()]
        if self._engine.dialect.name == "postgresql":
            # Fresh statistics, as PostgreSQL's docs advise after a bulk load: planned from a table it believes
            # nearly empty, serving the next pair scans every open query (0.5 s at 5000) instead of taking the
            # first from the index; autovacuum would only analyze it up to a minute later. The queries are stored
            # already: statistics that could not be refreshed now are left to autovacuum.
            with contextlib.suppress(DBAPIError), self._transaction(write=True) as conn:
                conn.execute(text(f"ANALYZE {queries_table.name}"))
        return query_ids

    def get_query(self, query_id: int) -> Query:
        """The query record.

        Raises:
            UnknownQueryError: no such query.
        """
        with self._transaction() as conn:
            row = conn.execute(select(queries_table).where(queries_table.c.id == query_id)).first()
        if row is None:
            raise UnknownQueryError(f"unknown query id {query_id} in the store at {self.url}")
        return sql.query_from_row(row)

    def get_queries(self, query_ids: Sequence[int]) -> dict[int, Query]:
        """The stored queries among ``query_ids``, by id (one statement per 500 ids; unknown ids are left out)."""
        wanted = sorted(set(query_ids))
        found: dict[int, Query] = {}
        with self._transaction() as conn:
            for start in range(0, len(wanted), 500):
                chunk = wanted[start : start + 500]
                for row in conn.execute(select(queries_table).where(queries_table.c.id.in_(chunk))):
                    found[int(row.id)] = sql.query_from_row(row)
        return found

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
        if self._engine.dialect.name == "postgresql":
            now = self._clock()
            params = {"p_labeler": labeler_id, "p_now": now, "p_until": now + float(lease_seconds)}
            with self._transaction.autocommit() as conn:
                self._check_labeler(conn, labeler_id)
                claimed = conn.execute(sql.LEASE_NEXT, params).first()
            if claimed is not None:
                return sql.query_from_row(claimed)
            # Nothing to serve, or the claim's re-check found the row taken: the statements below tell which.
        for _ in range(_MAX_CLAIM_ATTEMPTS):
            with self._transaction(write=True) as conn:
                self._check_labeler(conn, labeler_id)
                now = self._clock()
                params = {"p_labeler": labeler_id, "p_now": now}
                candidate = conn.execute(sql.HELD_QUERY, params).scalar()
                if candidate is None:
                    candidate = conn.execute(sql.FREE_QUERY, params).scalar()
                if candidate is None:
                    return None
                claim = {**params, "p_query": candidate, "p_until": now + float(lease_seconds)}
                claimed = conn.execute(sql.CLAIM_QUERY, claim).first()
                if claimed is not None:
                    return sql.query_from_row(claimed)
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

    def close_open_queries(self) -> int:
        """Close every query that still wants labels, because the run that asked them has ended: they are served no
        more and answers to them are refused (``PairUnavailableError``, reason ``closed``); the labels they have
        stay. Returns how many were closed."""
        with self._transaction(write=True) as conn:
            result = conn.execute(update(queries_table).where(OPEN).values(closed_at=self._clock()))
            return int(result.rowcount)

    def open_label_count(self) -> int:
        """Labels the open queries still want, in all (a query wanting 2 with 1 in counts 1)."""
        wanted = func.coalesce(func.sum(queries_table.c.labels_wanted - queries_table.c.labels_done), 0)
        with self._transaction() as conn:
            return int(conn.execute(select(wanted).where(OPEN)).scalar_one())

    def last_label_time(self, labeler_ids: Collection[int] | None = None) -> float | None:
        """When the newest label (or undo) was recorded, of these labelers (None: anyone), in the store's clock;
        None before the first."""
        statement = select(func.max(labels_table.c.created_at))
        if labeler_ids is not None:
            statement = statement.where(labels_table.c.labeler_id.in_(sorted(labeler_ids)))
        with self._transaction() as conn:
            latest = conn.execute(statement).scalar()
        return None if latest is None else float(latest)

    def pending_queries(self, labeler_id: int | None = None, limit: int | None = None) -> list[Query]:
        """Queries that still want labels (and that ``labeler_id`` has not answered), highest priority first.

        Takes no lease: meant for simulated teachers, which answer them in bulk with :meth:`add_labels`.
        """
        statement = select(queries_table).where(self._wanted(labeler_id)).order_by(*sql.SERVING_ORDER).limit(limit)
        with self._transaction() as conn:
            return [sql.query_from_row(row) for row in conn.execute(statement)]

    def queue_size(self, labeler_id: int | None = None) -> int:
        """Queries that still want labels (leased ones included); with a labeler, those this labeler may answer."""
        statement = select(func.count()).select_from(queries_table).where(self._wanted(labeler_id))
        with self._transaction() as conn:
            return int(conn.execute(statement).scalar_one())

    @staticmethod
    def _wanted(labeler_id: int | None) -> ColumnElement[bool]:
        return OPEN if labeler_id is None else and_(OPEN, ~sql.answered_by(queries_table, labeler_id))

    # ----------------------------------------------------------------------------------------- labels

    def add_label(
        self,
        query_id: int,
        labeler_id: int,
        choice: str,
        seconds_taken: float,
        idempotency_key: str | None = None,
        *,
        require_lease: bool = False,
    ) -> Label:
        """Append one answer and release the labeler's lease on the query.

        A label is accepted when the labeler has no effective answer on the query yet, the query still wants labels
        (``labels_done < labels_wanted``) and no other labeler holds a live lease on it; a late answer after a lapsed
        lease that nobody took since is still data. These are checked with the query's row locked, so concurrent
        answers from any number of processes never give a query more labels than it wants. A retry with the same
        ``idempotency_key`` returns the stored label instead of adding a second one (whatever the query's state).

        Args:
            query_id: the query answered.
            labeler_id: who answers.
            choice: ``a``, ``b``, ``tie`` or ``skip`` about the query's segments a/b (not screen sides).
            seconds_taken: time spent, >= 0.
            idempotency_key: optional client key, unique per labeler.
            require_lease: also refuse the answer unless this labeler holds the query's lease (live, or lapsed and
                not taken by anyone since): a labeler answers only what :meth:`lease_next` served them.

        Raises:
            InvalidLabelError: bad choice or seconds.
            UnknownQueryError, UnknownLabelerError: unknown ids.
            AlreadyLabeledError: the labeler already answered this query.
            PairUnavailableError: the query has all its labels, another labeler holds it, or (``require_lease``)
                this labeler does not; its ``reason`` says which.
            IdempotencyConflictError: the key was used for a different request.
        """
        answer = (query_id, choice, seconds_taken, idempotency_key)
        return self.add_labels(labeler_id, [answer], require_lease=require_lease)[0]

    def add_labels(
        self,
        labeler_id: int,
        answers: Sequence[tuple[int, str, float, str | None]],
        *,
        require_lease: bool = False,
    ) -> list[Label]:
        """Append several answers of one labeler in one transaction (simulated teachers label in bulk).

        Args:
            labeler_id: who answers.
            answers: ``(query_id, choice, seconds_taken, idempotency_key)`` tuples; see :meth:`add_label`.
            require_lease: see :meth:`add_label`.

        Returns:
            The labels, in the order of ``answers``. Raises (and stores nothing) if any answer is refused.
        """
        for _query_id, choice, seconds_taken, key in answers:
            sql.check_answer(choice, seconds_taken, key)

        def insert_all(conn: Connection) -> list[Label]:
            return [
                sql.insert_answer(conn, labeler_id, answer, self._clock(), self.url, require_lease)
                for answer in answers
            ]

        try:
            with self._transaction(write=True) as conn:
                self._check_labeler(conn, labeler_id)
                return insert_all(conn)
        except IntegrityError:
            # PostgreSQL: a concurrent retry with the same idempotency key committed first. Replaying now finds it.
            if not any(answer[3] for answer in answers):
                raise
            with self._transaction(write=True) as conn:
                return insert_all(conn)

    def undo_last(
        self, labeler_id: int, idempotency_key: str | None = None, lease_seconds: float | None = None
    ) -> Label | None:
        """Void this labeler's most recent effective label by appending an undo record.

        The voided query returns to the queue for this labeler (and for others if it now wants labels again).
        Calling again undoes the label before that. A retry with the same ``idempotency_key`` voids nothing more.

        Args:
            labeler_id: whose latest label to void.
            idempotency_key: optional client key, unique per labeler.
            lease_seconds: if given, the voided query is leased to this labeler for that long in the same
                transaction (unless another labeler holds a live lease on it), so that their corrected answer
                is not beaten by someone else being served the query first.

        Returns:
            The label that was voided, or None if the labeler has no effective label.

        Raises:
            UnknownLabelerError: no such labeler.
            IdempotencyConflictError: the key was used for an answer, not an undo.
            StoreError: ``lease_seconds`` is not positive.
        """
        sql.check_key(idempotency_key)
        if lease_seconds is not None and not lease_seconds > 0:
            raise StoreError(f"lease_seconds must be positive, not {lease_seconds}")
        with self._transaction(write=True) as conn:
            # Lock the labeler row (PostgreSQL) so this labeler's undos run one at a time.
            self._require_labeler(conn, labeler_id, lock=True)
            now = self._clock()
            lease_until = None if lease_seconds is None else now + float(lease_seconds)
            return sql.void_last(conn, labeler_id, idempotency_key, now, lease_until)

    def labels(self, labeler_id: int | None = None) -> list[Label]:
        """Every label record (answers and undo records), oldest first; the audit trail."""
        statement = select(labels_table).order_by(labels_table.c.id)
        if labeler_id is not None:
            statement = statement.where(labels_table.c.labeler_id == labeler_id)
        with self._transaction() as conn:
            return [sql.label_from_row(row) for row in conn.execute(statement)]

    def effective_labels(self, include_skips: bool = True) -> list[LabeledPair]:
        """The labels no undo voided, joined with their query's segments and labeler, oldest first."""
        statement = sql.EFFECTIVE_LABELS
        if not include_skips:
            statement = statement.where(sql.label.c.choice != "skip")
        with self._transaction() as conn:
            return [sql.labeled_pair_from_row(row) for row in conn.execute(statement)]

    def label_counts(self) -> dict[str, int]:
        """Effective labels (skips included) per labeler name; labelers without labels count 0."""
        with self._transaction() as conn:
            return {str(name): int(count) for name, count in conn.execute(sql.LABEL_COUNTS)}

    def stats(self) -> StoreStats:
        """Counts for dashboards, read in one consistent snapshot."""
        with self._transaction() as conn:
            return sql.read_stats(conn, now=self._clock())

    # ----------------------------------------------------------------------------------------- labelers

    def add_labeler(self, name: str) -> tuple[int, str]:
        """Register a person; returns ``(labeler_id, token)``. The token is shown once: only its hash is stored.

        Raises:
            DuplicateLabelerError: the name is taken.
            StoreError: the name is empty or longer than 200 characters.
        """
        sql.check_labeler_name(name)
        token = secrets.token_urlsafe(32)
        try:
            with self._transaction(write=True) as conn:
                labeler_id = conn.execute(
                    insert(labelers_table).returning(labelers_table.c.id),
                    {"name": name, "token_hash": sql.hash_token(token), "created_at": self._clock()},
                ).scalar_one()
        except IntegrityError as error:
            raise DuplicateLabelerError(f"a labeler named {name!r} already exists in {self.url}") from error
        return int(labeler_id), token

    def get_or_create_labeler(self, name: str) -> Labeler:
        """The labeler called ``name``, created without a token if missing (e.g. ``teacher:oracle``)."""
        sql.check_labeler_name(name)
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
                    return sql.labeler_from_row(row)
            except IntegrityError:
                continue  # created concurrently by another process; read it back
        raise StoreError(f"could not create labeler {name!r} in {self.url}")

    def labeler_for_token(self, token: str) -> Labeler | None:
        """The labeler whose token this is, or None."""
        return self.labeler_for_token_hash(sql.hash_token(token))

    def labeler_for_token_hash(self, token_hash: str) -> Labeler | None:
        """The labeler whose token has this hash (:func:`hash_token`), or None (revoked, rotated, never issued)."""
        statement = select(labelers_table).where(labelers_table.c.token_hash == token_hash)
        with self._transaction() as conn:
            row = conn.execute(statement).first()
        return None if row is None else sql.labeler_from_row(row)

    def revoke_token(self, name: str) -> Labeler:
        """Remove the token of the labeler called ``name``: their URL stops working, their labels stay.

        Raises:
            UnknownLabelerError: no such labeler.
        """
        return self._set_token_hash(name, None)

    def rotate_token(self, name: str) -> tuple[Labeler, str]:
        """Give the labeler called ``name`` a new token (the old one stops working); returns it, shown once.

        Raises:
            UnknownLabelerError: no such labeler.
        """
        token = secrets.token_urlsafe(32)
        return self._set_token_hash(name, sql.hash_token(token)), token

    def _set_token_hash(self, name: str, token_hash: str | None) -> Labeler:
        with self._transaction(write=True) as conn:
            row = conn.execute(
                update(labelers_table)
                .where(labelers_table.c.name == name)
                .values(token_hash=token_hash)
                .returning(*labelers_table.c)
            ).first()
        if row is None:
            raise UnknownLabelerError(f"no labeler named {name!r} in the store at {self.url}")
        return sql.labeler_from_row(row)

    def get_labeler(self, labeler_id: int) -> Labeler:
        """The labeler record; UnknownLabelerError if there is none."""
        with self._transaction() as conn:
            return self._require_labeler(conn, labeler_id)

    def get_labeler_by_name(self, name: str) -> Labeler | None:
        """The labeler called ``name``, or None."""
        with self._transaction() as conn:
            row = conn.execute(select(labelers_table).where(labelers_table.c.name == name)).first()
        return None if row is None else sql.labeler_from_row(row)

    def labelers(self) -> list[Labeler]:
        """All labelers, oldest first."""
        with self._transaction() as conn:
            rows = conn.execute(select(labelers_table).order_by(labelers_table.c.id))
            return [sql.labeler_from_row(row) for row in rows]

    def _require_labeler(self, conn: Connection, labeler_id: int, lock: bool = False) -> Labeler:
        statement = sql.LABELER_BY_ID.with_for_update() if lock else sql.LABELER_BY_ID
        row = conn.execute(statement, {"p_labeler": labeler_id}).first()
        if row is None:
            raise UnknownLabelerError(f"unknown labeler id {labeler_id} in the store at {self.url}")
        self._known_labelers.add(labeler_id)
        return sql.labeler_from_row(row)

    def _check_labeler(self, conn: Connection, labeler_id: int) -> None:
        """:meth:`_require_labeler` without the read once an id was seen (labelers are never deleted)."""
        if labeler_id not in self._known_labelers:
            self._require_labeler(conn, labeler_id)
