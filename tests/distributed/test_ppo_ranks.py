"""Data-parallel PPO over two gloo ranks, spawned as torchrun would start them (baselines/common/distributed.py)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch.multiprocessing as mp

from baselines.common.distributed import close_world, finish_world, init_world
from baselines.common.errors import ConfigError, RankLost
from baselines.common.normalization import RunningMeanStd
from baselines.ppo import PPOConfig, collect_rollout, init_ppo, ppo_update, rank_share

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _as_rank(rank: int, size: int, port: int, work: Callable[..., None], *args: Any) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(size),
                      LOCAL_RANK=str(rank), RLHF_DIST_TIMEOUT="60", WANDB_MODE="disabled")  # fmt: skip
    try:
        work(rank, *args)
    except BaseException:
        close_world()
        raise
    finish_world()  # every rank done before any tears its connections down


def run_ranks(work: Callable[..., None], *args: Any, size: int = 2, timeout: float = 300) -> list[int | None]:
    """``work(rank, *args)`` in ``size`` spawned processes joined into one gloo world; their exit codes. Unlike
    torchrun (or ``mp.spawn``), nothing here stops the other ranks when one dies: they must stop by themselves."""
    context = mp.get_context("spawn")
    port = free_port()
    ranks = [context.Process(target=_as_rank, args=(rank, size, port, work, *args)) for rank in range(size)]
    for process in ranks:
        process.start()
    deadline = time.time() + timeout
    for process in ranks:
        process.join(max(deadline - time.time(), 0.1))
    codes = [process.exitcode for process in ranks]
    for process in ranks:
        if process.is_alive():
            process.kill()
    return codes


def _updates(rank: int, out: Path) -> None:
    world = init_world()
    cfg = PPOConfig.defaults_for("Pendulum-v1", num_envs=4, num_steps=64, batch_size=64, n_epochs=2,
                                 normalize_obs=True, normalize_reward=True)  # fmt: skip
    state = init_ppo(rank_share(cfg, world), world=world)
    assert state.config.num_envs == 2 and state.config.batch_size == 32
    first_obs = state.next_obs.copy()
    for _ in range(3):
        ppo_update(state, collect_rollout(state))
    assert state.obs_normalizer is not None and state.reward_scaler is not None
    np.savez(out / f"rank{rank}.npz", params=state.agent.params.data.numpy(), first_obs=first_obs,
             obs_mean=state.obs_normalizer.stats.mean, reward_var=state.reward_scaler.stats.var,
             step=state.global_step, lr=state.optimizer.lr)  # fmt: skip


def test_two_ranks_stay_identical_while_stepping_their_own_envs(tmp_path: Path) -> None:
    assert run_ranks(_updates, tmp_path) == [0, 0]
    zero, one = (np.load(tmp_path / f"rank{rank}.npz") for rank in (0, 1))
    np.testing.assert_array_equal(zero["params"], one["params"])  # one all-reduced gradient: the same step
    np.testing.assert_array_equal(zero["obs_mean"], one["obs_mean"])  # statistics merged over both ranks' data
    np.testing.assert_array_equal(zero["reward_var"], one["reward_var"])
    assert int(zero["step"]) == int(one["step"]) == 3 * 4 * 64  # every rank counts all ranks' env steps
    assert not np.allclose(zero["first_obs"], one["first_obs"])  # each rank's envs have their own seeds
    # Env i of the world is seeded as env i of one process: rank 1's envs are one process's envs 2 and 3.
    single = init_ppo(PPOConfig.defaults_for("Pendulum-v1", num_envs=4, num_steps=64))
    np.testing.assert_allclose(np.concatenate([zero["first_obs"], one["first_obs"]]), single.next_obs)
    single.envs.close()


def _train(rank: int, out: Path, seed: int) -> None:
    from rlhf.cli import main

    code = main(["ppo", "--env", "CartPole-v1", "--total-steps", "30000", "--seed", str(seed), "--out", str(out),
                 "--eval-episodes", "5"])  # fmt: skip
    assert code == 0


@pytest.mark.slow
def test_a_short_two_rank_cartpole_run_learns_and_only_rank_0_writes(tmp_path: Path) -> None:
    assert run_ranks(_train, tmp_path / "run", 1) == [0, 0]
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["world_size"] == 2 and summary["env_steps"] >= 30_000
    assert summary["eval_return_mean"] >= 150.0  # random: ~22
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]  # nothing else written, by either rank


def _die_after_one_update(rank: int, out: Path) -> None:
    world = init_world()
    state = init_ppo(rank_share(PPOConfig.defaults_for("CartPole-v1"), world), world=world)
    ppo_update(state, collect_rollout(state))
    if rank == 1:
        os._exit(3)  # as a SIGKILL would: no goodbye to the other rank
    started = time.perf_counter()
    try:
        for _ in range(50):
            ppo_update(state, collect_rollout(state))
    except RankLost as error:
        (out / "lost.txt").write_text(f"{time.perf_counter() - started:.1f}\n{error}")
        close_world()  # no barrier to wait at: the other rank is gone


@pytest.mark.slow
def test_a_rank_that_dies_stops_the_others_with_one_line(tmp_path: Path) -> None:
    assert run_ranks(_die_after_one_update, tmp_path, timeout=120) == [0, 3]  # rank 0 stopped by itself
    seconds, message = (tmp_path / "lost.txt").read_text().split("\n", 1)
    assert float(seconds) < 30 and "another rank stopped" in message and "\n" not in message


def test_a_world_size_that_does_not_divide_the_envs_is_refused() -> None:
    from baselines.common.distributed import World

    with pytest.raises(ConfigError, match="--num-envs 4 does not divide among 3 ranks"):
        rank_share(PPOConfig.defaults_for("Pendulum-v1"), World(0, 3))


@pytest.mark.slow
def test_torchrun_launches_the_rlhf_module_and_a_resume_needs_the_same_world_size(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "WANDB_MODE": "disabled", "TQDM_DISABLE": "1"}
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "rlhf"]
    out = tmp_path / "run"
    first = subprocess.run([*torchrun, "ppo", "--env", "CartPole-v1", "--total-steps", "4096", "--out", str(out)],
                           env=env, capture_output=True, text=True, timeout=300)  # fmt: skip
    assert first.returncode == 0, first.stderr[-2000:]
    assert first.stdout.count('"algo": "ppo"') == 1  # rank 0 speaks for the run
    longer = subprocess.run([*torchrun, "ppo", "--resume", str(out), "--total-steps", "8192"], env=env,
                            capture_output=True, text=True, timeout=300)  # fmt: skip
    assert longer.returncode == 0, longer.stderr[-2000:]
    assert json.loads((out / "summary.json").read_text())["env_steps"] >= 8192
    alone = subprocess.run([sys.executable, "-m", "rlhf", "ppo", "--resume", str(out), "--total-steps", "12288"],
                           env=env, capture_output=True, text=True, timeout=300)  # fmt: skip
    assert alone.returncode == 2 and "ran on 2 ranks; resume it on as many (here 1)" in alone.stderr


def test_merged_statistics_equal_one_pass_over_all_the_data() -> None:
    rng = np.random.default_rng(0)
    start, parts = RunningMeanStd((3,)), [rng.normal(i, 1 + i, size=(50, 3)) for i in range(3)]
    start.update(rng.normal(size=(20, 3)))
    saved = start.state_dict()
    whole = RunningMeanStd.from_state(saved)
    whole.update(np.concatenate(parts))
    merged = RunningMeanStd.from_state(saved)
    for part in parts:  # what each rank folded in since the sync point, recovered from its statistics
        rank = RunningMeanStd.from_state(saved)
        rank.update(part)
        merged.merge(*rank.since(saved))
    np.testing.assert_allclose(merged.mean, whole.mean, rtol=1e-10)
    np.testing.assert_allclose(merged.var, whole.var, rtol=1e-8)
    assert merged.count == pytest.approx(whole.count)
