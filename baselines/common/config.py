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

# Fields a resumed run may change: how long it runs, how often it evaluates and saves, where it computes and whether
# it logs to wandb (where it writes is the folder it resumes). Anything else would make it a different experiment.
RESUMABLE_FIELDS = frozenset({"total_steps", "track", "device", "torch_threads", "eval_every", "checkpoint_every"})


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


# Where a run was written, not what it was: a run's config.json used as --config FILE must not carry these along.
_RUN_PLACE_FIELDS = ("out", "resume", "config")


def cli_default(cls: type[Config], env: str | None, config_file: str | None, resume: str | None) -> Config:
    """The instance the CLI shows and flags override, for every trainer: with ``--resume DIR`` the run's saved
    config; else the env's defaults (``cls.defaults_for(env, **values)`` where the class has per-env tables),
    under the values of ``--config FILE`` (a tuner's best config, or another run's config.json: where that run was
    written is left out). The env is ``--env``, else the file's, else the class default."""
    if resume is not None:
        return resume_default(cls, Path(resume))
    values = read_config_file(cls, Path(config_file)) if config_file else {}
    for name in _RUN_PLACE_FIELDS:
        values.pop(name, None)
    env_id = env or values.pop("env", None) or getattr(cls, "env")  # noqa: B009 (a generic config dataclass)
    values.pop("env", None)
    if config_file and "config" in {field.name for field in dataclasses.fields(cls)}:  # type: ignore[arg-type]
        values["config"] = Path(config_file)
    if hasattr(cls, "defaults_for"):  # per-env tables
        config: Config = getattr(cls, "defaults_for")(env_id, **values)  # noqa: B009
        return config
    factory: Any = cls
    return factory(env=env_id, **values)


def saved_config(cls: type[Any], folder: Path) -> dict[str, Any]:
    """A run's saved ``config.json``; fields it lacks (added to ``cls`` after the run began) take the values in
    ``cls.FIELDS_ADDED_LATER`` when the class names them: the behaviour the run had, not today's default."""
    saved = read_config_file(cls, folder / "config.json")
    return {**getattr(cls, "FIELDS_ADDED_LATER", {}), **saved}


def resume_default(cls: type[Config], folder: Path) -> Config:
    """What ``--resume DIR`` starts from: the run's saved config, continuing in ``folder``."""
    return cls(**{**saved_config(cls, folder), "resume": folder, "out": folder})


def resolve_resume(config: Config, extra_resumable: Iterable[str] = ()) -> Config:
    """The config a resumed run (``config.resume`` set) continues with: its saved ``config.json``, with the fields
    a resume may change (``RESUMABLE_FIELDS`` and ``extra_resumable``) taken from ``config``.

    ``config`` is the saved config with the user's changes (the CLI shows the saved config as the defaults;
    code starts from :func:`resume_default` and replaces what it changes). Any other field that differs from the
    saved value is a ConfigError naming its flag: the continued run must be the same experiment.
    """
    folder = getattr(config, "resume")  # noqa: B009 (a generic config dataclass)
    assert folder is not None
    cls: type[Any] = type(config)
    saved = saved_config(cls, Path(folder))
    resumable = RESUMABLE_FIELDS | set(extra_resumable)
    fixed = [name for name in saved if name not in resumable and name not in _RUN_PLACE_FIELDS]
    changed = [name for name in fixed if getattr(config, name) != saved[name]]
    out = getattr(config, "out", None)
    if out is not None and Path(out).resolve() != Path(folder).resolve():
        changed.append("out")  # a resumed run goes on in its own folder
    if changed:
        flags = ", ".join(flag(name) for name in changed)
        raise ConfigError(f"--resume continues {folder} with its saved config; drop {flags} (saved values differ)")
    given = {name: getattr(config, name) for name in resumable if name in saved}
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
