"""Run folders: the contract that tools and benchmarks read.

Every command that trains or evaluates writes ``--out DIR`` holding ``config.json`` (the resolved config),
``metrics.jsonl`` (one JSON object per log step), ``summary.json`` (final figures) and ``report.html``.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import Any

from baselines.common.errors import ConfigError


def default_run_dir(command: str, env_id: str | None = None) -> Path:
    """``runs/<command>-<env>-<time>``, the default ``--out``."""
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    parts = [command] + ([env_id.replace("/", "_")] if env_id else []) + [stamp]
    return Path("runs") / "-".join(parts)


def next_due(step: int, every: int) -> int | float:
    """The first multiple of ``every`` after ``step``: when a periodic event (evaluation, checkpoint, log row) is
    next due. ``every`` 0 means never during the run (``inf``); callers still do the event once at the end."""
    return (step // every + 1) * every if every > 0 else math.inf


def to_jsonable(value: Any) -> Any:
    """Turn dataclasses, paths, tuples and numpy scalars/arrays into plain JSON values (NaN -> null)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, Mapping):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [to_jsonable(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "tolist"):  # numpy scalars and arrays
        return to_jsonable(value.tolist())
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write_json(path: Path, payload: Any) -> None:
    """Write ``payload`` as indented JSON atomically (a crash never leaves half a file)."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(to_jsonable(payload), indent=2) + "\n")
    os.replace(tmp, path)


class RunFolder:
    """One run's folder. Create it only after the config validated, so bad input writes nothing."""

    def __init__(self, path: Path) -> None:
        self.path = path

    @classmethod
    def create(cls, path: Path, config: Any, resume_step: int | None = None) -> RunFolder:
        """Make ``path`` and write ``config.json``.

        A new run (``resume_step`` None) refuses a folder that holds a run, finished or not. A resumed run
        continues from its checkpoint at ``resume_step``: the metrics rows logged after that step describe work
        that is about to be done again, so they are dropped (each step is then logged once, in order).
        """
        if resume_step is None:
            cls.check_new(path)
        path.mkdir(parents=True, exist_ok=True)
        folder = cls(path)
        if resume_step is not None:
            folder.drop_metrics_after(resume_step)
        write_json(path / "config.json", config)
        return folder

    @staticmethod
    def check_new(path: Path) -> None:
        """ConfigError when ``path`` already holds a run, finished or not (a new run must not mix into it)."""
        if (path / "summary.json").exists():
            raise ConfigError(f"{path} already holds a finished run; choose another --out")
        if (path / "checkpoint.pt").exists():
            raise ConfigError(
                f"{path} holds an unfinished run; continue it with --resume {path} or choose another --out"
            )
        if (path / "metrics.jsonl").exists() or (path / "config.json").exists():
            raise ConfigError(
                f"{path} holds a run stopped before its first checkpoint (nothing to resume); delete the folder or "
                "choose another --out"
            )

    def drop_metrics_after(self, step: int) -> None:
        """Keep only the ``metrics.jsonl`` rows up to ``step``, and drop a torn last line (a crash mid-write).

        Atomic: a crash leaves the old file or the new. A damaged line elsewhere is a ConfigError, not data to drop.
        """
        if not self.metrics_path.exists():
            return
        *complete, torn = self.metrics_path.read_text().split("\n")  # ``torn`` is "" after a whole last row
        kept = []
        for number, line in enumerate(complete, start=1):
            try:
                row_step = json.loads(line)["step"] if line.strip() else None
            except (json.JSONDecodeError, KeyError, TypeError):
                message = f"line {number} of {self.metrics_path} is not a metrics row; repair or remove it"
                raise ConfigError(message) from None
            if row_step is not None and row_step <= step:
                kept.append(line)
        if len(kept) == len(complete) and not torn:
            return
        tmp = self.metrics_path.with_suffix(".jsonl.tmp")
        tmp.write_text("".join(line + "\n" for line in kept))
        os.replace(tmp, self.metrics_path)

    @property
    def config_path(self) -> Path:
        return self.path / "config.json"

    @property
    def metrics_path(self) -> Path:
        return self.path / "metrics.jsonl"

    @property
    def summary_path(self) -> Path:
        return self.path / "summary.json"

    @property
    def report_path(self) -> Path:
        return self.path / "report.html"

    def write_summary(self, summary: Mapping[str, Any]) -> None:
        write_json(self.summary_path, summary)

    def read_metrics(self) -> list[dict[str, Any]]:
        """All rows of ``metrics.jsonl`` (empty when nothing was logged)."""
        if not self.metrics_path.exists():
            return []
        with self.metrics_path.open() as f:
            return [json.loads(line) for line in f if line.strip()]


def _wandb_mode() -> str:
    """Online only when the user is logged in (an API key in the environment or ~/.netrc), else offline."""
    if os.environ.get("WANDB_MODE"):
        return os.environ["WANDB_MODE"]
    netrc = Path.home() / ".netrc"
    logged_in = bool(os.environ.get("WANDB_API_KEY")) or (
        netrc.exists() and "api.wandb.ai" in netrc.read_text(errors="ignore")
    )
    return "online" if logged_in else "offline"


class MetricsLogger:
    """Appends one JSON object per ``log`` call to ``metrics.jsonl``; mirrors to wandb when ``track``.

    Keys are namespaced (``charts/episodic_return``, ``losses/td_loss``); every row carries ``step``
    (env steps or the experiment's own step unit) and ``time`` (seconds since the logger started).
    """

    def __init__(
        self, folder: RunFolder, config: Any = None, track: bool = False, project: str = "rlhf-pipeline"
    ) -> None:
        self.folder = folder
        self.start = time.perf_counter()
        self._file = folder.metrics_path.open("a")
        self._wandb: Any = None
        if track:
            import wandb  # imported lazily: most runs do not track

            self._wandb = wandb.init(
                project=project,
                name=folder.path.name,
                dir=str(folder.path),
                config=to_jsonable(config) if config is not None else None,
                mode=_wandb_mode(),  # type: ignore[arg-type]
                reinit=True,
            )

    def log(self, metrics: Mapping[str, Any], step: int) -> None:
        row = {"step": int(step), "time": round(time.perf_counter() - self.start, 4), **to_jsonable(metrics)}
        self._file.write(json.dumps(row) + "\n")
        self._file.flush()
        if self._wandb is not None:
            self._wandb.log(dict(metrics), step=int(step))

    def close(self) -> None:
        self._file.close()
        if self._wandb is not None:
            self._wandb.finish()
            self._wandb = None

    def __enter__(self) -> MetricsLogger:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
