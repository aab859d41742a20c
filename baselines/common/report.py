"""Self-contained plotly HTML reports: figures, tables and notes on one page, plotly.js inlined once.

No CDN: the page must open on an offline machine. plotly is imported where a figure is drawn, so that a command's
``--help`` does not load it.
"""

from __future__ import annotations

import base64
import html
from collections.abc import Collection, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import plotly.graph_objects as go

PALETTE = (
    "#1f77b4",
    "#d62728",
    "#2ca02c",
    "#ff7f0e",
    "#9467bd",
    "#8c564b",
    "#e377c2",
    "#7f7f7f",
    "#bcbd22",
    "#17becf",
)


def color(index: int) -> str:
    return PALETTE[index % len(PALETTE)]


def _rgba(hex_color: str, alpha: float) -> str:
    r, g, b = (int(hex_color[i : i + 2], 16) for i in (1, 3, 5))
    return f"rgba({r},{g},{b},{alpha})"


def add_curve_with_band(
    fig: go.Figure,
    x: Sequence[float] | np.ndarray,
    mean: Sequence[float] | np.ndarray,
    low: Sequence[float] | np.ndarray | None,
    high: Sequence[float] | np.ndarray | None,
    name: str,
    line_color: str,
    row: int | None = None,
    col: int | None = None,
) -> None:
    """A mean curve with a shaded band (e.g. a 95% interval across runs or seeds) in one legend group."""
    import plotly.graph_objects as go

    xs = np.asarray(x, dtype=float)
    where = {"row": row, "col": col} if row is not None else {}
    if low is not None and high is not None:
        band_x = np.concatenate([xs, xs[::-1]])
        band_y = np.concatenate([np.asarray(high, dtype=float), np.asarray(low, dtype=float)[::-1]])
        fig.add_trace(
            go.Scatter(
                x=band_x,
                y=band_y,
                fill="toself",
                fillcolor=_rgba(line_color, 0.18),
                line={"width": 0},
                hoverinfo="skip",
                showlegend=False,
                legendgroup=name,
            ),
            **where,
        )
    fig.add_trace(
        go.Scatter(x=xs, y=np.asarray(mean, dtype=float), name=name, legendgroup=name, line={"color": line_color}),
        **where,
    )


