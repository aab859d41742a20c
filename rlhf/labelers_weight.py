"""`rlhf labelers-weight`: the operator sets the weight of a labeler's labels in reward training, or gives it back to
the estimate (:mod:`rlhf.labelers`). The loop reads it the next time it trains the reward model; the admin page
shows it at once."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import tyro

from baselines.common.errors import ConfigError
from rlhf.store import PreferenceStore, sqlite_file


@dataclass(frozen=True)
class LabelersWeightConfig:
    """Set the weight of a labeler's labels in reward training (0: ignore them), or --auto to estimate it again."""

    name: str
    """The labeler's name."""
    weight: Annotated[str | None, tyro.conf.arg(metavar="W")] = None
    """A number >= 0; 1 weighs like an average label."""
    auto: bool = False
    """Clear the operator's weight: the estimate from agreement with the model and with peers holds again."""
    db: str | None = None
    """The preference store: an SQLAlchemy URL or a path to its SQLite file."""
    workspace: Path | None = None
    """Or the run folder of `rlhf run` (its store is WORKSPACE/prefs.sqlite)."""


def _weight(config: LabelersWeightConfig) -> float | None:
    if (config.weight is None) == (not config.auto):
        raise ConfigError("give --weight W or --auto (back to the estimated weight), not both")
    if config.weight is None:
        return None
    try:
        return float(config.weight)
    except ValueError:
        raise ConfigError(f"--weight must be a number >= 0, not {config.weight!r}") from None


def run_labelers_weight(config: LabelersWeightConfig) -> dict[str, Any]:
    """``rlhf labelers-weight --name NAME --weight W``: record the operator's weight (``--auto``: clear it)."""
    weight = _weight(config)
    if (config.db is None) == (config.workspace is None):
        raise ConfigError("give --db URL_OR_PATH or --workspace DIR (the run folder of `rlhf run`)")
    location = config.db if config.db is not None else str(Path(str(config.workspace)) / "prefs.sqlite")
    database_file = sqlite_file(location)
    if database_file is not None and not database_file.is_file():  # setting a weight never creates a store
        raise ConfigError(f"no preference store at {database_file}; give an existing store's path or URL")
    with PreferenceStore(location) as store:
        labeler = store.set_labeler_weight(config.name, weight)
    said = "automatic (estimated when the reward model trains)" if weight is None else f"{weight:g} (set by operator)"
    print(f"{labeler.name}: weight {said}", flush=True)
    return {"labeler": labeler.name, "labeler_id": labeler.id, "weight": weight, "path": location}
