"""Statistics and tables of the RLHF evaluation protocol (``rlhf_protocol.py``), after Agarwal et al. 2021
(https://arxiv.org/abs/2108.13264): medians and IQMs over seeds with stratified-bootstrap percentile intervals,
normalized scores, targets, performance profiles.

The bootstrap is written here, following rliable's ``StratifiedBootstrap`` with the percentile method:
``rliable.library`` cannot be imported beside pandas 3 (rliable 1.2 pins arch < 8, and arch 7 calls a pandas
function whose signature pandas 3 changed), and it draws from NumPy's global random state; this one takes a seed.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

BOOTSTRAP_REPS = 2000
BOOTSTRAP_SEED = 12
CONFIDENCE = 0.95
SPEED_TARGET_S = 35.0
"""Issue 12: a run stays within 35 s per 50k env steps."""
PROFILE_TAUS = np.linspace(0.0, 1.5, 61)
"""Normalized-score thresholds of the performance profile (1: as good as PPO on the true reward)."""


def iqm(scores: np.ndarray) -> float:
    """Interquartile mean (rliable: the 25%-trimmed mean over all runs)."""
    from rliable import metrics

    return float(metrics.aggregate_iqm(np.asarray(scores, dtype=float)))


def median(scores: np.ndarray) -> float:
    """Median over all runs (a row's median seed). Not rliable's ``aggregate_median``: that is the median over tasks
    of each task's mean, which for one row is the mean over seeds."""
    return float(np.median(np.asarray(scores, dtype=float)))


def hits(returns: np.ndarray, threshold: float) -> int:
    return int(np.sum(np.asarray(returns) >= threshold))


def normalized_scores(rlhf: np.ndarray, ppo: np.ndarray, random: np.ndarray) -> np.ndarray:
    """(RLHF - random) / (PPO on the true reward - random) per seed; NaN where PPO does not beat random."""
    rlhf, ppo, random = (np.asarray(a, dtype=float) for a in (rlhf, ppo, random))
    gap = ppo - random
    defined = gap > 1e-9 * np.maximum(1.0, np.abs(random))
    return np.where(defined, (rlhf - random) / np.where(defined, gap, 1.0), np.nan)


def stratified_bootstrap(
    tasks: Sequence[np.ndarray],
    statistic: Callable[[np.ndarray], Any],
    reps: int = BOOTSTRAP_REPS,
    seed: int = BOOTSTRAP_SEED,
    size: float = CONFIDENCE,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Point estimate and percentile interval of ``statistic`` over the pooled runs of ``tasks`` (one array of
    per-seed scores each): every resample draws each task's runs with replacement from that task's own runs
    (rliable's StratifiedBootstrap; ``statistic`` may return a vector, e.g. a profile). Returns point, low, high."""
    arrays = [np.asarray(task, dtype=float) for task in tasks if len(task)]
    point = np.asarray(statistic(np.concatenate(arrays)), dtype=float)
    rng = np.random.default_rng(seed)
    draws = np.stack(
        [
            np.asarray(statistic(np.concatenate([a[rng.integers(len(a), size=len(a))] for a in arrays])), dtype=float)
            for _ in range(reps)
        ]
    )
    low, high = np.percentile(draws, [50 * (1 - size), 50 * (1 + size)], axis=0)
    return point, low, high


@dataclass(frozen=True)
class Estimate:
    """Median and IQM with their intervals, and the worst seed, of one quantity over a row's seeds."""

    n: int
    median: tuple[float, float, float]
    iqm: tuple[float, float, float]
    worst: float

    @classmethod
    def of(cls, scores: np.ndarray, reps: int) -> Estimate | None:
        scores = np.asarray(scores, dtype=float)
        scores = scores[np.isfinite(scores)]
        if len(scores) == 0:
            return None
        point, low, high = stratified_bootstrap([scores], lambda x: np.array([median(x), iqm(x)]), reps)
        return cls(len(scores), (point[0], low[0], high[0]), (point[1], low[1], high[1]), float(scores.min()))


def performance_profile(scores: np.ndarray, taus: np.ndarray = PROFILE_TAUS) -> np.ndarray:
    """Share of ``scores`` above each tau (rliable's score distribution, ``run_score_deviation``)."""
    return (np.asarray(scores, dtype=float)[:, None] > np.asarray(taus)[None, :]).mean(axis=0)


@dataclass(frozen=True)
class Target:
    """Issue 12's target for a row on the report seeds (None: not part of it). A seed hits when its return is at
    least ``threshold`` (default: the median target); ``min_hit_fraction``: the share of seeds that must hit."""

    median: float | None = None
    worst: float | None = None
    threshold: float | None = None
    min_hit_fraction: float | None = None
    normalized_median: float | None = None
    """Least median normalized score, (RLHF - random) / (PPO true - random): issue 14's "share of PPO on the true
    reward's return" (the random policy's return taken off both, so a near-random RLHF policy cannot pass)."""

    @property
    def hit_threshold(self) -> float | None:
        return self.threshold if self.threshold is not None else self.median

    def describe(self) -> str:
        parts = [f"median >= {self.median:g}"] if self.median is not None else []
        parts += [f"worst >= {self.worst:g}"] if self.worst is not None else []
        if self.min_hit_fraction is not None:
            parts.append(f">= {self.hit_threshold:g} on {self.min_hit_fraction:.0%} of seeds")
        if self.normalized_median is not None:
            parts.append(f"normalized median >= {self.normalized_median:g}")
        return ", ".join(parts) or "report only"

    def met(self, returns: np.ndarray, normalized: np.ndarray | None = None) -> bool | None:
        """Whether ``returns`` (one per seed) and ``normalized`` (the seeds' normalized scores, where defined) meet
        every part of the target; None without a target or returns."""
        if self == Target() or len(returns) == 0:
            return None
        ok = self.median is None or median(returns) >= self.median
        ok &= self.worst is None or float(returns.min()) >= self.worst
        if self.min_hit_fraction is not None and self.hit_threshold is not None:
            ok &= hits(returns, self.hit_threshold) >= self.min_hit_fraction * len(returns) - 1e-9
        if self.normalized_median is not None:
            ok &= normalized is not None and len(normalized) > 0 and median(normalized) >= self.normalized_median
        return ok


@dataclass(frozen=True)
class RowResult:
    name: str
    target: Target
    seeds: list[int]
    rlhf: np.ndarray
    ppo: np.ndarray
    random: np.ndarray
    seconds_per_run: float | None
    """Mean wall seconds of the row's RLHF runs (setup and report included)."""
    seconds_per_50k: float | None

    @property
    def normalized(self) -> np.ndarray:
        return normalized_scores(self.rlhf, self.ppo, self.random)


# ------------------------------------------------------------------------------------------------- output
HEADERS = (
    "row",
    "n",
    "RLHF median [95% CI]",
    "RLHF IQM [95% CI]",
    "worst",
    "PPO true median (worst)",
    "random",
    "normalized median [95% CI]",
    "normalized IQM [95% CI]",
    "hits",
    "target",
    "met",
    "s/run",
    f"s/50k (<= {SPEED_TARGET_S:g})",
)


def _interval(estimate: tuple[float, float, float], digits: int) -> str:
    point, low, high = estimate
    return f"{point:.{digits}f} [{low:.{digits}f}, {high:.{digits}f}]"


def table_rows(results: Sequence[RowResult], reps: int = BOOTSTRAP_REPS) -> list[list[str]]:
    """The table's cells, one list per row (``-`` where there is nothing to show)."""
    table = []
    for result in results:
        rlhf, ppo = Estimate.of(result.rlhf, reps), Estimate.of(result.ppo, reps)
        normalized = Estimate.of(result.normalized, reps)
        target = result.target
        threshold = target.hit_threshold
        norm_cells = ["-", "-"]
        if normalized is not None:
            norm_cells = [_interval(normalized.median, 2), _interval(normalized.iqm, 2)]
        if normalized is not None and normalized.n < len(result.seeds):
            norm_cells = [f"{cell} (n={normalized.n})" for cell in norm_cells]
        met = target.met(result.rlhf, result.normalized)
        table.append(
            [
                result.name,
                str(len(result.seeds)),
                "-" if rlhf is None else _interval(rlhf.median, 1),
                "-" if rlhf is None else _interval(rlhf.iqm, 1),
                "-" if rlhf is None else f"{rlhf.worst:.1f}",
                "-" if ppo is None else f"{ppo.median[0]:.1f} ({ppo.worst:.1f})",
                "-" if not len(result.random) else f"{median(result.random):.1f}",
                *norm_cells,
                "-"
                if threshold is None or rlhf is None
                else f"{hits(result.rlhf, threshold)}/{rlhf.n} >= {threshold:g}",
                target.describe(),
                "-" if met is None else ("yes" if met else "no"),
                "-" if result.seconds_per_run is None else f"{result.seconds_per_run:.0f}",
                "-" if result.seconds_per_50k is None else f"{result.seconds_per_50k:.1f}",
            ]
        )
    return table


def details_rows(results: Sequence[RowResult], reps: int = BOOTSTRAP_REPS) -> list[list[str]]:
    """Median, IQM (with intervals) and worst seed of the RLHF return, PPO's and the normalized score, per row."""
    table = []
    for result in results:
        for quantity, scores, digits in (
            ("RLHF return", result.rlhf, 1),
            ("PPO true return", result.ppo, 1),
            ("normalized score", result.normalized, 2),
        ):
            estimate = Estimate.of(scores, reps)
            if estimate is not None:
                table.append(
                    [
                        result.name,
                        quantity,
                        str(estimate.n),
                        _interval(estimate.median, digits),
                        _interval(estimate.iqm, digits),
                        f"{estimate.worst:.{digits}f}",
                    ]
                )
    return table


def text_table(rows: Sequence[Sequence[str]], headers: Sequence[str] = HEADERS) -> str:
    widths = [max(len(str(cell)) for cell in column) for column in zip(headers, *rows, strict=False)]
    lines = [headers, ["-" * w for w in widths], *rows]
    return "\n".join("  ".join(str(c).ljust(w) for c, w in zip(line, widths, strict=True)).rstrip() for line in lines)


def markdown_table(rows: Sequence[Sequence[str]], headers: Sequence[str] = HEADERS) -> str:
    lines = [headers, ["---"] * len(headers), *rows]
    return "\n".join("| " + " | ".join(str(c).replace("|", "\\|") for c in line) + " |" for line in lines)


def publish_table(
    command: str, about: str, table: Sequence[Sequence[str]], markdown: Path | None, headers: Sequence[str] = HEADERS
) -> None:
    """Print the command, what it covers and the table; write the same as markdown to ``markdown`` when given."""
    print(f"\n{command}\n{about}\n{text_table(table, headers)}")
    if markdown is not None:
        markdown.parent.mkdir(parents=True, exist_ok=True)
        markdown.write_text(f"`{command}`\n\n{about}\n\n{markdown_table(table, headers)}\n")


def write_plot(path: Path, results: Sequence[RowResult], title: str, table: Sequence[Sequence[str]], reps: int) -> None:
    """Performance profile of the normalized scores (all rows, stratified bootstrap band; each row's curve)."""
    import plotly.graph_objects as go

    from baselines.common.report import Report, add_curve_with_band, color

    tasks = [r.normalized[np.isfinite(r.normalized)] for r in results]
    fig = go.Figure()
    if any(len(task) for task in tasks):
        point, low, high = stratified_bootstrap(tasks, performance_profile, reps)
        add_curve_with_band(fig, PROFILE_TAUS, point, low, high, "all rows (95% CI)", color(0))
    for index, (result, task) in enumerate(zip(results, tasks, strict=True)):
        if len(task):
            fig.add_trace(
                go.Scatter(
                    x=PROFILE_TAUS,
                    y=performance_profile(task),
                    name=result.name,
                    mode="lines",
                    line={"color": color(index + 1), "width": 1, "dash": "dot"},
                )
            )
    fig.update_layout(
        title="Performance profile of normalized scores",
        xaxis_title="tau: (RLHF - random) / (PPO true - random)",
        yaxis_title="fraction of runs with score > tau",
        height=480,
    )
    report = Report("RLHF evaluation protocol", title)
    report.figure(fig, "1 = PPO on the true reward at the same budget and seed; 0 = the random policy.")
    report.table(HEADERS, table)
    report.heading("Every quantity over seeds")
    report.table(("row", "quantity", "n", "median [95% CI]", "IQM [95% CI]", "worst"), details_rows(results, reps))
    path.parent.mkdir(parents=True, exist_ok=True)
    report.write(path)
