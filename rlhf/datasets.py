"""Export and import of preference data: a Hugging Face ``datasets`` folder or JSONL, one row per answer.

A row is one effective, non-skip label: the query and label ids, the env, the choice (``a``, ``b`` or ``tie``, about
segments a/b, not screen sides), who answered and how long it took, and both segments' observations, actions and
masks. True returns may be included for analysis (agreement of labelers with the env reward) under columns named
``true_return_{a,b}_analysis_only``; they are never part of the segments handed back for training.

Layout of an export folder ``PATH``:

* ``format="hf"``: ``datasets.Dataset.save_to_disk(PATH)`` plus ``PATH/rlhf_preferences.json``.
* ``format="jsonl"``: ``PATH/preferences.jsonl`` (one JSON object per row, arrays as nested lists) plus
  ``PATH/rlhf_preferences.json``.

``rlhf_preferences.json`` holds the metadata (env id, obs shape, action spec, segment length, array dtypes). The HF
dataset also carries it as JSON in its ``info.description``, so it survives ``Dataset.save_to_disk`` by others.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import numpy as np

from baselines.common.errors import ConfigError, check
from rlhf.segments import Segment
from rlhf.store import CHOICES, EnvBinding, PreferenceStore

ExportFormat = Literal["hf", "jsonl"]

FORMAT_NAME = "rlhf-preferences"
FORMAT_VERSION = 1
META_FILE = "rlhf_preferences.json"
JSONL_FILE = "preferences.jsonl"
_SIDES = ("a", "b")

COLUMN_DESCRIPTIONS: dict[str, str] = {
    "query_id": "id of the query in the preference store",
    "label_id": "id of the label record in the preference store",
    "env_id": "gymnasium env id",
    "choice": "a: segment a preferred, b: segment b preferred, tie: equally good (trains as 0.5/0.5)",
    "labeler": "labeler name (people, or teacher:NAME for simulated teachers)",
    "seconds_taken": "seconds the labeler spent on the pair",
    "created_at": "Unix seconds when the label was stored",
    "round": "RLHF loop round that created the query",
    "left_is_a": "whether segment a was shown on the left",
    "segment_a_id": "id of segment a",
    "segment_b_id": "id of segment b",
    "obs_a": "(segment_length, *obs_shape) observations of segment a, zeros on padded steps",
    "actions_a": "(segment_length,) ints or (segment_length, action_dim) floats, zeros on padded steps",
    "mask_a": "(segment_length,) true for real steps, false for padded (absorbing) steps",
    "obs_b": "as obs_a, for segment b",
    "actions_b": "as actions_a, for segment b",
    "mask_b": "as mask_a, for segment b",
    "true_return_a_analysis_only": "env return of segment a; for analysis only, never for training",
    "true_return_b_analysis_only": "env return of segment b; for analysis only, never for training",
}


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


# --------------------------------------------------------------------------------------------------- export


def export_preferences(
    store: PreferenceStore,
    path: str | os.PathLike[str],
    format: ExportFormat = "hf",
    include_true_returns: bool = True,
    overwrite: bool = False,
) -> int:
    """Write every effective non-skip label of ``store`` to the folder ``path``.

    Args:
        store: a store bound to an env (:meth:`PreferenceStore.bind_env`).
        path: output folder; must not exist unless ``overwrite`` and it holds an earlier export.
        format: ``hf`` (a ``datasets`` folder) or ``jsonl``.
        include_true_returns: add the ``true_return_{a,b}_analysis_only`` columns.
        overwrite: replace an earlier export at ``path``.

    Returns:
        The number of rows written.

    Raises:
        ConfigError: unknown format, unbound store, or ``path`` exists.
    """
    if format not in ("hf", "jsonl"):
        raise ConfigError(f"export format must be 'hf' or 'jsonl', not {format!r}")
    binding = store.env()
    if binding is None:
        raise ConfigError(f"the store at {store.url} is not bound to an env yet; there is nothing to export")
    folder = Path(path)
    _prepare_folder(folder, overwrite)

    labels = store.effective_labels(include_skips=False)
    segment_ids = list(dict.fromkeys(sid for label in labels for sid in (label.segment_a, label.segment_b)))
    segments = dict(zip(segment_ids, store.get_segments(segment_ids), strict=True))
    dtypes = _array_dtypes(binding, segments.values())
    columns: dict[str, list[Any]] = {
        "query_id": [label.query_id for label in labels],
        "label_id": [label.label_id for label in labels],
        "env_id": [binding.env_id] * len(labels),
        "choice": [label.choice for label in labels],
        "labeler": [label.labeler for label in labels],
        "seconds_taken": [label.seconds_taken for label in labels],
        "created_at": [label.created_at for label in labels],
        "round": [label.round for label in labels],
        "left_is_a": [label.left_is_a for label in labels],
    }
    for side in _SIDES:
        side_segments = [segments[label.segment_a if side == "a" else label.segment_b] for label in labels]
        columns[f"segment_{side}_id"] = [segment.id for segment in side_segments]
        for name in ("obs", "actions", "mask"):
            columns[f"{name}_{side}"] = [getattr(s, name).astype(dtypes[name], copy=False) for s in side_segments]
        if include_true_returns:
            columns[f"true_return_{side}_analysis_only"] = [segment.true_return for segment in side_segments]

    meta = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "storage": format,
        "env_id": binding.env_id,
        "obs_shape": list(binding.obs_shape),
        "action_spec": binding.action_spec,
        "segment_length": binding.segment_length,
        "dtypes": {name: np.dtype(dtype).name for name, dtype in dtypes.items()},
        "num_pairs": len(labels),
        "true_returns_included": include_true_returns,
        "exported_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "columns": {name: COLUMN_DESCRIPTIONS[name] for name in columns},
    }
    folder.mkdir(parents=True, exist_ok=True)
    if format == "hf":
        _write_hf(folder, columns, meta, binding, dtypes)
    else:
        _write_jsonl(folder, columns)
    (folder / META_FILE).write_text(json.dumps(meta, indent=2) + "\n")
    return len(labels)


def _prepare_folder(folder: Path, overwrite: bool) -> None:
    if not folder.exists():
        return
    if folder.is_dir() and not any(folder.iterdir()):
        return
    if overwrite and folder.is_dir() and (folder / META_FILE).exists():
        shutil.rmtree(folder)
        return
    raise ConfigError(
        f"{folder} already exists; choose a new export path"
        + (" (overwrite only replaces an earlier preference export)" if overwrite else " or pass overwrite=True")
    )


def _array_dtypes(binding: EnvBinding, segments: Iterable[Segment]) -> dict[str, np.dtype[Any]]:
    """One dtype per array column: the stored dtypes (promoted losslessly if segments disagree)."""
    segments = list(segments)
    if not segments:
        discrete = binding.action_spec.get("type") == "Discrete"
        return {
            "obs": np.dtype(np.float32),
            "actions": np.dtype(np.int64 if discrete else np.float32),
            "mask": np.dtype(bool),
        }
    return {
        name: np.result_type(*{getattr(segment, name).dtype for segment in segments})
        for name in ("obs", "actions", "mask")
    }


def _step_shapes(binding: EnvBinding) -> dict[str, tuple[int, ...]]:
    """Shape of one row's array per column, ``(segment_length, ...)``."""
    length = binding.segment_length
    spec = binding.action_spec
    action_shape = () if spec.get("type") == "Discrete" else tuple(int(d) for d in spec.get("shape", ()))
    return {"obs": (length, *binding.obs_shape), "actions": (length, *action_shape), "mask": (length,)}


