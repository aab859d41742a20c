"""Request and response bodies of the JSON API, named by role (``LabelCreate`` in, ``LabelPublic`` out)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

Side = Literal["left", "right", "tie", "skip"]
"""A screen answer: left clip better, right clip better, equally good, can't tell."""

Phase = Literal["running", "waiting", "finished"]
"""What the RLHF loop does: trains the policy, waits for people's labels, or is over."""

_KEY_PATTERN = r"^[A-Za-z0-9_.:-]{1,200}$"


MAX_ID = 2**31 - 1
"""Ids are 32-bit integer columns (PostgreSQL's INTEGER): a larger id names nothing."""


class Strict(BaseModel):
    """Bodies refuse unknown fields, so a misspelt field is a 422, not a silently ignored value, and values of the
    wrong JSON type (strict mode: ``true`` is no id, ``"3"`` no number of seconds), not a coerced one."""

    model_config = ConfigDict(extra="forbid", strict=True)


class ClipPublic(BaseModel):
    """One side of a pair."""

    url: str | None = Field(description="clip URL (H.264 MP4); None when the clip is missing")
    real_steps: int = Field(description="steps before the episode ended (the rest is a frozen, dimmed frame)")
    length: int = Field(description="steps in the clip")


class PairPublic(BaseModel):
    """A pair leased to the labeler. Sides are what the labeler sees; which segment is left was drawn per query."""

    query_id: int
    round: int
    left: ClipPublic
    right: ClipPublic
    lease_expires_at: float | None = Field(description="Unix seconds when the pair returns to the queue")


class NextPublic(BaseModel):
    """The next pair (None when the queue is empty for this labeler) and clips worth prefetching."""

    pair: PairPublic | None
    prefetch: list[str] = Field(default_factory=list, description="clip URLs of pairs likely to come next")


class LabelCreate(Strict):
    """An answer to a leased pair."""

    query_id: int = Field(ge=1, le=MAX_ID, description="the pair answered")
    side: Side = Field(description="left, right, tie (equally good) or skip (can't tell)")
    seconds_taken: float = Field(
        ge=0, le=86_400, allow_inf_nan=False, description="seconds the labeler spent on the pair"
    )
    idempotency_key: str | None = Field(
        default=None,
        pattern=_KEY_PATTERN,
        description="client-chosen key; a retry with the same key is stored once (1-200 of A-Z a-z 0-9 _ . : -)",
    )


class LabelPublic(BaseModel):
    """A stored answer, as its labeler sees it."""

    label_id: int
    query_id: int
    side: Side
    seconds_taken: float
    created_at: float


class SubmitPublic(BaseModel):
    """The stored label and, when asked for with ``?next=true``, the next pair."""

    label: LabelPublic
    next: NextPublic | None = None


class UndoCreate(Strict):
    """Undo of the labeler's most recent label."""

    idempotency_key: str | None = Field(default=None, pattern=_KEY_PATTERN)


class UndoPublic(BaseModel):
    """The voided label (None when there was nothing to undo) and its pair, to answer again."""

    undone: LabelPublic | None
    pair: PairPublic | None


class LoopStatusPublic(BaseModel):
    """What the RLHF loop last reported (:class:`rlhf.store.LoopStatus`; None where not known yet)."""

    round: int | None = Field(default=None, description="label rounds done")
    labels_used: int | None = Field(default=None, description="labels the reward model is trained on")
    label_budget: int | None = Field(default=None, description="labels the run asks for in all")
    env_steps: int | None = Field(default=None, description="env steps of the policy so far")
    total_steps: int | None = Field(default=None, description="env steps the run takes in all")
    reward_val_accuracy: float | None = Field(default=None, description="held-out accuracy of the reward model")
    reward_return_correlation: float | None = Field(
        default=None, description="correlation of predicted and true segment returns"
    )
    policy_true_return: float | None = Field(default=None, description="latest evaluation return, env reward")
    updated_at: float | None = Field(default=None, description="Unix seconds of the loop's latest report")
    phase: Phase | None = Field(
        default=None,
        description="running (the policy trains), waiting (for people's labels) or finished (the run is over; its "
        "queued pairs are closed)",
    )
    labels_awaited: int | None = Field(
        default=None, description="while waiting: labels still due before the policy goes on (else 0)"
    )
    policy_clip_url: str | None = Field(
        default=None, description="URL of the latest clip of the current policy; None before the first or if missing"
    )


