"""The preference store: segments, queries, labels and labelers in one SQL database (SQLite by default).

The RLHF loop writes segments and queries; labelers (people through the labeling service, or simulated teachers)
lease queries and append labels; reward training reads the effective labels back; the loop reports its status
(:class:`LoopStatus`) for the people labeling. Every public method is one transaction (or one savepoint of a
:meth:`PreferenceStore.batch`), so several threads, processes or server machines can share one store.

Modules, by role: :mod:`~rlhf.store.records` (the dataclasses it reads and writes, its errors),
:mod:`~rlhf.store.schema` (tables, indexes, version, migrations), :mod:`~rlhf.store.engine` (URLs, engines, SQLite
settings, transactions), :mod:`~rlhf.store.statements` (prebuilt SQL, rows <-> records),
:mod:`~rlhf.store.store` (:class:`PreferenceStore`), :mod:`~rlhf.store.quality` (its labeler-quality estimates and
operator weights) and :mod:`~rlhf.store.export` (labels -> dataset files).

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
  optimistic claim is correct on SQLite and on PostgreSQL under READ COMMITTED. On PostgreSQL one statement tries
  first (in autocommit, one round trip): ``UPDATE ... WHERE id = coalesce(<held>, <first free, FOR UPDATE SKIP
  LOCKED>) RETURNING``; when it claims nothing, the picking and claiming above decide, waiting for rows others
  hold. One labeler holds a query at a time;
  a pair that wants ``k > 1`` labels is served to ``k`` different labelers one after another. An answer is checked
  against the query's row, locked, in its own transaction: it must still want labels, no other labeler may hold a
  live lease on it, and (``require_lease``, as the labeling service asks) the answering labeler must hold it; so no
  cache in any process can give a query more labels than it wants. ``undo_last(..., lease_seconds=...)`` leases the
  voided query back to its labeler in the undo's transaction.
* **Append-only labels.** Labels are never updated or deleted. Undo appends a record (choice ``"undo"``) whose
  ``supersedes`` names the voided label; the *effective* labels are the answers that no record supersedes.
* **Arrays.** Segment arrays are stored as ``np.save`` bytes (dtype and shape in the header, never pickles),
  zlib-compressed, so they round-trip exactly.
* **Time.** Timestamps are float Unix seconds from an injectable ``clock`` (tests control lease expiry with it).
  Several server machines must keep their clocks in sync (NTP) for leases to expire on time.

The store is a leaf: it imports numpy, SQLAlchemy, the standard library and :mod:`baselines.common.errors`, never
gymnasium, torch or other project modules (``datasets`` only inside an HF export), so the labeling service uses it
without loading the learning stack.
"""

from rlhf.store.engine import sqlite_file
from rlhf.store.export import JSONL_FILE, META_FILE, ExportFormat, export_preferences
from rlhf.store.records import (
    CHOICES,
    UNDO,
    AlreadyLabeledError,
    Choice,
    DuplicateLabelerError,
    EnvBinding,
    IdempotencyConflictError,
    InvalidLabelError,
    Label,
    LabeledPair,
    Labeler,
    LabelerQuality,
    LoopPoint,
    LoopStatus,
    PairUnavailableError,
    Query,
    RefusalReason,
    Segment,
    StoreError,
    StoreStats,
    UnknownLabelerError,
    UnknownQueryError,
    UnknownSegmentError,
)
from rlhf.store.schema import SCHEMA_VERSION
from rlhf.store.statements import hash_token
from rlhf.store.store import DEFAULT_LEASE_SECONDS, PreferenceStore

__all__ = [
    "CHOICES",
    "DEFAULT_LEASE_SECONDS",
    "JSONL_FILE",
    "META_FILE",
    "SCHEMA_VERSION",
    "UNDO",
    "AlreadyLabeledError",
    "Choice",
    "DuplicateLabelerError",
    "EnvBinding",
    "ExportFormat",
    "IdempotencyConflictError",
    "InvalidLabelError",
    "Label",
    "LabeledPair",
    "Labeler",
    "LabelerQuality",
    "LoopPoint",
    "LoopStatus",
    "PairUnavailableError",
    "PreferenceStore",
    "Query",
    "RefusalReason",
    "Segment",
    "StoreError",
    "StoreStats",
    "UnknownLabelerError",
    "UnknownQueryError",
    "UnknownSegmentError",
    "export_preferences",
    "hash_token",
    "sqlite_file",
]
