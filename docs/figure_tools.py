"""What the documentation's figures are made of (``docs/figures.py`` makes them): a spec per figure, and helpers
that draw from run folders. Each topic registers its figures in ``docs/figures_TOPIC.py`` as ``SPECS``."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import plotly.graph_objects as go

ROOT = Path(__file__).resolve().parent.parent
FIGURES = ROOT / "docs" / "figures"
RUNS = Path("runs/docs")


@dataclass(frozen=True)
class FigureSpec:
    """One figure: the ``rlhf`` argument lists of its runs, and how to draw it from their folders. ``sources``:
    other commands whose output it draws (a benchmark's committed records), shown with it but not run by
    ``docs/figures.py``."""

    name: str
    runs: tuple[tuple[str, ...], ...]
    build: Callable[[list[Path]], go.Figure]
    sources: tuple[str, ...] = ()

    def run_dirs(self) -> list[Path]:
        return [RUNS / self.name / str(i) for i in range(len(self.runs))]

    def commands(self) -> list[str]:
        lines = [
            " ".join(["rlhf", *args, "--out", str(out)]) for args, out in zip(self.runs, self.run_dirs(), strict=True)
        ]
        return [*lines, *self.sources, f"python docs/figures.py {self.name}"]


def metric_rows(run_dir: Path) -> list[dict[str, float]]:
    """The rows of a run folder's ``metrics.jsonl``."""
    from baselines.common.runs import RunFolder

    return RunFolder(ROOT / run_dir if not run_dir.is_absolute() else run_dir).read_metrics()


def curves(run_dirs: Sequence[Path], key: str, names: Sequence[str], title: str, y_title: str) -> go.Figure:
    """One line per run: ``key`` over env steps."""
    from baselines.common.report import color, metric_series

    fig = go.Figure()
    for i, (run_dir, name) in enumerate(zip(run_dirs, names, strict=True)):
        xs, ys = metric_series(metric_rows(run_dir), key)
        fig.add_trace(go.Scatter(x=np.asarray(xs), y=np.asarray(ys), name=name, mode="lines+markers",
                                 line={"color": color(i)}))  # fmt: skip
    return fig.update_layout(title=title, xaxis_title="env steps", yaxis_title=y_title, template="plotly_white")
