"""Bad input at the command line's boundary: config files with wrong types, seeds out of range, unusable paths.

Each is one line on stderr and exit code 2, whatever the command.
"""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest

from baselines.common.config import read_config_file
from baselines.common.errors import ConfigError
from baselines.ppo import PPOConfig
from rlhf.cli import main
from rlhf.reward.trainer import RewardTrainerConfig


def _one_line_error(capsys: pytest.CaptureFixture[str], argv: list[str]) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    return err


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"learning_rate": "abc"}, 'learning_rate in {path}: Input should be a valid number, got "abc"'),
        ({"batch_size": "16"}, 'batch_size in {path}: Input should be a valid integer, got "16"'),
        ({"batch_size": True}, "batch_size in {path}: Input should be a valid integer, got true"),
        ({"hidden_sizes": 64}, "hidden_sizes in {path}: Input should be a valid array, got 64"),
        ({"hidden_sizes": [64, "a"]}, "hidden_sizes[1] in {path}: Input should be a valid integer"),
        ({"activation": "gelu"}, "activation in {path}: Input should be 'tanh' or 'relu', got \"gelu\""),
        ({"normalize_obs": "yes"}, 'normalize_obs in {path}: Input should be a valid boolean, got "yes"'),
        ({"max_kl": "0.1"}, "max_kl in {path}: Input should be a valid number"),
        ({"env": 5}, "env in {path}: Input should be a valid string, got 5"),
    ],
)
def test_config_file_values_are_checked_against_the_field_types(
    tmp_path: Path, values: dict[str, object], message: str
) -> None:
    path = tmp_path / "config.json"
    path.write_text(json.dumps(values))
    with pytest.raises(ConfigError) as error:
        read_config_file(PPOConfig, path)
    assert message.format(path=path) in str(error.value)


def test_config_file_values_of_the_right_types_pass(tmp_path: Path) -> None:
    path = tmp_path / "config.json"
    values = {"learning_rate": 1, "hidden_sizes": [32, 32], "max_kl": None, "activation": "relu", "out": "runs/x"}
    path.write_text(json.dumps(values))
    assert read_config_file(PPOConfig, path)["hidden_sizes"] == (32, 32)


def test_unreadable_config_files_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    err = _one_line_error(capsys, ["ppo", "--config", str(tmp_path), "--out", str(tmp_path / "x")])
    assert "cannot be read (Is a directory)" in err
    latin = tmp_path / "latin.json"
    latin.write_bytes(b'{"env": "caf\xe9"}')
    assert "is not UTF-8 text" in _one_line_error(capsys, ["ppo", "--config", str(latin)])
    a_file = tmp_path / "a-file"
    a_file.write_text("x")
    assert "cannot be read (Not a directory)" in _one_line_error(capsys, ["ppo", "--resume", str(a_file)])


@pytest.mark.parametrize(
    "argv",
    [
        ["ppo", "--env", "CartPole-v1", "--total-steps", "512"],
        ["dqn", "--env", "CartPole-v1", "--total-steps", "512"],
        ["bandit", "--steps", "10", "--runs", "2"],
        ["tune", "dqn", "--env", "CartPole-v1", "--trials", "1", "--total-steps", "512"],
    ],
)
@pytest.mark.parametrize("seed", ["-1", str(2**32)])
def test_seeds_out_of_range_are_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], seed: str
) -> None:
    err = _one_line_error(capsys, [*argv, "--seed", seed, "--out", str(tmp_path / "x")])
    assert f"--seed must be in [0, 2**32), got {seed}" in err
    assert not (tmp_path / "x").exists()


def test_an_existing_file_as_out_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a_file = tmp_path / "a-file"
    a_file.write_text("keep me")
    err = _one_line_error(capsys, ["ppo", "--env", "CartPole-v1", "--total-steps", "512", "--out", str(a_file)])
    assert "File exists" in err and str(a_file) in err
    assert a_file.read_text() == "keep me"


def test_export_never_creates_a_store(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for db in (str(tmp_path / "typo.sqlite"), f"sqlite:///{tmp_path / 'typo.sqlite'}"):
        err = _one_line_error(capsys, ["export", "--db", db, "--out", str(tmp_path / "export")])
        assert f"no preference store at {tmp_path / 'typo.sqlite'}" in err
    assert not (tmp_path / "typo.sqlite").exists() and not (tmp_path / "export").exists()


def test_demo_finds_a_port_in_use_before_it_starts(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        err = _one_line_error(capsys, ["demo", "--port", str(port), "--out", str(tmp_path / "demo")])
    assert f"port {port} on 127.0.0.1 is in use" in err
    assert not (tmp_path / "demo").exists()  # refused before the reference run, with nothing written


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["bandit", "--steps", "10", "--runs", "2", "--mean-offset", "inf"], "--mean-offset must be a finite number"),
        (["tabular", "--algo", "value-iteration", "--theta", "inf"], "--theta must be a finite number > 0"),
    ],
)
def test_non_finite_numbers_are_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    assert message in _one_line_error(capsys, [*argv, "--out", str(tmp_path / "x")])
    with pytest.raises(ConfigError, match="lr must be a finite positive number"):
        RewardTrainerConfig(lr=float("inf"))


def test_a_damaged_study_file_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "study.sqlite").write_bytes(b"not a database at all, not even close")
    argv = ["tune", "dqn", "--env", "CartPole-v1", "--trials", "1", "--total-steps", "512", "--out", str(tmp_path)]
    assert "study.sqlite is not a readable study (file is not a database)" in _one_line_error(capsys, argv)


@pytest.mark.parametrize(
    ("argv", "shown"),
    [
        (["ppo", "--env", "CartPole-v1", "--hidden-sizes", "100000000"], "--hidden-sizes 100000000 would build"),
        (["dqn", "--env", "CartPole-v1", "--hidden-sizes", "100000", "100000"], "--hidden-sizes 100000 100000"),
        (["ppo", "--env", "CartPole-v1", "--hidden-sizes", "0"], "--hidden-sizes needs positive sizes"),
    ],
)
def test_networks_too_large_to_be_meant_are_refused_before_allocation(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], shown: str
) -> None:
    err = _one_line_error(capsys, [*argv, "--total-steps", "100", "--out", str(tmp_path / "x")])
    assert shown in err and not (tmp_path / "x").exists()
    if "would build" in shown:
        assert "over the limit of 50,000,000" in err


def test_reward_models_too_large_to_be_meant_are_refused() -> None:
    from rlhf.reward import RewardModelConfig

    with pytest.raises(ConfigError, match="reward model hidden sizes 100000 100000 would build"):
        RewardModelConfig(feature_dim=4, hidden_sizes=(100_000, 100_000))
    assert RewardModelConfig(feature_dim=4, hidden_sizes=(1024, 1024)).hidden_sizes == (1024, 1024)
