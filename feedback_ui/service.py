"""What the routes do, over the preference store: serve pairs, take answers, undo, count.

The store is the authority (leases, one answer per labeler and pair, idempotency keys, append-only undo); this layer
translates screen sides to stored choices, words the store's refusals of answers for the labeler, and keeps
small caches of immutable facts (token -> labeler, segment -> clip) so a request costs one store transaction.

Writes go through one lock: SQLite admits one writer at a time, and a waiting writer otherwise sleeps in SQLite's
busy handler (1, 2, 5, 10, ... ms), which would put tens of milliseconds on a request under load. The routes run
writes on one dedicated thread (see :mod:`feedback_ui.dependencies`), so the lock is rarely contended in-process;
other processes (the loop, a second server) still meet at SQLite's own lock.
"""

from __future__ import annotations

import secrets
import statistics
import tempfile
import threading
import time
from collections import Counter, defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast
from urllib.parse import quote

from feedback_ui.agreement import agreement
from feedback_ui.schemas import (
    AdminStatsPublic,
    AgreementPublic,
    ClipPublic,
    CurvePoint,
    LabelerStats,
    LabelPublic,
    LoopStatusPublic,
    PairPublic,
    PairwiseAgreementPublic,
    Phase,
    ProgressPublic,
    Side,
)
from feedback_ui.sessions import SessionSigner
from feedback_ui.settings import DEFAULT_TASKS, GENERIC_TASK, Settings
from feedback_ui.writer import StoreWriter
from rlhf.store import (
    AlreadyLabeledError,
    ExportFormat,
    Label,
    Labeler,
    LoopStatus,
    PairUnavailableError,
    PreferenceStore,
    Query,
    RefusalReason,
    StoreError,
    UnknownQueryError,
    export_preferences,
    hash_token,
)

TASK_META_KEY = "ui.task_description"
LABELS_PER_PAIR_META_KEY = "ui.labels_per_pair"
"""Workspace values in the store's meta table; the loop reads ``ui.labels_per_pair`` as k for its new queries."""

MEDIA_PREFIX = "/media/"
PROGRESS_TTL_S = 2.0
TOKEN_RECHECK_S = 1.0
"""A token is looked up in the store again once its cached answer is this old, so a token revoked or rotated
elsewhere (another server process, ``rlhf labelers revoke``) is refused within this time; the process that revokes
it refuses it at once."""
_MAX_CACHED = 50_000


_REFUSALS: dict[RefusalReason, str] = {
    "full": "pair {pair} already has the labels it wants; ask for the next pair",
    "leased": "pair {pair} is leased to another labeler; ask for the next pair",
    "not_served": "pair {pair} was not served to you; answer the pair you were shown",
    "closed": "pair {pair} is closed: the run has finished",
}
"""What a labeler is told when the store refuses an answer (:class:`PairUnavailableError`'s reason)."""


@dataclass(frozen=True)
class _SegmentInfo:
    clip_name: str | None
    real_steps: int
    length: int


def _usable_file_name(name: str) -> bool:
    """A name that can be one file's: 1-255 UTF-8 bytes, no NUL, no control character, no separator."""
    try:
        size = len(name.encode("utf-8"))
    except UnicodeEncodeError:  # a lone surrogate
        return False
    return 0 < size <= 255 and name.isprintable() and "/" not in name and "\\" not in name


def side_for_choice(query: Query, choice: str) -> Side:
    """The screen side of a stored choice (inverse of :meth:`Query.choice_for_side`)."""
    if choice == "tie":
        return "tie"
    if choice == "skip":
        return "skip"
    if choice not in ("a", "b"):
        raise StoreError(f"no screen side for choice {choice!r}")
    return "left" if (choice == "a") == query.left_is_a else "right"


