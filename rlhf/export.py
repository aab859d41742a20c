"""`rlhf export`: the labeled pairs of a preference store written as a Hugging Face dataset or JSONL."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from baselines.common.errors import ConfigError, check
from rlhf.store import PreferenceStore, export_preferences, sqlite_file


@dataclass(frozen=True)
class ExportConfig:
    """Export the labeled pairs of a preference store as a Hugging Face dataset (save_to_disk) or JSONL."""

    workspace: Path | None = None
    """Run folder of `rlhf run` (its store is WORKSPACE/prefs.sqlite)."""
    db: str | None = None
    """Or any SQLAlchemy URL of a preference store."""
    out: Path = Path("preferences")
    """Folder to write."""
    format: Literal["hf", "jsonl"] = "hf"
    """hf: a datasets.Dataset folder; jsonl: one JSON object per pair."""
    overwrite: bool = False
    """Replace an existing export at --out."""


def run_export(config: ExportConfig) -> dict[str, Any]:
    check(config.workspace is not None or config.db is not None, "give --workspace DIR or --db URL")
    if config.db is None:
        assert config.workspace is not None
        if not (config.workspace / "prefs.sqlite").is_file():
            raise ConfigError(f"no preference store at {config.workspace / 'prefs.sqlite'}; is it a `rlhf run` folder?")
    location = config.db if config.db is not None else Path(str(config.workspace)) / "prefs.sqlite"
    database_file = sqlite_file(location)
    if database_file is not None and not database_file.is_file():  # exporting never creates a store
        raise ConfigError(f"no preference store at {database_file}; --db takes an existing store's path or URL")
    store = PreferenceStore(location)
    try:
        pairs = export_preferences(store, config.out, config.format, overwrite=config.overwrite)
    finally:
        store.close()
    return {"algo": "export", "path": str(config.out), "format": config.format, "pairs": pairs}
