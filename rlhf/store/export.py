"""Labels out of the store as files: a Hugging Face ``datasets`` folder or JSONL, one row per answer.

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
``datasets`` is imported only to write the HF format. Reading exports back: :mod:`rlhf.datasets`.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import numpy as np

from baselines.common.errors import ConfigError
from rlhf.store.records import EnvBinding, Segment
from rlhf.store.store import PreferenceStore

ExportFormat = Literal["hf", "jsonl"]

FORMAT_NAME = "rlhf-preferences"
FORMAT_VERSION = 1
META_FILE = "rlhf_preferences.json"
JSONL_FILE = "preferences.jsonl"
SIDES = ("a", "b")

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
    for side in SIDES:
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


def step_shapes(binding: EnvBinding) -> dict[str, tuple[int, ...]]:
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

    shapes = step_shapes(binding)
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
        if array_name in shapes and name.endswith(SIDES):
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