class LabelingService:
    """The labeling service's behaviour over one :class:`PreferenceStore`.

    Args:
        store: the preference store (closed by :meth:`close`).
        settings: lease length, media dir, task, labels per pair.
    """

    def __init__(self, store: PreferenceStore, settings: Settings) -> None:
        self.store = store
        self.settings = settings
        self.media_dir = settings.resolved_media_dir.resolve()
        self.lease_seconds = settings.lease_seconds
        self.write_lock = threading.RLock()
        self._labelers: dict[str, tuple[float, Labeler]] = {}
        """Token hash -> (monotonic time of the store's answer, labeler)."""
        self._segments: dict[str, _SegmentInfo] = {}
        self._clip_files: dict[str, Path] = {}
        self._queries: dict[int, Query] = {}
        """Pairs served, for their sides (which never change); leases are the store's to check."""
        self.writer = StoreWriter(store, self.write_lock)
        """The thread the routes run store writes on, batched (see :func:`feedback_ui.dependencies.run_write`)."""
        self._progress: dict[int, tuple[float, ProgressPublic]] = {}
        self.sessions = SessionSigner(settings.admin_token)
        """Signs the clip cookies of browser sessions (:mod:`feedback_ui.sessions`)."""
        if settings.task_description is not None:
            store.set_meta(TASK_META_KEY, settings.task_description)
        if settings.labels_per_pair is not None:
            store.set_meta(LABELS_PER_PAIR_META_KEY, settings.labels_per_pair)

    def close(self) -> None:
        self.writer.close()
        self.store.close()

    # ----------------------------------------------------------------------------------------- workspace

    @property
    def task(self) -> str:
        stored = self.store.get_meta(TASK_META_KEY)
        if isinstance(stored, str) and stored.strip():
            return stored
        binding = self.store.env()
        return DEFAULT_TASKS.get(binding.env_id, GENERIC_TASK) if binding is not None else GENERIC_TASK

    @property
    def labels_per_pair(self) -> int:
        return int(self.store.get_meta(LABELS_PER_PAIR_META_KEY, 1))

    def missing_clips(self, limit: int = 10_000) -> list[str]:
        """Segments of pending queries whose clip is unset or missing on disk (checked at startup)."""
        missing: list[str] = []
        seen: set[str] = set()
        for query in self.store.pending_queries(limit=limit):
            for segment_id in (query.segment_a, query.segment_b):
                if segment_id in seen:
                    continue
                seen.add(segment_id)
                if self.clip_url(segment_id) is None:
                    missing.append(segment_id)
        return missing

    # ----------------------------------------------------------------------------------------- labelers

    def cached_labeler(self, token_hash: str) -> Labeler | None:
        """The labeler of a token hash if the store said so less than ``TOKEN_RECHECK_S`` ago (no store access,
        safe on the event loop)."""
        cached = self._labelers.get(token_hash)
        if cached is None or time.monotonic() - cached[0] >= TOKEN_RECHECK_S:
            return None
        return cached[1]

    def authenticate(self, token_hash: str) -> Labeler | None:
        """The labeler of a token hash (:func:`rlhf.store.hash_token`), from the store; None for a token that is
        unknown, revoked or rotated. Positive answers are cached for ``TOKEN_RECHECK_S``."""
        labeler = self.store.labeler_for_token_hash(token_hash)
        if labeler is None:
            self._labelers.pop(token_hash, None)
        else:
            if len(self._labelers) >= _MAX_CACHED:
                self._labelers.clear()
            self._labelers[token_hash] = (time.monotonic(), labeler)
        return labeler

    def _forget_tokens_of(self, labeler_id: int) -> None:
        for token_hash, (_, labeler) in list(self._labelers.items()):
            if labeler.id == labeler_id:
                self._labelers.pop(token_hash, None)

    def revoke_token(self, name: str) -> Labeler:
        """Remove a labeler's token; this process refuses it from now on (others within ``TOKEN_RECHECK_S``)."""
        with self.write_lock:
            labeler = self.store.revoke_token(name)
        self._forget_tokens_of(labeler.id)
        return labeler

    def rotate_token(self, name: str) -> tuple[Labeler, str]:
        """Give a labeler a new token; the old one is refused as a revoked one is."""
        with self.write_lock:
            labeler, token = self.store.rotate_token(name)
        self._forget_tokens_of(labeler.id)
        return labeler, token

    def is_admin(self, token: str) -> bool:
        admin = self.settings.admin_token
        return admin is not None and secrets.compare_digest(token.encode(), admin.get_secret_value().encode())

    def is_admin_hash(self, token_hash: str) -> bool:
        """Whether ``token_hash`` is the hash of the admin token (a session's)."""
        admin = self.settings.admin_token
        return admin is not None and secrets.compare_digest(token_hash, hash_token(admin.get_secret_value()))

    def add_labeler(self, name: str) -> tuple[Labeler, str]:
        with self.write_lock:
            labeler_id, token = self.store.add_labeler(name)
        return self.store.get_labeler(labeler_id), token

    def labeler_url(self, token: str) -> str:
        """The labeler's personal URL: the token sits in the fragment, which browsers never send to a server."""
        return f"{self.settings.base_url}/#token={token}"

    # ----------------------------------------------------------------------------------------- pairs

    def _segment_info(self, segment_id: str) -> _SegmentInfo:
        info = self._segments.get(segment_id)
        if info is None or info.clip_name is None:
            # A clip may be rendered after its segment was stored: look its path up again until it is known.
            clip_name = self.store.get_clip_path(segment_id)
            if info is None:
                segment = self.store.get_segment(segment_id)
                info = _SegmentInfo(clip_name, segment.real_steps, segment.length)
            else:
                info = _SegmentInfo(clip_name, info.real_steps, info.length)
            if len(self._segments) < _MAX_CACHED:
                self._segments[segment_id] = info
        return info

    def clip_file(self, name: str) -> Path | None:
        """The file behind ``/media/NAME`` if it lies inside the media dir and exists.

        Clips are written once and never change, so a file found is remembered (a clip deleted later answers 404
        from the media route); a missing one is looked for again next time.
        """
        known = self._clip_files.get(name)
        if known is not None:
            return known
        if not _usable_file_name(name):
            return None
        try:
            path = (self.media_dir / name).resolve()
            if not path.is_relative_to(self.media_dir) or not path.is_file():
                return None
        except (OSError, ValueError):  # a name the file system refuses (too long, say) names no clip
            return None
        if len(self._clip_files) < _MAX_CACHED:
            self._clip_files[name] = path
        return path

    def clip_url(self, segment_id: str) -> str | None:
        info = self._segment_info(segment_id)
        if info.clip_name is None or self.clip_file(info.clip_name) is None:
            return None
        return MEDIA_PREFIX + info.clip_name

    def _clip(self, segment_id: str) -> ClipPublic:
        info = self._segment_info(segment_id)
        return ClipPublic(url=self.clip_url(segment_id), real_steps=info.real_steps, length=info.length)

    def pair(self, query: Query) -> PairPublic:
        return PairPublic(
            query_id=query.id,
            round=query.round,
            left=self._clip(query.left_segment),
            right=self._clip(query.right_segment),
            lease_expires_at=query.lease_expires_at,
        )

    def lease(self, labeler: Labeler) -> Query | None:
        """Lease the labeler's next pair (a pair already leased to them comes back first)."""
        with self.write_lock:
            query = self.store.lease_next(labeler.id, self.lease_seconds)
        if query is not None:
            if len(self._queries) >= _MAX_CACHED:
                self._queries.clear()
            self._queries[query.id] = query
        return query

    def next_pair(self, labeler: Labeler) -> tuple[Query, PairPublic] | None:
        """Lease the labeler's next pair and describe it for the page (one call on the writer thread)."""
        query = self.lease(labeler)
        return None if query is None else (query, self.pair(query))

    def prefetch_urls(self, labeler: Labeler, current: Query, pairs: int = 2) -> list[str]:
        """Clip URLs of the pairs this labeler is likely to get next (best effort: others may lease them first)."""
        now = time.time()
        urls: list[str] = []
        found = 0
        for query in self.store.pending_queries(labeler_id=labeler.id, limit=4 * pairs + 1):
            leased_by_other = (
                query.lease_labeler not in (None, labeler.id)
                and query.lease_expires_at is not None
                and query.lease_expires_at > now
            )
            if query.id == current.id or leased_by_other:
                continue
            for segment_id in (query.segment_a, query.segment_b):
                url = self.clip_url(segment_id)
                if url is not None and url not in urls:
                    urls.append(url)
            found += 1
            if found == pairs:
                break
        return urls

    # ----------------------------------------------------------------------------------------- labels

    def submit(
        self, labeler: Labeler, query_id: int, side: Side, seconds_taken: float, key: str | None
    ) -> tuple[Label, Query]:
        """Store an answer given as a screen side.

        A labeler may answer a pair they were served and still hold (even after the lease lapsed, unless someone
        else took it since), a pair they undid (undo leases it back), or repeat an earlier request with the same
        idempotency key. The store checks this with the pair's row locked, so any number of server processes agree.

        Raises:
            UnknownQueryError: no such pair.
            PairUnavailableError: not served to this labeler, leased to someone else, or it has all its labels.
            AlreadyLabeledError, IdempotencyConflictError: from the store.
        """
        query = self._queries.get(query_id)
        if query is None:
            try:
                query = self.store.get_query(query_id)
            except UnknownQueryError as error:
                raise UnknownQueryError(f"unknown pair {query_id}") from error
        choice = query.choice_for_side(side)
        try:
            with self.write_lock:
                label = self.store.add_label(query_id, labeler.id, choice, seconds_taken, key, require_lease=True)
        except PairUnavailableError as error:
            raise PairUnavailableError(_REFUSALS[error.reason].format(pair=query_id), error.reason) from None
        except AlreadyLabeledError:
            raise AlreadyLabeledError(f"you already answered pair {query_id}; undo it to change your answer") from None
        self._progress.pop(labeler.id, None)
        return label, query

    def label_public(self, label: Label, query: Query | None = None) -> LabelPublic:
        query = query if query is not None and query.id == label.query_id else self.store.get_query(label.query_id)
        return LabelPublic(
            label_id=label.id,
            query_id=label.query_id,
            side=side_for_choice(query, label.choice),
            seconds_taken=label.seconds_taken,
            created_at=label.created_at,
        )

    def undo(self, labeler: Labeler, key: str | None) -> tuple[Label | None, Query | None]:
        """Void the labeler's latest label; returns it and its pair, leased back to them to answer again (unless
        another labeler holds it now, which only a pair wanting several labels allows), or ``(None, None)``."""
        with self.write_lock:
            voided = self.store.undo_last(labeler.id, key, lease_seconds=self.lease_seconds)
        self._progress.pop(labeler.id, None)
        if voided is None:
            return None, None
        return voided, self.store.get_query(voided.query_id)

    def my_labels(self, labeler: Labeler, limit: int) -> list[LabelPublic]:
        """The labeler's effective labels, newest first."""
        records = self.store.labels(labeler.id)
        voided = {record.supersedes for record in records if record.is_undo}
        answers = [record for record in reversed(records) if not record.is_undo and record.id not in voided][:limit]
        queries = self.store.get_queries([label.query_id for label in answers])  # one read, not one per label
        return [self.label_public(label, queries[label.query_id]) for label in answers]

    # ----------------------------------------------------------------------------------------- progress

    def _loop_public(self, status: LoopStatus | None) -> LoopStatusPublic:
        """What the RLHF loop last reported to the store (all None before its first report). The policy clip is
        given as a URL only when its file lies in the media dir (the same checks as ``/media/NAME``)."""
        if status is None:
            return LoopStatusPublic()
        clip = status.policy_clip
        return LoopStatusPublic(
            round=status.round,
            labels_used=status.labels_used,
            label_budget=status.label_budget,
            env_steps=status.env_steps,
            total_steps=status.total_steps,
            reward_val_accuracy=status.reward_val_accuracy,
            reward_return_correlation=status.reward_return_correlation,
            policy_true_return=status.policy_true_return,
            updated_at=status.updated_at,
            phase=cast(Phase, status.phase),
            labels_awaited=status.labels_awaited,
            policy_clip_url=None
            if clip is None or self.clip_file(clip) is None
            else MEDIA_PREFIX + quote(clip, safe=""),
        )

    def progress(self, labeler: Labeler) -> ProgressPublic:
        """The labeler's counts and the loop's status, at most ``PROGRESS_TTL_S`` old.

        Every open page polls this; counting the queue scans it, so answers are shared for a moment (the page
        counts its own labels as it goes).
        """
        now = time.monotonic()
        cached = self._progress.get(labeler.id)
        if cached is not None and now - cached[0] < PROGRESS_TTL_S:
            return cached[1]
        progress = ProgressPublic(
            labeler=labeler.name,
            labels_done=self.store.label_counts().get(labeler.name, 0),
            queue_size=self.store.queue_size(labeler.id),
            task=self.task,
            loop=self._loop_public(self.store.loop_status()),
        )
        self._progress[labeler.id] = (now, progress)
        return progress

    def admin_stats(self) -> AdminStatsPublic:
        records = self.store.labels()
        effective = self.store.effective_labels()
        labelers = self.store.labelers()
        names = {labeler.id: labeler.name for labeler in labelers}
        has_token = {labeler.id: labeler.has_token for labeler in labelers}
        qualities, operator_weights = self.store.labeler_quality(), self.store.labeler_weight_overrides()
        undos: Counter[int] = Counter(record.labeler_id for record in records if record.is_undo)
        by_labeler: dict[int, list[Any]] = defaultdict(list)
        for label in effective:
            by_labeler[label.labeler_id].append(label)
        rows = []
        for labeler_id, name in names.items():
            labels = by_labeler.get(labeler_id, [])
            times = [label.created_at for label in labels]
            span = max(times) - min(times) if times else 0.0
            quality = qualities.get(labeler_id)
            operator_weight = operator_weights.get(labeler_id)
            rows.append(
                LabelerStats(
                    name=name,
                    has_token=has_token[labeler_id],
                    labels=len(labels),
                    skips=sum(label.choice == "skip" for label in labels),
                    ties=sum(label.choice == "tie" for label in labels),
                    undos=undos.get(labeler_id, 0),
                    median_seconds=statistics.median(label.seconds_taken for label in labels) if labels else None,
                    labels_per_hour=(len(labels) - 1) / span * 3600 if span >= 1.0 else None,
                    first_label_at=min(times) if times else None,
                    last_label_at=max(times) if times else None,
                    judged=None if quality is None else quality.labels,
                    model_agreement=None if quality is None else quality.model_agreement,
                    peer_agreement=None if quality is None else quality.peer_agreement,
                    accuracy=None if quality is None else quality.accuracy,
                    weight=operator_weight if quality is None else quality.weight,
                    weight_set_by_operator=operator_weight is not None,
                )
            )
        stats = agreement((label.query_id, label.labeler, label.choice) for label in effective)
        store_stats = self.store.stats()
        status = self.store.loop_status()
        accuracy, returns = self._curves(status)
        return AdminStatsPublic(
            labelers=rows,
            agreement=AgreementPublic(
                overlapping_pairs=stats.overlapping_pairs,
                fleiss_kappa=stats.fleiss_kappa,
                percent_agreement=stats.percent_agreement,
                pairwise=[
                    PairwiseAgreementPublic(
                        labeler_a=p.labeler_a,
                        labeler_b=p.labeler_b,
                        shared_pairs=p.shared_pairs,
                        percent_agreement=p.percent_agreement,
                        cohens_kappa=p.kappa,
                    )
                    for p in stats.pairwise
                ],
            ),
            store={
                "segments": store_stats.segments,
                "queries": store_stats.queries,
                "queries_pending": store_stats.queries_pending,
                "queries_leased": store_stats.queries_leased,
                "labels": store_stats.labels,
                "labels_voided": store_stats.labels_voided,
                "choices": store_stats.choices,
                "mean_seconds_taken": store_stats.mean_seconds_taken,
            },
            loop=self._loop_public(status),
            reward_accuracy=accuracy,
            policy_true_return=returns,
            labels_per_pair=self.labels_per_pair,
            task=self.task,
        )

    @staticmethod
    def _curves(status: LoopStatus | None) -> tuple[list[CurvePoint], list[CurvePoint]]:
        """Reward-model accuracy and policy return over the run, from the loop status's history."""
        history = status.history if status is not None else ()
        accuracy = [
            CurvePoint(step=point.env_steps, labels=point.labels_used, value=point.reward_val_accuracy)
            for point in history
            if point.reward_val_accuracy is not None
        ]
        returns = [
            CurvePoint(step=point.env_steps, labels=point.labels_used, value=point.policy_true_return)
            for point in history
            if point.policy_true_return is not None
        ]
        return accuracy, returns

    # ----------------------------------------------------------------------------------------- export

    def export(self, format: ExportFormat, include_true_returns: bool, folder: Path | None = None) -> tuple[Path, int]:
        """The same export as ``rlhf export``, into ``folder`` (default WORKSPACE/exports/FORMAT-TIME)."""
        if folder is None:
            base = self.settings.workspace if self.settings.workspace is not None else Path(tempfile.gettempdir())
            stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
            folder = base / "exports" / f"{format}-{stamp}-{secrets.token_hex(3)}"
        folder.parent.mkdir(parents=True, exist_ok=True)
        rows = export_preferences(self.store, folder, format=format, include_true_returns=include_true_returns)
        return folder, rows
