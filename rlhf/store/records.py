"""The records the preference store reads and writes, and the errors it raises: plain frozen dataclasses."""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from typing import Any, ClassVar, Literal

import numpy as np

from baselines.common.errors import ConfigError

Choice = Literal["a", "b", "tie", "skip"]
"""An answer: segment ``a`` better, segment ``b`` better, equally good, or can't tell. ``a``/``b`` name the query's
``segment_a``/``segment_b``, never the screen sides (see :meth:`Query.choice_for_side`)."""

CHOICES: tuple[str, ...] = ("a", "b", "tie", "skip")
UNDO = "undo"
"""The ``choice`` of a record that voids the label named in its ``supersedes``."""


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


RefusalReason = Literal["full", "leased", "not_served", "closed"]


class PairUnavailableError(StoreError):
    """A query that cannot take this labeler's answer now.

    Attributes:
        reason: ``full`` (it has all the labels it wants), ``leased`` (another labeler holds its lease) or
            ``not_served`` (the caller requires a lease, and this labeler does not hold it) or ``closed`` (the run
            that asked it has ended).
    """

    def __init__(self, message: str, reason: RefusalReason = "full") -> None:
        super().__init__(message)
        self.reason: RefusalReason = reason


# --------------------------------------------------------------------------------------------------- records


@dataclass(frozen=True, eq=False)
class Segment:
    """A fixed-length window of one trajectory.

    Attributes:
        id: stable identifier (hex), used by the store and for clip file names.
        obs: ``(L, *obs_shape)`` observations (zeros on padded steps).
        actions: ``(L,)`` ints for Discrete action spaces, ``(L, action_dim)`` floats for Box (zeros when padded).
        true_rewards: ``(L,)`` env rewards (zero on padded steps). Never shown to reward models or labelers.
        mask: ``(L,)`` True for real steps, False for padded (absorbing) steps.
        frames: optional ``(L_real, H, W, 3)`` uint8 frames of the real steps, for rendering clips.
    """

    id: str
    obs: np.ndarray
    actions: np.ndarray
    true_rewards: np.ndarray
    mask: np.ndarray
    frames: np.ndarray | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        length = len(self.mask)
        if not (len(self.obs) == len(self.actions) == len(self.true_rewards) == length):
            raise ValueError("segment arrays must share their first dimension")
        if length == 0 or not self.mask[0]:
            raise ValueError("a segment starts with at least one real step")

    @property
    def length(self) -> int:
        return len(self.mask)

    @property
    def true_return(self) -> float:
        return float(self.true_rewards.sum())

    @property
    def real_steps(self) -> int:
        return int(self.mask.sum())


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
class LabelerQuality:
    """How far one labeler's answers are trusted, and the weight their labels get in reward training.

    Estimated by :func:`rlhf.labelers.estimate_labeler_quality`; the store keeps the latest estimates
    (:meth:`PreferenceStore.record_labeler_quality`) and the operator's weights.

    Attributes:
        labeler_id: the labeler.
        name: the labeler's name.
        labels: strict answers (``a`` or ``b``) the estimate counted; ties and skips are not right or wrong.
        model_agreement: mean probability, under the reward model, that the labeler's strict answers are right
            (0.5 for random answers); None without a model or without strict answers.
        peer_agreement: share of agreeing pairs of strict answers with other labelers on the same queries; None
            without such overlaps.
        accuracy: estimated probability that a strict answer of this labeler is right.
        estimated_weight: the weight the estimate gives each of the labeler's labels.
        weight: the weight used in training: the operator's when ``overridden``, else ``estimated_weight``.
        overridden: whether an operator set ``weight``.
    """

    labeler_id: int
    name: str
    labels: int
    model_agreement: float | None
    peer_agreement: float | None
    accuracy: float
    estimated_weight: float
    weight: float
    overridden: bool = False

    def __post_init__(self) -> None:
        _check_counts(self, "labeler_id", "labels")
        _check_measures(self, "model_agreement", "peer_agreement", "accuracy")
        for name in ("model_agreement", "peer_agreement", "accuracy"):
            value = getattr(self, name)
            if (value is None and name == "accuracy") or (value is not None and not 0.0 <= value <= 1.0):
                raise StoreError(f"LabelerQuality.{name} must be a probability, not {value!r}")
        for name in ("estimated_weight", "weight"):
            object.__setattr__(self, name, check_weight(getattr(self, name), f"LabelerQuality.{name}"))


def check_weight(weight: object, what: str) -> float:
    """``weight`` as a float, or StoreError unless it is a finite number >= 0 (``what`` names it in the message)."""
    if isinstance(weight, bool) or not isinstance(weight, int | float | np.integer | np.floating):
        raise StoreError(f"{what} must be a number >= 0, not {weight!r}")
    if not (math.isfinite(float(weight)) and float(weight) >= 0.0):
        raise StoreError(f"{what} must be a finite number >= 0, not {weight!r}")
    return float(weight)


