"""Checkpoints: one file of tensors and plain values, written atomically, read back with clear errors."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from baselines.common.errors import ConfigError


def save_checkpoint(path: Path, payload: dict[str, Any]) -> None:
    """Write ``payload`` (tensors, numbers, strings, lists, dicts) so a crash never leaves half a file."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(payload, tmp)
    os.replace(tmp, path)


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint`; anything else raises ConfigError."""
    if not path.is_file():
        raise ConfigError(f"no checkpoint at {path}")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises many types for a damaged file
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise ConfigError(f"checkpoint {path} is corrupt or not a checkpoint ({reason[:120]})") from None
    if not isinstance(payload, dict):
        raise ConfigError(f"checkpoint {path} does not hold a checkpoint dictionary")
    return payload
