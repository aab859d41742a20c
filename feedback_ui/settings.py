"""Settings of the labeling service, from keyword arguments, then ``RLHF_UI_*`` environment variables, then defaults.

A *workspace* is a run folder of ``rlhf run``: ``DIR/prefs.sqlite`` is the preference store and ``DIR/clips/`` holds
the rendered clips. Either can be moved elsewhere with ``db_url`` (any SQLAlchemy URL, e.g. PostgreSQL for several
server processes) and ``media_dir``.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_TASKS: dict[str, str] = {
    "Pendulum-v1": "Prefer the clip where the pendulum swings up and stays upright.",
    "CartPole-v1": "Prefer the clip where the pole stays balanced and the cart stays near the middle.",
    "Acrobot-v1": "Prefer the clip where the tip of the arm swings higher, sooner.",
    "MountainCar-v0": "Prefer the clip where the car gets closer to the flag on the right hill.",
    "MountainCarContinuous-v0": "Prefer the clip where the car gets closer to the flag on the right hill.",
}
WILDCARD_HOSTS = ("0.0.0.0", "::", "")
"""Listening addresses that mean every interface."""
GENERIC_TASK = "Prefer the clip where the agent does the task better. Dimmed, frozen frames mean the episode ended."


class Settings(BaseSettings):
    """Where the store and clips are, who may administer, and how the queue behaves."""

    model_config = SettingsConfigDict(env_prefix="RLHF_UI_", extra="forbid", frozen=True)

    workspace: Path | None = None
    """Run folder holding prefs.sqlite and clips/ (needed unless db_url and media_dir are both given)."""
    db_url: str | None = None
    """SQLAlchemy URL of the preference store (default sqlite:///WORKSPACE/prefs.sqlite)."""
    media_dir: Path | None = None
    """Folder of the rendered clips (default WORKSPACE/clips)."""
    admin_token: SecretStr | None = None
    """Token for the admin routes and page (``serve`` creates WORKSPACE/admin_token when unset)."""
    task_description: str | None = None
    """One line shown above the clips (default: the workspace's, else one per env)."""
    labels_per_pair: int | None = Field(default=None, ge=1, le=100)
    """Labels wanted per pair, recorded in the workspace for the loop's new queries (k > 1 measures agreement)."""
    lease_seconds: float = Field(default=300.0, gt=0, le=86_400)
    """How long a served pair stays reserved for its labeler before it returns to the queue."""
    max_body_bytes: int = Field(default=16_384, ge=1024, le=10_000_000)
    """Requests with a larger body are refused with 413."""
    max_header_bytes: int = Field(default=16_384, ge=1024, le=1_048_576)
    """Requests whose target and headers together are larger are refused with 431."""
    host: str = "127.0.0.1"
    """Interface to listen on."""
    port: int = Field(default=8000, ge=0, le=65_535)
    """TCP port (0: any free port)."""
    public_url: str | None = None
    """Base URL printed in labeler links (default http://HOST:PORT); behind a proxy, the URL people open."""
    allowed_hosts: tuple[str, ...] = ()
    """More host names the Host header may carry besides the host of the links, localhost and the listening
    address (``*``: any)."""
    sqlite_synchronous: Literal["FULL", "NORMAL"] = "FULL"
    """FULL: an acknowledged label survives power loss; NORMAL: it survives a crash of the server process."""

    @property
    def resolved_db_url(self) -> str:
        if self.db_url is not None:
            return self.db_url
        if self.workspace is None:
            raise ValueError("settings need a workspace or a db_url")
        return f"sqlite:///{(self.workspace / 'prefs.sqlite').resolve()}"

    @property
    def resolved_media_dir(self) -> Path:
        if self.media_dir is not None:
            return self.media_dir
        if self.workspace is None:
            raise ValueError("settings need a workspace or a media_dir")
        return self.workspace / "clips"

    @property
    def base_url(self) -> str:
        if self.public_url is not None:
            return self.public_url.rstrip("/")
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @property
    def allowed_host_names(self) -> frozenset[str] | None:
        """Host names a request's ``Host`` header may carry (lower case, no port); None lets any through.

        Any host passes when listening on every interface (``0.0.0.0``, ``::``) with neither ``public_url`` nor
        ``allowed_hosts``: the server then has no name to check against.
        """
        extra = {host_name(host) for host in self.allowed_hosts}
        if "*" in extra:
            return None
        names = {"localhost", "127.0.0.1", "::1", *extra}
        if self.public_url is not None:
            names.add(host_name(urlsplit(self.public_url).netloc.rsplit("@", 1)[-1]))
        if self.host in WILDCARD_HOSTS:
            return None if self.public_url is None and not extra else frozenset(names)
        names.add(host_name(self.host))
        return frozenset(names)


def host_name(host: str) -> str:
    """The host of a ``Host`` header or URL authority, lower case, without port or IPv6 brackets."""
    host = host.strip().lower()
    if host.startswith("["):
        return host[1 : host.find("]")] if "]" in host else host
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


@lru_cache
def get_settings() -> Settings:
    """Settings from the environment, read once; :func:`feedback_ui.app.create_app` overrides this dependency."""
    return Settings()
