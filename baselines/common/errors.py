"""Errors a user can cause. The CLI turns them into a one-line message and exit code 2."""


class ConfigError(ValueError):
    """A configuration or input the user gave is invalid; the message says what is allowed."""


def check(condition: bool, message: str) -> None:
    """Raise :class:`ConfigError` with ``message`` unless ``condition`` holds."""
    if not condition:
        raise ConfigError(message)
