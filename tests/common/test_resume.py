"""The one resume path: which fields a resumed run may change, and metrics rows after the checkpoint dropped."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from baselines.common.config import resolve_resume, resume_default
from baselines.common.errors import ConfigError
from baselines.common.runs import RunFolder
from baselines.ppo import PPOConfig


def _saved_run(tmp_path: Path) -> tuple[Path, PPOConfig]:
    out = tmp_path / "run"
    saved = PPOConfig.defaults_for("Pendulum-v1", total_steps=4096, learning_rate=5e-4, out=out)
    RunFolder.create(out, saved)
    return out, saved


def test_resume_takes_the_saved_config_and_only_resumable_changes(tmp_path: Path) -> None:
    out, saved = _saved_run(tmp_path)
    shown = resume_default(PPOConfig, out)  # what `--resume DIR` shows as defaults
    assert shown == dataclasses.replace(saved, resume=out)
    # The command line (and code): the saved config as defaults, changes on top.
    resumed = resolve_resume(dataclasses.replace(shown, total_steps=8192, eval_every=1024, track=True))
    assert resumed == dataclasses.replace(saved, resume=out, total_steps=8192, eval_every=1024, track=True)
    # A value that happens to be the class default still counts (100_000 is PPOConfig's default total_steps).
    assert resolve_resume(dataclasses.replace(shown, total_steps=100_000)).total_steps == 100_000


def test_resume_refuses_to_change_the_experiment(tmp_path: Path) -> None:
    out, _ = _saved_run(tmp_path)
    shown = resume_default(PPOConfig, out)
    with pytest.raises(ConfigError, match=r"drop --gamma, --hidden-sizes \(saved values differ\)"):
        resolve_resume(dataclasses.replace(shown, gamma=0.5, hidden_sizes=(8,), total_steps=9000))
    with pytest.raises(ConfigError, match="drop --learning-rate"):  # back to the class default is a change too
        resolve_resume(dataclasses.replace(shown, learning_rate=PPOConfig.learning_rate))
    with pytest.raises(ConfigError, match="drop --out"):
        resolve_resume(dataclasses.replace(shown, out=tmp_path / "elsewhere"))
    assert resolve_resume(dataclasses.replace(shown, out=out.absolute())).out == out  # the same folder


def test_a_run_config_used_as_a_config_file_leaves_its_folder_behind(tmp_path: Path) -> None:
    out, _ = _saved_run(tmp_path)
    (out / "config.json").write_text(json.dumps({**json.loads((out / "config.json").read_text()), "resume": str(out)}))
    shown = PPOConfig.cli_default(None, str(out / "config.json"), None)
    assert (shown.env, shown.learning_rate, shown.out, shown.resume) == ("Pendulum-v1", 5e-4, None, None)
    assert shown.config == out / "config.json"


def test_a_new_run_refuses_a_folder_that_holds_one(tmp_path: Path) -> None:
    out = tmp_path / "run"
    saved = PPOConfig.defaults_for("Pendulum-v1", out=out)
    RunFolder.create(out, saved)  # an empty folder is fine
    (out / "config.json").unlink()
    (out / "checkpoint.pt").write_bytes(b"")
    with pytest.raises(ConfigError, match="holds an unfinished run; continue it with --resume"):
        RunFolder.create(out, saved)
    (out / "summary.json").write_text("{}")
    with pytest.raises(ConfigError, match="already holds a finished run"):
        RunFolder.create(out, saved)


def test_resuming_drops_the_rows_logged_after_the_checkpoint(tmp_path: Path) -> None:
    out, saved = _saved_run(tmp_path)
    rows = [{"step": step, "x": 1.0} for step in (256, 512, 768, 768, 1024)]
    torn = '{"step": 1280, "x"'  # the last line of a run killed mid-write
    (out / "metrics.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows) + torn)
    folder = RunFolder.create(out, saved, resume_step=768)
    assert [row["step"] for row in folder.read_metrics()] == [256, 512, 768, 768]
    folder.drop_metrics_after(10_000)  # nothing after: the file is left as it is
    assert [row["step"] for row in folder.read_metrics()] == [256, 512, 768, 768]
    (out / "metrics.jsonl").write_text('{"step": 256}\nnot json\n{"step": 512}\n')  # damage, not a torn end
    with pytest.raises(ConfigError, match=r"line 2 of .* is not a metrics row"):
        folder.drop_metrics_after(256)
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 3  # nothing dropped


def test_a_run_stopped_before_its_first_checkpoint_is_not_mixed_into(tmp_path: Path) -> None:
    out, saved = _saved_run(tmp_path)  # config.json written, no checkpoint yet
    (out / "metrics.jsonl").write_text('{"step": 256}\n')
    with pytest.raises(ConfigError, match="stopped before its first checkpoint"):
        RunFolder.create(out, saved)
