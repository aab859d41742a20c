"""Errors a user can cause. The CLI turns them into a one-line message and exit code 2."""

import itertools


class ConfigError(ValueError):
    """A configuration or input the user gave is invalid; the message says what is allowed."""


class RankLost(RuntimeError):
    """Under ``torchrun``: another rank of the world stopped (or did not answer within the timeout), so this one
    stops too; the CLI prints one line and exits with 1."""


def check(condition: bool, message: str) -> None:
    """Raise :class:`ConfigError` with ``message`` unless ``condition`` holds."""
    if not condition:
        raise ConfigError(message)


MAX_NETWORK_WEIGHTS = 50_000_000
"""Most weights of one network a command builds: 200 MB in float32, and training holds about four times that
(gradients, Adam's two moments). The networks of these algorithms have thousands to a few million; a larger one is
a mistyped size, refused before anything is allocated."""


def check_hidden_sizes(
    hidden_sizes: tuple[int, ...], inputs: int = 1, outputs: int = 1, what: str = "--hidden-sizes"
) -> None:
    """ConfigError unless ``hidden_sizes`` are positive and an MLP ``(inputs, *hidden_sizes, outputs)`` has at
    most :data:`MAX_NETWORK_WEIGHTS` weights (inputs and outputs default to 1: the hidden layers alone)."""
    check(bool(hidden_sizes) and min(hidden_sizes) >= 1, f"{what} needs positive sizes, got {hidden_sizes}")
    sizes = (inputs, *hidden_sizes, outputs)
    weights = sum((n_in + 1) * n_out for n_in, n_out in itertools.pairwise(sizes))
    check(
        weights <= MAX_NETWORK_WEIGHTS,
        f"{what} {' '.join(map(str, hidden_sizes))} would build a network of {weights:,} weights, over the limit of "
        f"{MAX_NETWORK_WEIGHTS:,}; use sizes like 64 or 256",
    )


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
