"""Config files and per-env defaults: a JSON file of field values, checked against the config dataclass."""

from __future__ import annotations

import dataclasses
import json
import types
import typing
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
    except OSError as error:  # a folder, or a file under a file
        raise ConfigError(f"config file {path} cannot be read ({error.strerror or error})") from None
    except UnicodeDecodeError:
        raise ConfigError(f"config file {path} is not UTF-8 text") from None
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
    try:
        hints = typing.get_type_hints(cls)
    except (NameError, TypeError):  # an annotation that does not resolve at run time: the config checks itself
        hints = {}
    for name, value in values.items():
        if not _matches(value, hints.get(name, Any)):
            raise ConfigError(f"{name} in {path} must be {_describe(hints[name])}, got {json.dumps(value)}")
    return {k: tuple(v) if isinstance(v, list) else v for k, v in values.items()}


def _matches(value: Any, annotation: Any) -> bool:
    """Whether a JSON value fits a config field's annotation (the types config dataclasses use)."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if annotation is Any:
        return True
    if origin is typing.Literal:
        return value in args
    if origin in (typing.Union, types.UnionType):
        return any(_matches(value, arg) for arg in args)
    if origin is tuple:
        if not isinstance(value, list):
            return False
        if len(args) == 2 and args[1] is Ellipsis:
            return all(_matches(item, args[0]) for item in value)
        return len(value) == len(args) and all(_matches(item, arg) for item, arg in zip(value, args, strict=True))
    if annotation is type(None):
        return value is None
    if annotation is bool:
        return isinstance(value, bool)
    if annotation is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if annotation is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if annotation in (str, Path):
        return isinstance(value, str)
    return True  # a type config files do not carry: left to the config's own checks


def _describe(annotation: Any) -> str:
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Literal:
        return "one of " + ", ".join(json.dumps(a) for a in args)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_describe(arg) for arg in args)
    if origin is tuple:
        return f"a list ({_describe(args[0])} each)" if args else "a list"
    if annotation is type(None):
        return "null"
    if annotation is float:
        return "a number"
    if annotation is int:
        return "an integer"
    if annotation is bool:
        return "true or false"
    if annotation in (str, Path):
        return "a string"
    return str(annotation)


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
