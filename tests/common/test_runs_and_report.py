"""Run-folder contract, metrics logging and report helpers."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import plotly.graph_objects as go
import pytest

from baselines.common.errors import ConfigError
from baselines.common.report import Report, add_curve_with_band, mean_and_band, smooth
from baselines.common.runs import MetricsLogger, RunFolder, default_run_dir, to_jsonable


@dataclass(frozen=True)
class _Config:
    out: Path
    gamma: float = 0.99


def test_to_jsonable_handles_dataclasses_paths_numpy_and_nan() -> None:
    value = to_jsonable({"cfg": _Config(Path("a/b")), "x": np.float32(1.5), "arr": np.arange(3), "bad": float("nan")})
    assert value == {"cfg": {"out": "a/b", "gamma": 0.99}, "x": 1.5, "arr": [0, 1, 2], "bad": None}
    json.dumps(value)


def test_run_folder_writes_config_metrics_summary(tmp_path: Path) -> None:
    config = _Config(tmp_path / "run")
    folder = RunFolder.create(config.out, config)
    assert json.loads(folder.config_path.read_text())["gamma"] == 0.99
    with MetricsLogger(folder, config) as logger:
        logger.log({"charts/episodic_return": 10.0}, step=5)
        logger.log({"charts/episodic_return": np.float64(20.0)}, step=10)
    rows = folder.read_metrics()
    assert [r["step"] for r in rows] == [5, 10]
    assert rows[1]["charts/episodic_return"] == 20.0 and rows[0]["time"] >= 0
    folder.write_summary({"eval_return_mean": 1.0})
    with pytest.raises(ConfigError, match="already holds a finished run"):
        RunFolder.create(config.out, config)


def test_default_run_dir_names_command_and_env() -> None:
    path = default_run_dir("ppo", "ALE/Pong-v5")
    assert path.parent == Path("runs") and path.name.startswith("ppo-ALE_Pong-v5-")


def test_mean_and_band_is_a_95_percent_interval_of_the_mean() -> None:
    values = np.array([[0.0, 2.0], [2.0, 2.0], [4.0, 2.0]])
    mean, low, high = mean_and_band(values)
    np.testing.assert_allclose(mean, [2.0, 2.0])
    np.testing.assert_allclose(high - mean, [1.96 * 2.0 / np.sqrt(3), 0.0])
    np.testing.assert_allclose(mean - low, high - mean)


def test_smooth_is_a_trailing_moving_average() -> None:
    np.testing.assert_allclose(smooth(np.array([1.0, 3.0, 5.0, 7.0]), 2), [1.0, 2.0, 4.0, 6.0])
    np.testing.assert_allclose(smooth(np.array([1.0, 3.0]), 1), [1.0, 3.0])


def test_report_is_self_contained_html(tmp_path: Path) -> None:
    report = Report("Title <x>", "sub")
    fig = go.Figure()
    add_curve_with_band(fig, [1, 2], [1.0, 2.0], [0.5, 1.5], [1.5, 2.5], "curve", "#1f77b4")
    report.figure(fig, "caption")
    report.table(["a", "b"], [["row", 1.23456]])
    report.write(tmp_path / "r.html")
    page = (tmp_path / "r.html").read_text()
    assert "Title &lt;x&gt;" in page and "1.235" in page and "<script src=" not in page
    assert len(fig.data) == 2  # band + mean