def mean_and_band(values: np.ndarray, axis: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean over ``axis`` and a 95% normal interval of that mean (mean +- 1.96 standard errors)."""
    mean = values.mean(axis=axis)
    count = values.shape[axis]
    if count < 2:
        return mean, mean, mean
    sem = values.std(axis=axis, ddof=1) / np.sqrt(count)
    return mean, mean - 1.96 * sem, mean + 1.96 * sem


def smooth(values: np.ndarray, window: int) -> np.ndarray:
    """Trailing moving average along the last axis (the first points average what exists so far)."""
    if window <= 1:
        return values
    cumsum = np.cumsum(values, axis=-1, dtype=float)
    out = np.empty_like(cumsum)
    out[..., :window] = cumsum[..., :window] / np.arange(1, min(window, values.shape[-1]) + 1)
    out[..., window:] = (cumsum[..., window:] - cumsum[..., :-window]) / window
    return out


class Report:
    """An HTML page of sections; ``write`` inlines plotly.js once so the file opens anywhere, offline."""

    def __init__(self, title: str, subtitle: str = "") -> None:
        self.title = title
        self.subtitle = subtitle
        self._parts: list[str] = []

    def heading(self, text: str) -> None:
        self._parts.append(f"<h2>{html.escape(text)}</h2>")

    def text(self, text: str) -> None:
        self._parts.append(f"<p>{html.escape(text)}</p>")

    def raw_html(self, fragment: str) -> None:
        self._parts.append(fragment)

    def figure(self, fig: go.Figure, caption: str = "") -> None:
        fig.update_layout(template="plotly_white", margin={"l": 60, "r": 20, "t": 50, "b": 50})
        self._parts.append(fig.to_html(full_html=False, include_plotlyjs=False))
        if caption:
            self._parts.append(f"<p class='caption'>{html.escape(caption)}</p>")

    def videos(self, clips: Sequence[tuple[Path, str]], caption: str = "") -> None:
        """MP4 clips side by side, each with its label, inlined (data URIs) so the report stays one file that
        plays offline; a clip file that is missing is named instead."""
        cells = []
        for path, label in clips:
            if path.is_file():
                data = base64.b64encode(path.read_bytes()).decode("ascii")
                media = (
                    "<video controls loop muted playsinline preload='auto' style='max-width:100%' "
                    f"src='data:video/mp4;base64,{data}'></video>"
                )
            else:
                media = f"<p>(clip {html.escape(path.name)} is missing)</p>"
            cells.append(f"<figure style='margin:0'>{media}<figcaption>{html.escape(label)}</figcaption></figure>")
        self._parts.append(f"<div style='display:flex;gap:1em;flex-wrap:wrap'>{''.join(cells)}</div>")
        if caption:
            self._parts.append(f"<p class='caption'>{html.escape(caption)}</p>")

    def table(self, headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
        def cell(value: Any) -> str:
            if isinstance(value, float):
                return f"{value:.4g}"
            return html.escape(str(value))

        head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
        body = "".join("<tr>" + "".join(f"<td>{cell(v)}</td>" for v in row) + "</tr>" for row in rows)
        self._parts.append(f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")

    def render(self) -> str:
        from plotly.offline import get_plotlyjs

        style = (
            "body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}"
            "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:4px 8px;"
            "text-align:right}th{background:#f4f4f4}td:first-child{text-align:left}"
            ".caption{color:#555;font-size:0.9em}"
        )
        subtitle = f"<p>{html.escape(self.subtitle)}</p>" if self.subtitle else ""
        return (
            "<!DOCTYPE html><html><head><meta charset='utf-8'>"
            f"<meta name='viewport' content='width=device-width,initial-scale=1'><title>{html.escape(self.title)}"
            f"</title><style>{style}</style><script>{get_plotlyjs()}</script></head><body>"
            f"<h1>{html.escape(self.title)}</h1>{subtitle}{''.join(self._parts)}</body></html>"
        )

    def returns_figure(self, rows: Sequence[Mapping[str, Any]], title: str = "Episodic return") -> None:
        """Training returns (each logged value, and a trailing mean of up to 20) and evaluations (mean +- std)."""
        import plotly.graph_objects as go

        fig = go.Figure()
        steps, returns = metric_series(rows, "charts/episodic_return")
        if len(steps):
            marker = {"color": color(0), "size": 4}
            fig.add_trace(go.Scatter(x=steps, y=returns, mode="markers", name="training", opacity=0.3, marker=marker))
            window = max(1, min(20, len(returns) // 10))  # a trailing mean that does not lag a short run
            name = f"training (mean of {window})"
            fig.add_trace(go.Scatter(x=steps, y=smooth(returns, window), name=name, line={"color": color(0)}))
        eval_steps, eval_mean = metric_series(rows, "eval/return_mean")
        if len(eval_steps):
            eval_std = metric_series(rows, "eval/return_std")[1]
            error = {"type": "data", "array": eval_std} if len(eval_std) == len(eval_mean) else None
            fig.add_trace(go.Scatter(x=eval_steps, y=eval_mean, name="evaluation (mean +- std)", mode="lines+markers",
                                     error_y=error, line={"color": color(1)}))  # fmt: skip
        fig.update_layout(title=title, xaxis_title="env steps", yaxis_title="return", height=420)
        self.figure(fig)

    def metric_panels(
        self,
        rows: Sequence[Mapping[str, Any]],
        panels: Sequence[tuple[str, Sequence[str]]],
        log_y: Collection[str] = (),
    ) -> None:
        """One line chart per ``(title, metric keys)`` over the rows' ``step`` (evaluations drawn with markers);
        a panel whose keys were never logged is left out. Panels whose title is in ``log_y`` get a log y-axis."""
        import plotly.graph_objects as go

        for title, keys in panels:
            fig = go.Figure()
            for offset, key in enumerate(keys):
                steps, values = metric_series(rows, key)
                if len(steps):
                    mode = "lines+markers" if key.startswith("eval/") else "lines"
                    fig.add_trace(go.Scatter(x=steps, y=values, name=key, mode=mode, line={"color": color(offset)}))
            if fig.data:
                axis = "log" if title in log_y else "linear"
                fig.update_layout(title=title, xaxis_title="env steps", yaxis_type=axis, height=360)
                self.figure(fig)

    def write(self, path: Path) -> None:
        path.write_text(self.render())


def metric_series(rows: Sequence[Mapping[str, Any]], key: str) -> tuple[np.ndarray, np.ndarray]:
    """Steps and values of ``key`` in metrics rows, where it was logged (as float arrays)."""
    points = [(row["step"], row[key]) for row in rows if row.get(key) is not None]
    return np.array([p[0] for p in points], dtype=float), np.array([p[1] for p in points], dtype=float)
