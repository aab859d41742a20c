"""Preference data read back: an export of :func:`rlhf.store.export_preferences` (a Hugging Face ``datasets``
folder or JSONL) as pairs of segments, checked row by row, for training a reward model from the data alone.

The format (columns, layout, metadata file) is described in :mod:`rlhf.store.export`, which writes it. True returns,
when exported, come back beside the segments (``true_return_{a,b}``), never inside them: the segments' true rewards
are NaN.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from baselines.common.errors import ConfigError, check
from rlhf.store import CHOICES, EnvBinding, Segment
from rlhf.store.export import (
    FORMAT_NAME,
    FORMAT_VERSION,
    JSONL_FILE,
    META_FILE,
    SIDES,
    ExportFormat,
    export_preferences,
    step_shapes,
)

__all__ = [
    "JSONL_FILE",
    "META_FILE",
    "ExportFormat",
    "PreferenceExport",
    "PreferencePair",
    "check_compatible",
    "export_preferences",
    "load_preferences",
]


@dataclass(frozen=True, eq=False)
class PreferencePair:
    """One exported answer.

    Attributes:
        query_id: query id in the source store.
        label_id: label id in the source store.
        choice: ``a``, ``b`` or ``tie``.
        labeler: labeler name.
        seconds_taken: time spent on the pair.
        created_at: Unix seconds.
        round: loop round that created the query.
        left_is_a: whether segment a was shown on the left.
        segment_a: segment a; its ``true_rewards`` are NaN (true rewards are not exported), ``frames`` None.
        segment_b: segment b, likewise.
        true_return_a: env return of segment a if exported, for analysis only.
        true_return_b: env return of segment b if exported, for analysis only.
    """

    query_id: int
    label_id: int
    choice: str
    labeler: str
    seconds_taken: float
    created_at: float
    round: int
    left_is_a: bool
    segment_a: Segment
    segment_b: Segment
    true_return_a: float | None
    true_return_b: float | None


@dataclass(frozen=True, eq=False)
class PreferenceExport:
    """Preference pairs read back by :func:`load_preferences`, with the metadata of the env they came from."""

    path: Path
    format: ExportFormat
    env_id: str
    obs_shape: tuple[int, ...]
    action_spec: dict[str, Any]
    segment_length: int
    pairs: tuple[PreferencePair, ...]
    meta: dict[str, Any]

    def __len__(self) -> int:
        return len(self.pairs)


# --------------------------------------------------------------------------------------------------- import


def load_preferences(path: str | os.PathLike[str]) -> PreferenceExport:
    """Read an export written by :func:`export_preferences` (the format is detected from the folder).

    Args:
        path: the export folder (or its ``preferences.jsonl``).

    Raises:
        ConfigError: ``path`` is not a preference export, or was written by a newer format version.
    """
    folder = Path(path)
    if folder.is_file() and folder.name == JSONL_FILE:
        folder = folder.parent
    if (folder / JSONL_FILE).is_file():
        meta = _read_meta(folder, None)
        rows: Iterable[Mapping[str, Any]] = _read_jsonl(folder / JSONL_FILE)
        storage: ExportFormat = "jsonl"
    elif (folder / "dataset_info.json").is_file() or (folder / "state.json").is_file():
        import datasets  # type: ignore[import-untyped]  # heavy import, only needed for this format

        try:
            dataset = datasets.load_from_disk(str(folder))
        except Exception as error:  # a corrupt arrow file or state.json: datasets raises many kinds
            raise ConfigError(f"{folder} cannot be read as a preference export ({type(error).__name__})") from None
        meta = _read_meta(folder, dataset.info.description)
        rows = _read_hf(dataset, {name: np.dtype(dtype) for name, dtype in meta["dtypes"].items()})
        storage = "hf"
    else:
        raise ConfigError(
            f"{folder} is not a preference export: expected a folder written by `rlhf export` "
            f"(a datasets folder or {JSONL_FILE} with {META_FILE})"
        )
    try:
        binding = EnvBinding(
            env_id=str(meta["env_id"]),
            obs_shape=tuple(int(d) for d in meta["obs_shape"]),
            action_spec=dict(meta["action_spec"]),
            segment_length=int(meta["segment_length"]),
        )
        check(binding.segment_length >= 1 and min(binding.obs_shape, default=1) >= 1, "sizes must be positive")
        shapes = step_shapes(binding)
        dtypes = {name: np.dtype(dtype) for name, dtype in meta["dtypes"].items()}
    except (KeyError, ValueError, TypeError, AttributeError) as error:
        raise ConfigError(f"the metadata of {folder} is malformed ({_reason(error)})") from None
    cache: dict[str, Segment] = {}
    pairs = []
    for number, row in enumerate(rows, 1):
        try:
            pairs.append(_pair(row, shapes, dtypes, cache))
        except (KeyError, ValueError, TypeError, IndexError) as error:
            raise ConfigError(f"row {number} of {folder} is malformed ({_reason(error)})") from None
    return PreferenceExport(
        path=folder,
        format=storage,
        env_id=binding.env_id,
        obs_shape=binding.obs_shape,
        action_spec=binding.action_spec,
        segment_length=binding.segment_length,
        pairs=tuple(pairs),
        meta=meta,
    )


def _reason(error: Exception) -> str:
    return f"missing {error}" if isinstance(error, KeyError) else str(error).splitlines()[0]


def _pair(
    row: Mapping[str, Any],
    shapes: Mapping[str, tuple[int, ...]],
    dtypes: Mapping[str, np.dtype[Any]],
    cache: dict[str, Segment],
) -> PreferencePair:
    """One exported label as a pair of segments; ValueError (or KeyError, TypeError) for a malformed row."""
    check(isinstance(row, Mapping), f"a row must be a JSON object, got {type(row).__name__}")
    check(row.get("choice") in CHOICES, f"choice must be one of {', '.join(CHOICES)}, got {row.get('choice')!r}")
    segments = [_segment(row, side, shapes, dtypes, cache) for side in SIDES]
    true_returns = [row.get(f"true_return_{side}_analysis_only") for side in SIDES]
    return PreferencePair(
        query_id=int(row["query_id"]),
        label_id=int(row["label_id"]),
        choice=str(row["choice"]),
        labeler=str(row["labeler"]),
        seconds_taken=float(row["seconds_taken"]),
        created_at=float(row["created_at"]),
        round=int(row["round"]),
        left_is_a=bool(row["left_is_a"]),
        segment_a=segments[0],
        segment_b=segments[1],
        true_return_a=None if true_returns[0] is None else float(true_returns[0]),
        true_return_b=None if true_returns[1] is None else float(true_returns[1]),
    )


def _read_meta(folder: Path, description: str | None) -> dict[str, Any]:
    meta_path = folder / META_FILE
    text = meta_path.read_text() if meta_path.is_file() else description
    try:
        meta: dict[str, Any] = json.loads(text) if text else {}
    except json.JSONDecodeError:
        meta = {}
    if not isinstance(meta, dict):
        meta = {}
    if meta.get("format") != FORMAT_NAME:
        raise ConfigError(f"{folder} has no {META_FILE} describing a preference export; was it written by rlhf?")
    if int(meta.get("format_version", 0)) > FORMAT_VERSION:
        raise ConfigError(
            f"{folder} was written in preference format version {meta['format_version']}; this code reads up to "
            f"{FORMAT_VERSION}. Upgrade rlhf-pipeline"
        )
    return meta


def _read_hf(dataset: Any, dtypes: Mapping[str, np.dtype[Any]]) -> Iterable[dict[str, Any]]:
    """Rows of a loaded HF dataset with exact values.

    Scalars come back as Python values; arrays column-wise with their stored dtype (the ``numpy`` format would
    otherwise cast floats to float32 and ints to int64).
    """
    array_columns = {f"{name}_{side}": dtype for name, dtype in dtypes.items() for side in SIDES}
    scalars = [name for name in dataset.column_names if name not in array_columns]
    table: dict[str, Any] = dataset.select_columns(scalars)[:]
    for column, dtype in array_columns.items():
        table[column] = dataset.with_format("numpy", columns=[column], dtype=dtype)[:][column]
    for index in range(len(dataset)):
        yield {name: values[index] for name, values in table.items()}


def _read_jsonl(path: Path) -> Iterable[dict[str, Any]]:
    with path.open() as file:
        for number, line in enumerate(file, 1):
            if line.strip():
                try:
                    yield json.loads(line)
                except json.JSONDecodeError as error:
                    raise ConfigError(f"line {number} of {path} is not valid JSON ({error.msg})") from None


def _segment(
    row: Mapping[str, Any],
    side: str,
    shapes: Mapping[str, tuple[int, ...]],
    dtypes: Mapping[str, np.dtype[Any]],
    cache: dict[str, Segment],
) -> Segment:
    """Segment ``side`` of a row; rows that share a segment share one object."""
    segment_id = str(row[f"segment_{side}_id"])
    if segment_id not in cache:
        arrays = {
            name: np.asarray(row[f"{name}_{side}"], dtype=dtypes[name]).reshape(shapes[name])
            for name in ("obs", "actions", "mask")
        }
        # True rewards are not exported; NaN makes any accidental use visible instead of silently zero.
        unknown_rewards = np.full(shapes["mask"], np.nan, dtype=np.float32)
        cache[segment_id] = Segment(id=segment_id, true_rewards=unknown_rewards, **arrays)
    return cache[segment_id]


def check_compatible(export: PreferenceExport, env_id: str | None, obs_shape: Sequence[int]) -> None:
    """Refuse preferences collected on another env or observation shape.

    Args:
        export: loaded preferences.
        env_id: the env to train for; None checks the observation shape only.
        obs_shape: shape of one observation of that env.

    Raises:
        ConfigError: the env id or observation shape differs.
    """
    shape = tuple(int(d) for d in obs_shape)
    if env_id is not None and export.env_id != env_id:
        raise ConfigError(
            f"preferences at {export.path} were collected on {export.env_id}, not {env_id}; "
            f"train on {export.env_id} or pick a matching dataset"
        )
    if export.obs_shape != shape:
        raise ConfigError(
            f"preferences at {export.path} have observations of shape {export.obs_shape}, not {shape} "
            f"({export.env_id}); pick a dataset collected with the same observation space"
        )
