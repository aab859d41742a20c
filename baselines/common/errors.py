"""Errors a user can cause. The CLI turns them into a one-line message and exit code 2."""


class ConfigError(ValueError):
    """A configuration or input the user gave is invalid; the message says what is allowed."""


def check(condition: bool, message: str) -> None:
    """Raise :class:`ConfigError` with ``message`` unless ``condition`` holds."""
    if not condition:
        raise ConfigError(message)


SEED_LIMIT = 2**32
"""Seeds go to NumPy, torch, gymnasium and Optuna; the range all of them take is [0, 2**32)."""


def check_seed(seed: int) -> None:
    """ConfigError unless ``seed`` is in ``[0, 2**32)``."""
    check(0 <= seed < SEED_LIMIT, f"--seed must be in [0, 2**32), got {seed}")


def check_device(device: str) -> None:
    """ConfigError unless ``device`` is ``cpu`` or a CUDA device that torch can see."""
    check(device == "cpu" or device.startswith("cuda"), f"--device must be cpu or cuda, got {device}")
    if device.startswith("cuda"):
        import torch  # here, not at the top: configs (and --help) load without torch

        check(torch.cuda.is_available(), "--device cuda was asked for but torch sees no CUDA device")