@dataclass(frozen=True)
class EnvBinding:
    """The env a store belongs to, recorded by :meth:`PreferenceStore.bind_env` on first use."""

    env_id: str
    obs_shape: tuple[int, ...]
    action_spec: dict[str, Any]
    segment_length: int

    def to_json(self) -> dict[str, Any]:
        return {
            "env_id": self.env_id,
            "obs_shape": list(self.obs_shape),
            "action_spec": self.action_spec,
            "segment_length": self.segment_length,
        }

    @classmethod
    def from_json(cls, record: dict[str, Any]) -> EnvBinding:
        """The binding of :meth:`to_json`'s record; KeyError, TypeError or ValueError for a malformed one."""
        return cls(
            env_id=str(record["env_id"]),
            obs_shape=tuple(int(d) for d in record["obs_shape"]),
            action_spec=dict(record["action_spec"]),
            segment_length=int(record["segment_length"]),
        )

    def check_segments(self, segments: Iterable[Segment], where: str) -> None:
        """Refuse segments of another length or observation shape (``where`` names the store in the message).

        Raises:
            ConfigError: a segment does not fit this env.
        """
        for segment in segments:
            if segment.obs.shape[1:] != self.obs_shape or segment.length != self.segment_length:
                raise ConfigError(
                    f"segment {segment.id} has {segment.length} steps of obs shape {segment.obs.shape[1:]}; "
                    f"the store at {where} holds {self.env_id} segments of {self.segment_length} "
                    f"steps with obs shape {self.obs_shape}"
                )

    def difference(self, other: EnvBinding) -> str | None:
        """What this (stored) binding holds that ``other`` does not, said for a message; None when they agree."""
        if self.env_id != other.env_id:
            return f"{self.env_id} segments, not {other.env_id}"
        if self.obs_shape != other.obs_shape:
            return f"{self.env_id} segments with obs shape {self.obs_shape}, not {other.obs_shape}"
        if self.segment_length != other.segment_length:
            return f"{self.env_id} segments of {self.segment_length} steps, not {other.segment_length}"
        if self.action_spec != other.action_spec:
            return f"{self.env_id} segments with actions {self.action_spec}, not {other.action_spec}"
        return None


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


# --------------------------------------------------------------------------------------------------- loop status


@dataclass(frozen=True)
class LoopPoint:
    """One measurement of the RLHF loop, for the progress curves of the admin page.

    Attributes:
        env_steps: env steps of the policy when it was measured.
        labels_used: labels the reward model had been trained on by then.
        reward_val_accuracy: held-out accuracy of the reward model, if measured at this point.
        policy_true_return: mean evaluation return on the env's own reward, if measured at this point.
    """

    env_steps: int
    labels_used: int
    reward_val_accuracy: float | None = None
    policy_true_return: float | None = None

    def __post_init__(self) -> None:
        _check_counts(self, "env_steps", "labels_used")
        _check_measures(self, "reward_val_accuracy", "policy_true_return")