def _write_hf(
    folder: Path,
    columns: Mapping[str, list[Any]],
    meta: Mapping[str, Any],
    binding: EnvBinding,
    dtypes: Mapping[str, np.dtype[Any]],
) -> None:
    import datasets  # type: ignore[import-untyped]  # heavy import, only needed for this format

    shapes = _step_shapes(binding)
    scalar_features = {
        "query_id": datasets.Value("int64"),
        "label_id": datasets.Value("int64"),
        "env_id": datasets.Value("string"),
        "choice": datasets.Value("string"),
        "labeler": datasets.Value("string"),
        "seconds_taken": datasets.Value("float64"),
        "created_at": datasets.Value("float64"),
        "round": datasets.Value("int64"),
        "left_is_a": datasets.Value("bool"),
        "segment_a_id": datasets.Value("string"),
        "segment_b_id": datasets.Value("string"),
        "true_return_a_analysis_only": datasets.Value("float64"),
        "true_return_b_analysis_only": datasets.Value("float64"),
    }
    features: dict[str, Any] = {}
    for name in columns:
        array_name = name.rsplit("_", 1)[0]
        if array_name in shapes and name.endswith(_SIDES):
            features[name] = _hf_array_feature(datasets, shapes[array_name], dtypes[array_name])
        else:
            features[name] = scalar_features[name]
    hf_features = datasets.Features(features)
    info = datasets.DatasetInfo(description=json.dumps(dict(meta)), features=hf_features)
    dataset = datasets.Dataset.from_dict(dict(columns), features=hf_features, info=info)
    # An empty dataset saved with the default shard count cannot be loaded back (datasets 5.x).
    dataset.save_to_disk(str(folder), num_shards=1 if len(dataset) == 0 else None)


def _hf_array_feature(datasets: Any, shape: tuple[int, ...], dtype: np.dtype[Any]) -> Any:
    """A fixed-shape feature for ``shape`` arrays of ``dtype`` (lists for 1-D, ArrayND up to 5-D)."""
    name = np.dtype(dtype).name
    if len(shape) == 1:
        return datasets.List(datasets.Value(name), length=shape[0])
    array_types = {2: datasets.Array2D, 3: datasets.Array3D, 4: datasets.Array4D, 5: datasets.Array5D}
    if len(shape) not in array_types:
        raise ConfigError(f"HF export handles arrays of up to 5 dimensions, not {shape}; use format='jsonl'")
    return array_types[len(shape)](shape=shape, dtype=name)


def _write_jsonl(folder: Path, columns: Mapping[str, list[Any]]) -> None:
    rows = len(next(iter(columns.values())))
    with (folder / JSONL_FILE).open("w") as file:
        for index in range(rows):
            row = {name: _to_json(values[index]) for name, values in columns.items()}
            file.write(json.dumps(row) + "\n")


def _to_json(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    return value


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
        import datasets

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
        shapes = _step_shapes(binding)
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
    segments = [_segment(row, side, shapes, dtypes, cache) for side in _SIDES]
    true_returns = [row.get(f"true_return_{side}_analysis_only") for side in _SIDES]
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
    array_columns = {f"{name}_{side}": dtype for name, dtype in dtypes.items() for side in _SIDES}
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
