"""Config files and per-env defaults: a JSON file of field values, checked against the config dataclass."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from baselines.common.errors import ConfigError


def read_config_file(cls: type[Any], path: Path) -> dict[str, Any]:
    """Field values from a JSON file (a run's ``config.json`` or a tuner's best config).

    Unknown keys raise ConfigError naming them; lists become tuples so frozen dataclasses stay hashable.
    """
    try:
        values = json.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except json.JSONDecodeError as error:
        raise ConfigError(f"config file {path} is not valid JSON ({error.msg} at line {error.lineno})") from None
    if not isinstance(values, dict):
        raise ConfigError(f"config file {path} must hold a JSON object of field values")
    fields = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - fields)
    if unknown:
        raise ConfigError(
            f"unknown hyperparameter(s) {', '.join(unknown)} in {path}; known: {', '.join(sorted(fields))}"
        )
    return {k: tuple(v) if isinstance(v, list) else v for k, v in values.items()}


def find_flag(args: Sequence[str], flag: str) -> str | None:
    """The value of ``--flag VALUE`` or ``--flag=VALUE`` in ``args`` (last one wins), else None."""
    value = None
    for i, arg in enumerate(args):
        if arg == flag and i + 1 < len(args):
            value = args[i + 1]
        elif arg.startswith(flag + "="):
            value = arg.split("=", 1)[1]
    return value