@dataclass(frozen=True)
class LoopStatus:
    """What the RLHF loop last reported, for the people labeling (:meth:`PreferenceStore.record_loop_status`).

    A measurement is None until the loop first makes it (a NaN, e.g. an undefined correlation, counts as None).

    Attributes:
        round: label rounds done.
        labels_used: labels the reward model has been trained on (or, before the first training, labels in).
        label_budget: labels the run will ask for in all.
        env_steps: env steps of the policy so far.
        total_steps: env steps the run will take in all.
        reward_val_accuracy: held-out accuracy of the latest reward model.
        reward_return_correlation: correlation of its predicted segment returns with the true ones.
        policy_true_return: mean return of the latest evaluation, on the env's own reward.
        updated_at: Unix seconds of the store's clock when it was recorded (set by the store).
        history: the measurements so far, oldest first (kept by the store; the newest ``HISTORY_POINTS``).
        phase: ``running`` (the policy trains), ``waiting`` (it waits for people's labels, ``--human-pace wait``)
            or ``finished`` (the run is over: its queued pairs are closed and the final measurements are in).
        labels_awaited: while ``waiting``, the labels still due before the policy goes on (else 0).
        policy_clip: file name, in the clips folder, of the latest clip of the current policy (None before the
            first); a report leaves None to keep the last one.
    """

    round: int
    labels_used: int
    label_budget: int
    env_steps: int
    total_steps: int
    reward_val_accuracy: float | None = None
    reward_return_correlation: float | None = None
    policy_true_return: float | None = None
    updated_at: float | None = None
    history: tuple[LoopPoint, ...] = ()
    phase: str = "running"
    labels_awaited: int = 0
    policy_clip: str | None = None

    HISTORY_POINTS: ClassVar[int] = 1000
    PHASES: ClassVar[tuple[str, ...]] = ("running", "waiting", "finished")

    def __post_init__(self) -> None:
        _check_counts(self, "round", "labels_used", "label_budget", "env_steps", "total_steps")
        _check_measures(self, "reward_val_accuracy", "reward_return_correlation", "policy_true_return", "updated_at")
        _check_counts(self, "labels_awaited")
        if not all(isinstance(point, LoopPoint) for point in self.history):
            raise StoreError("a loop status's history holds LoopPoint records")
        if self.phase not in self.PHASES:
            raise StoreError(f"LoopStatus.phase must be one of {', '.join(self.PHASES)}, not {self.phase!r}")
        clip = self.policy_clip
        if clip is not None and (not isinstance(clip, str) or not clip or "/" in clip or "\\" in clip):
            raise StoreError(f"LoopStatus.policy_clip must be a file name in the clips folder, not {clip!r}")

    def rewound(self, env_steps: int | None) -> LoopStatus:
        """This status without the history points after ``env_steps`` (None: all kept)."""
        if env_steps is None:
            return self
        return replace(self, history=tuple(point for point in self.history if point.env_steps <= env_steps))

    def followed_by(self, report: LoopStatus, now: float) -> LoopStatus:
        """This status updated by the loop's next ``report``: counters replaced, measurements the report makes
        replaced and added to the history, the others kept."""
        if report.history:
            raise StoreError("the store keeps the loop's history; report a status without one")
        measured = report.reward_val_accuracy is not None or report.policy_true_return is not None
        point = LoopPoint(report.env_steps, report.labels_used, report.reward_val_accuracy, report.policy_true_return)
        return replace(
            report,
            reward_val_accuracy=_latest(report.reward_val_accuracy, self.reward_val_accuracy),
            reward_return_correlation=_latest(report.reward_return_correlation, self.reward_return_correlation),
            policy_true_return=_latest(report.policy_true_return, self.policy_true_return),
            policy_clip=report.policy_clip or self.policy_clip,
            updated_at=now,
            history=(*self.history, point)[-self.HISTORY_POINTS :] if measured else self.history,
        )

    def to_json(self) -> dict[str, Any]:
        record = {name: getattr(self, name) for name in _STATUS_FIELDS + _STATUS_FIELDS_ADDED}
        record["history"] = [[getattr(point, name) for name in _POINT_FIELDS] for point in self.history]
        return record

    @classmethod
    def from_json(cls, record: Any) -> LoopStatus:
        """The status of :meth:`to_json`'s record; StoreError names what is wrong with a malformed one."""
        try:
            # A record written before phase, labels_awaited and policy_clip existed takes their defaults.
            required = {*_STATUS_FIELDS, "history"}
            if not isinstance(record, dict) or not required <= set(record) <= {*required, *_STATUS_FIELDS_ADDED}:
                raise StoreError(f"its fields are not {', '.join(_STATUS_FIELDS + _STATUS_FIELDS_ADDED)}, history")
            points = [LoopPoint(*point) for point in record["history"]]
            names = [*_STATUS_FIELDS, *(name for name in _STATUS_FIELDS_ADDED if name in record)]
            return cls(**{name: record[name] for name in names}, history=tuple(points))
        except TypeError as error:  # a point of another length, a history that is not a list
            raise StoreError(f"a malformed loop status ({error})") from None


_STATUS_FIELDS = ("round", "labels_used", "label_budget", "env_steps", "total_steps", "reward_val_accuracy",
                  "reward_return_correlation", "policy_true_return", "updated_at")  # fmt: skip
_STATUS_FIELDS_ADDED = ("phase", "labels_awaited", "policy_clip")
_POINT_FIELDS = ("env_steps", "labels_used", "reward_val_accuracy", "policy_true_return")


def _check_counts(record: object, *names: str) -> None:
    for name in names:
        value = getattr(record, name)
        if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 0:
            raise StoreError(f"{type(record).__name__}.{name} must be a count (an int >= 0), not {value!r}")
        object.__setattr__(record, name, int(value))


def _check_measures(record: object, *names: str) -> None:
    """Numbers or None; NaN (a measurement that could not be made) becomes None."""
    for name in names:
        value = getattr(record, name)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
            raise StoreError(f"{type(record).__name__}.{name} must be a number or None, not {value!r}")
        number = float(value)
        if math.isinf(number):
            raise StoreError(f"{type(record).__name__}.{name} must be finite, not {value!r}")
        object.__setattr__(record, name, None if math.isnan(number) else number)


def _latest(new: float | None, old: float | None) -> float | None:
    return old if new is None else new