class ProgressPublic(BaseModel):
    """The labeler's progress and the loop's status."""

    labeler: str
    labels_done: int
    queue_size: int
    task: str
    loop: LoopStatusPublic


class LabelerCreate(Strict):
    name: str = Field(min_length=1, max_length=200, pattern=r"\S")


class LabelerRef(Strict):
    """A labeler, by name."""

    name: str = Field(min_length=1, max_length=200)


class LabelerPublic(BaseModel):
    id: int
    name: str
    created_at: float
    has_token: bool


class LabelerCreated(LabelerPublic):
    """A new labeler; the token and personal URL are shown this once."""

    token: str
    url: str


class SessionPublic(BaseModel):
    """Who the session is for; its cookie lets the browser fetch clips for ``expires_in`` seconds."""

    role: Literal["labeler", "admin"]
    name: str
    expires_in: int


class LabelerStats(BaseModel):
    name: str
    has_token: bool = Field(default=True, description="false once the labeler's token was revoked")
    labels: int = Field(description="effective labels, skips included")
    skips: int
    ties: int
    undos: int
    median_seconds: float | None = Field(description="median time per label")
    labels_per_hour: float | None = Field(description="labels over the span from first to last label")
    first_label_at: float | None
    last_label_at: float | None
    judged: int | None = Field(default=None, description="a/b answers the latest quality estimate counted")
    model_agreement: float | None = Field(
        default=None, description="mean probability, under the reward model, that the labeler's a/b answers are right"
    )
    peer_agreement: float | None = Field(
        default=None, description="share of the labeler's a/b answers that other labelers gave on the same pairs"
    )
    accuracy: float | None = Field(default=None, description="estimated probability that an a/b answer is right")
    weight: float | None = Field(
        default=None,
        description="weight of the labeler's labels in reward training (1: an average label); None before the "
        "loop's first estimate, unless an operator set one",
    )
    weight_set_by_operator: bool = Field(default=False, description="an operator set the weight (rlhf labelers-weight)")


class PairwiseAgreementPublic(BaseModel):
    labeler_a: str
    labeler_b: str
    shared_pairs: int
    percent_agreement: float
    cohens_kappa: float | None


class AgreementPublic(BaseModel):
    overlapping_pairs: int
    fleiss_kappa: float | None
    percent_agreement: float | None
    pairwise: list[PairwiseAgreementPublic]


class CurvePoint(BaseModel):
    step: int
    labels: int | None
    value: float


class AdminStatsPublic(BaseModel):
    """Everything the admin page shows."""

    labelers: list[LabelerStats]
    agreement: AgreementPublic
    store: dict[str, Any]
    loop: LoopStatusPublic
    reward_accuracy: list[CurvePoint] = Field(description="reward-model validation accuracy per round")
    policy_true_return: list[CurvePoint] = Field(description="evaluation return on the env reward")
    labels_per_pair: int
    task: str


class ExportCreate(Strict):
    format: Literal["hf", "jsonl"] = "jsonl"
    include_true_returns: bool = True


class ExportPublic(BaseModel):
    path: str = Field(description="export folder on the server")
    rows: int
    format: Literal["hf", "jsonl"]


class HealthPublic(BaseModel):
    status: Literal["ok"]
    database: Literal["ok"]
    env_id: str | None
    queries_pending: int


class ErrorPublic(BaseModel):
    """Every 4xx answer: a message that says what was wrong."""

    detail: str
