"""Task families: parsing, the task env (attributes set, task input appended), per-task return normalization, a
multi-task run evaluated per task, fine-tuning from its checkpoint, and the errors a user can cause."""

from __future__ import annotations

from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch

from baselines.common.errors import ConfigError
from baselines.gpto import GPTOConfig, init_gpto, train_gpto
from baselines.tasks import TASK_ENV_ID, TaskRewardScaler, parse_tasks, register_task_env
from rlhf.cli import main


def test_a_family_gives_its_variants_with_their_attributes_as_task_input() -> None:
    tasks = parse_tasks("pendulum-masses")
    assert dict(tasks[0].attributes) == {"g": 8.0, "m": 0.8}
    assert tasks[0].context == pytest.approx((-0.2, -0.2))  # relative to the defaults g 10, m 1
    (held_out,) = parse_tasks("pendulum-masses/held-out")
    assert held_out.context == pytest.approx((0.1, 0.1))


def test_env_ids_get_a_one_hot_task_input() -> None:
    tasks = parse_tasks("CartPole-v1, CartPole-v0")
    assert [task.env_id for task in tasks] == ["CartPole-v1", "CartPole-v0"]
    assert [task.context for task in tasks] == [(1.0, 0.0), (0.0, 1.0)]


def test_the_task_env_sets_the_physics_and_appends_the_task_input() -> None:
    register_task_env()
    (task,) = parse_tasks("cartpole-poles/held-out")
    env = gym.make(TASK_ENV_ID, **task.kwargs)
    obs, _ = env.reset(seed=0)
    assert obs.shape == (6,) and env.observation_space.shape == (6,)
    np.testing.assert_allclose(obs[4:], [1.0, 0.5])  # masspole 0.2 / 0.1 - 1, length 0.75 / 0.5 - 1
    cartpole = env.unwrapped
    assert cartpole.masspole == 0.2 and cartpole.polemass_length == pytest.approx(0.2 * 0.75)  # type: ignore[attr-defined]
    assert cartpole.total_mass == pytest.approx(1.2)  # type: ignore[attr-defined]


def test_each_task_is_scaled_by_its_own_return_std() -> None:
    scaler = TaskRewardScaler(np.array([0, 1, 0, 1]), gamma=0.9)
    rng = np.random.default_rng(0)
    rewards = rng.normal(1.0, 0.1, size=(500, 4)) * np.array([1.0, 100.0, 1.0, 100.0])
    scaled = scaler(rewards, np.zeros((500, 4), bool))
    small, large = np.abs(scaled[100:, [0, 2]]).mean(), np.abs(scaled[100:, [1, 3]]).mean()
    assert 0.8 < large / small < 1.25  # one shared scale would leave them 100 apart


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("CartPole-v1,Acrobot-v1", "the tasks' spaces differ: CartPole-v1 has Box"),
        ("pendulum-mass", "unknown env id 'pendulum-mass'"),
        ("pendulum-masses/test", "after '/' only 'held-out' is known"),
    ],
)
def test_bad_task_specs_are_one_line(capsys: pytest.CaptureFixture[str], spec: str, message: str) -> None:
    assert main(["gpto", "--env", "CartPole-v1", "--tasks", spec]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1


def test_tasks_of_another_env_or_an_uneven_split_are_refused() -> None:
    with pytest.raises(ConfigError, match="runs Pendulum-v1: give --env Pendulum-v1"):
        GPTOConfig.defaults_for("CartPole-v1", tasks="pendulum-masses").validate()
    with pytest.raises(ConfigError, match="--num-envs 6 must be a multiple of the 4 tasks"):
        GPTOConfig.defaults_for("Pendulum-v1", tasks="pendulum-masses", num_envs=6).validate()


def test_a_multi_task_run_is_evaluated_per_task_and_fine_tunes_from_its_checkpoint(tmp_path: Path) -> None:
    cfg = GPTOConfig.defaults_for("CartPole-v1", tasks="cartpole-poles", total_steps=4096, eval_episodes=2,
                                  normalize_reward=True, out=tmp_path / "multi")  # fmt: skip
    summary = train_gpto(cfg)
    assert len(summary["eval_task_returns"]) == 4
    assert summary["eval_return_mean"] == pytest.approx(np.mean(list(summary["eval_task_returns"].values())))
    fine = GPTOConfig.defaults_for("CartPole-v1", tasks="cartpole-poles/held-out", total_steps=512,
                                   init_from=tmp_path / "multi")  # fmt: skip
    state = init_gpto(fine)
    saved = torch.load(tmp_path / "multi" / "checkpoint.pt")["params"]
    torch.testing.assert_close(state.agent.params.data, saved)
    assert state.global_step == 0
    with pytest.raises(ConfigError, match="does not fit this config"):
        init_gpto(GPTOConfig.defaults_for("CartPole-v1", init_from=tmp_path / "multi"))  # no task input: 4 inputs
    with pytest.raises(ConfigError, match="no checkpoint at"):
        init_gpto(GPTOConfig.defaults_for("CartPole-v1", init_from=tmp_path / "nothing"))


def test_a_fine_tuned_run_resumes_and_tasks_are_refused_in_rlhf(tmp_path: Path) -> None:
    """The checkpoint of a run started --init-from holds the path as text (checkpoints load weights-only), so it
    resumes; GPTO's tasks in rlhf run's --ppo-config are one clear error."""
    from baselines.common.config import resume_default
    from rlhf.loop import RLHFConfig

    train_gpto(GPTOConfig.defaults_for("CartPole-v1", total_steps=512, eval_episodes=2, out=tmp_path / "first"))
    fine = GPTOConfig.defaults_for("CartPole-v1", total_steps=512, eval_episodes=2, init_from=tmp_path / "first",
                                   out=tmp_path / "fine")  # fmt: skip
    train_gpto(fine)
    resumed = train_gpto(resume_default(GPTOConfig, tmp_path / "fine"))
    assert resumed["env_steps"] == 512
    settings = tmp_path / "gpto.json"
    settings.write_text('{"tasks": "cartpole-poles"}')
    with pytest.raises(ConfigError, match="GPTO's tasks are not for rlhf run"):
        RLHFConfig(env="CartPole-v1", algo="gpto", ppo_config=settings).validate()
    settings.write_text('{"reuse": 2}')
    with pytest.raises(ConfigError, match="GPTO's reuse is not for rlhf run"):
        RLHFConfig(env="CartPole-v1", algo="gpto", ppo_config=settings).validate()


def test_tasks_need_flat_box_observations_and_init_from_a_like_network(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["gpto", "--env", "FrozenLake-v1", "--tasks", "FrozenLake-v1"]) == 2
    err = capsys.readouterr().err
    assert "tasks need a flat Box" in err and len(err.strip().splitlines()) == 1
    train_gpto(GPTOConfig.defaults_for("CartPole-v1", total_steps=512, eval_episodes=2, out=tmp_path / "tanh"))
    with pytest.raises(ConfigError, match=r"that run had activation tanh \(here relu\)"):
        init_gpto(GPTOConfig.defaults_for("CartPole-v1", activation="relu", init_from=tmp_path / "tanh"))
