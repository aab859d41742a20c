"""Reward models on disk: a folder with ``config.json`` (the :class:`RewardModelConfig`) and ``model.safetensors``.

Safetensors holds only tensors (no pickle, nothing runs on load); the config rebuilds the module they fill.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from baselines.common.errors import ConfigError
from rlhf.reward.models import RewardModel, RewardModelConfig, build_reward_model

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
FORMAT = "rlhf-reward-model/1"


def save_reward_model(model: RewardModel, folder: str | Path) -> Path:
    """Write ``model`` to ``folder`` (created if needed); each file is replaced atomically. Returns the folder."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    config = {"format": FORMAT, **dataclasses.asdict(model.config)}
    weights = {name: tensor.detach().cpu().contiguous() for name, tensor in model.state_dict().items()}
    _write_atomically(folder / WEIGHTS_FILE, lambda path: save_file(weights, str(path)))
    _write_atomically(folder / CONFIG_FILE, lambda path: path.write_text(json.dumps(config, indent=2) + "\n"))
    return folder


def load_reward_model(folder: str | Path) -> RewardModel:
    """Rebuild the model saved in ``folder`` (on the CPU, in eval mode); anything wrong raises ConfigError."""
    folder = Path(folder)
    config_path, weights_path = folder / CONFIG_FILE, folder / WEIGHTS_FILE
    if not config_path.is_file() or not weights_path.is_file():
        raise ConfigError(f"{folder} is not a saved reward model (needs {CONFIG_FILE} and {WEIGHTS_FILE})")
    config = _read_config(config_path)
    try:
        weights = load_file(str(weights_path))
    except (SafetensorError, OSError, ValueError) as error:
        raise ConfigError(f"{weights_path} is corrupt or not a safetensors file ({_first_line(error)})") from None
    model = build_reward_model(config)
    try:
        model.load_state_dict(weights, strict=True)
    except RuntimeError as error:
        raise ConfigError(f"{weights_path} does not match {config_path} ({_first_line(error)})") from None
    return model.eval()


def _read_config(path: Path) -> RewardModelConfig:
    try:
        raw: Any = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ConfigError(f"{path} is not valid JSON ({_first_line(error)})") from None
    if not isinstance(raw, dict) or raw.pop("format", None) != FORMAT:
        raise ConfigError(f"{path} is not a reward model config (expected format {FORMAT!r})")
    try:
        return RewardModelConfig(**raw)
    except TypeError as error:
        raise ConfigError(f"{path} has unexpected or missing fields ({_first_line(error)})") from None


def _write_atomically(path: Path, write: Callable[[Path], object]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    write(tmp)
    os.replace(tmp, path)


def _first_line(error: BaseException) -> str:
    text = str(error).splitlines()[0] if str(error) else type(error).__name__
    return text[:160]
