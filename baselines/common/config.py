"""Config files and resumed runs: JSON field values checked against a config dataclass, one resume rule for every
trainer."""

from __future__ import annotations

import dataclasses
import json
import typing
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from pydantic import TypeAdapter, ValidationError

from baselines.common.errors import ConfigError

Config = TypeVar("Config")

# Fields a resumed run may change: where it writes and logs, how long it runs, how often it evaluates and saves,
# and where it computes. Everything else would make the continued run a different experiment.
RESUMABLE_FIELDS = frozenset(
    {"total_steps", "out", "resume", "config", "track", "device", "torch_threads", "eval_every", "checkpoint_every"}
)


def read_config_file(cls: type[Any], path: Path) -> dict[str, Any]:
    """Field values from a JSON file (a run's ``config.json`` or a tuner's best config).

    Each value is validated strictly against its field's annotation by pydantic (no "16" for an integer, no
    "yes" for a bool; JSON lists become tuples, strings become paths). Unknown keys raise ConfigError naming them.
    """
    try:
        values = json.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except OSError as error:  # a folder, or a file under a file
        raise ConfigError(f"config file {path} cannot be read ({error.strerror or error})") from None
    except UnicodeDecodeError:
        raise ConfigError(f"config file {path} is not UTF-8 text") from None
    except json.JSONDecodeError as error:
        raise ConfigError(f"config file {path} is not valid JSON ({error.msg} at line {error.lineno})") from None
    if not isinstance(values, dict):
        raise ConfigError(f"config file {path} must hold a JSON object of field values")
    adapters = _field_adapters(cls)
    unknown = sorted(set(values) - set(adapters))
    if unknown:
        raise ConfigError(
            f"unknown hyperparameter(s) {', '.join(unknown)} in {path}; known: {', '.join(sorted(adapters))}"
        )
    checked = {}
    for name, value in values.items():
        try:
            checked[name] = adapters[name].validate_json(json.dumps(value), strict=True)
        except ValidationError as error:
            first = error.errors()[0]
            where = "".join(f"[{part}]" for part in first["loc"])
            raise ConfigError(f"{name}{where} in {path}: {first['msg']}, got {json.dumps(value)}") from None
    return checked


_ADAPTERS: dict[type[Any], dict[str, TypeAdapter[Any]]] = {}


def _field_adapters(cls: type[Any]) -> dict[str, TypeAdapter[Any]]:
    """A pydantic validator per field of the config dataclass ``cls``, from its resolved annotations (cached)."""
    if cls not in _ADAPTERS:
        hints = typing.get_type_hints(cls)
        _ADAPTERS[cls] = {field.name: TypeAdapter(hints[field.name]) for field in dataclasses.fields(cls)}
    return _ADAPTERS[cls]


def resume_default(cls: type[Config], folder: Path) -> Config:
    """What ``--resume DIR`` starts from: the run's saved config, continuing in ``folder``."""
    saved = read_config_file(cls, folder / "config.json")
    return cls(**{**saved, "resume": folder, "out": folder})


def resolve_resume(config: Config, extra_resumable: Iterable[str] = ()) -> Config:
    """The config a resumed run (``config.resume`` set) continues with: its saved ``config.json``, with the fields
    a resume may change (``RESUMABLE_FIELDS`` and ``extra_resumable``) taken from ``config`` where it sets them.

    A field counts as set when it differs from the saved value and from the field's default (``--resume DIR``
    shows the saved config as the defaults, and code may pass only what it changes). Any other field set to a
    new value is a ConfigError naming its flag: the continued run must be the same experiment.
    """
    folder = getattr(config, "resume")  # noqa: B009 (a generic config dataclass)
    assert folder is not None
    cls: type[Any] = type(config)
    saved = read_config_file(cls, Path(folder) / "config.json")
    resumable = RESUMABLE_FIELDS | set(extra_resumable)
    given: dict[str, Any] = {}
    changed = []
    for field in dataclasses.fields(cls):
        value = getattr(config, field.name)
        if field.name not in saved or value == saved[field.name] or value == field.default:
            continue
        if field.name in resumable:
            given[field.name] = value
        else:
            changed.append(field.name)
    if changed:
        flags = ", ".join(flag(name) for name in changed)
        raise ConfigError(f"--resume continues {folder} with its saved config; drop {flags} (saved values differ)")
    continuing = {"resume": Path(folder), "out": Path(folder)} | ({"config": None} if "config" in saved else {})
    resumed: Config = cls(**{**saved, **given, **continuing})
    return resumed


def flag(name: str) -> str:
    """The command-line flag of a config field: ``batch_size`` -> ``--batch-size``."""
    return "--" + name.replace("_", "-")


def find_flag(args: Sequence[str], flag: str) -> str | None:
    """The value of ``--flag VALUE`` or ``--flag=VALUE`` in ``args`` (last one wins), else None."""
    value = None
    for i, arg in enumerate(args):
        if arg == flag and i + 1 < len(args):
            value = args[i + 1]
        elif arg.startswith(flag + "="):
            value = arg.split("=", 1)[1]
    return value
