"""DQN: exact maths (targets, loss gradient, dueling backward, optimizer, lazy target updates, batched targets),
behaviour (parameters change, run folder, resume, bad input) and a short learning check."""

from __future__ import annotations

import dataclasses
import functools
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from baselines.common.config import resume_default
from baselines.common.errors import ConfigError
from baselines.common.flat_mlp import FlatAdam, FlatParameters, MLPSpec
from baselines.common.replay import ReplayBuffer
from baselines.dqn import (
    Burst,
    DQNConfig,
    DQNState,
    QNetwork,
    dqn_loss,
    gradient_steps,
    loss_gradient,
    q_learning_burst,
    td_targets,
    train_dqn,
)

TINY = {"hidden_sizes": (16, 16), "eval_episodes": 2}


def _network(dueling: bool = False, hidden: tuple[int, ...] = (8, 8), seed: int = 0) -> QNetwork:
    cfg = DQNConfig.defaults_for("CartPole-v1", hidden_sizes=hidden, dueling=dueling)
    return QNetwork(4, 2, cfg, torch.Generator().manual_seed(seed))


def _filled_buffer(size: int = 300, seed: int = 0) -> ReplayBuffer:
    rng = np.random.default_rng(seed)
    buffer = ReplayBuffer(1000, (4,), 1)
    for _ in range(size):
        buffer.add(
            rng.normal(size=(1, 4)),
            rng.integers(2, size=1),
            rng.normal(size=1),
            rng.normal(size=(1, 4)),
            rng.random(1) < 0.05,
            rng.random(1) < 0.02,
        )
    return buffer


def _state(cfg: DQNConfig) -> DQNState:
    """A DQN's state on CartPole's sizes, replaying ``_filled_buffer``; the target network differs from the online."""
    state = DQNState.create(cfg, 4, 2)
    state.buffer = _filled_buffer()
    state.q.params.data.mul_(1.5)
    return state


def test_dqn_and_double_dqn_targets() -> None:
    next_q_target = torch.tensor([[1.0, 5.0], [3.0, 2.0]])
    next_q_online = torch.tensor([[2.0, 1.0], [0.0, 4.0]])
    returns, discounts = torch.tensor([1.0, 2.0]), torch.tensor([0.9, 0.0])
    # DQN: max over the target network's values.
    torch.testing.assert_close(td_targets(next_q_target, None, returns, discounts), torch.tensor([5.5, 2.0]))
    # Double DQN: the online network picks actions 0 and 1; the target network values them (1 and 2).
    torch.testing.assert_close(td_targets(next_q_target, next_q_online, returns, discounts), torch.tensor([1.9, 2.0]))


@pytest.mark.parametrize("weighted", [False, True])
def test_dqn_loss_is_the_weighted_mean_huber_loss_and_loss_gradient_its_derivative(weighted: bool) -> None:
    gen = torch.Generator().manual_seed(0)
    obs, next_obs = torch.randn(32, 4, dtype=torch.float64), torch.randn(32, 4, dtype=torch.float64)
    q_all = (torch.randn(32, 3, generator=gen, dtype=torch.float64) * 3).requires_grad_(True)
    next_q_target = torch.randn(32, 3, generator=gen, dtype=torch.float64)
    actions = torch.randint(0, 3, (32,), generator=gen)
    returns, discounts = (
        torch.randn(32, generator=gen, dtype=torch.float64),
        torch.full((32,), 0.9, dtype=torch.float64),
    )
    weights = torch.rand(32, generator=gen, dtype=torch.float64) if weighted else torch.ones(32, dtype=torch.float64)
    loss, td_errors, _ = dqn_loss(
        lambda x: q_all if x is obs else torch.zeros(32, 3), obs, actions, weights, returns, discounts, next_obs,
        next_q_target, double_dqn=False,
    )  # fmt: skip
    targets = returns + 0.9 * next_q_target.amax(dim=1)
    huber = torch.where(td_errors.abs() < 1, 0.5 * td_errors**2, td_errors.abs() - 0.5)
    assert td_errors.abs().max() > 1 and td_errors.abs().min() < 1  # both branches of the Huber loss
    torch.testing.assert_close(td_errors, q_all.detach().gather(1, actions[:, None]).squeeze(1) - targets)
    torch.testing.assert_close(loss.detach(), (weights * huber).mean())
    torch.autograd.backward(loss)
    scaled_onehot = torch.zeros(32, 3, dtype=torch.float64).scatter_(1, actions[:, None], (weights / 32)[:, None])
    assert q_all.grad is not None
    torch.testing.assert_close(loss_gradient(td_errors, scaled_onehot), q_all.grad)


@pytest.mark.parametrize(("dueling", "double_dqn"), [(False, False), (True, True)])
def test_the_fast_path_gradient_is_autograds_gradient_of_dqn_loss(dueling: bool, double_dqn: bool) -> None:
    """One step of the scripted loop (forward, loss_gradient, hand-written backward) in float64, learning rate 0,
    leaves in the flat gradient what autograd gives for dqn_loss on an independent nn.functional forward."""
    sizes, batch = (4, 16, 8, 2 + dueling), 32
    params = FlatParameters([MLPSpec(sizes, "relu")], torch.Generator().manual_seed(0), dtype=torch.float64)
    mlp = params.mlps[0]
    head = torch.cat([torch.ones(1, 2), torch.eye(2) - 0.5]).double() if dueling else None
    layers = [t.clone().requires_grad_(True) for pair in zip(mlp.weights, mlp.biases, strict=True) for t in pair]

    def q_reference(x: torch.Tensor) -> torch.Tensor:
        h = x
        for i in range(0, len(layers), 2):
            h = torch.nn.functional.linear(h, layers[i], layers[i + 1])
            h = torch.relu(h) if i < len(layers) - 2 else h
        return h if head is None else h[:, :1] + h[:, 1:] - h[:, 1:].mean(dim=1, keepdim=True)  # V + A - mean(A)

    gen = torch.Generator().manual_seed(1)

    def normal(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=gen, dtype=torch.float64)

    weights = torch.rand(1, batch, generator=gen, dtype=torch.float64)
    actions = torch.randint(0, 2, (1, batch, 1), generator=gen)
    discounts = torch.full((1, batch), 0.99**3, dtype=torch.float64)
    burst = Burst(
        normal(1, batch, 4), actions, weights, normal(1, batch), discounts, normal(1, batch, 4), normal(1, batch, 2)
    )
    scaled_onehot = torch.zeros(1, batch, 2, dtype=torch.float64).scatter_(2, actions, weights[..., None] / batch)
    targets = None if double_dqn else td_targets(burst.next_q_target, None, burst.returns, burst.discounts)
    td_log, q_log = torch.zeros_like(weights), torch.zeros_like(weights)
    gradient_steps(
        burst, scaled_onehot, targets, mlp.weights, mlp.biases, mlp.weight_grads, mlp.bias_grads, head,
        FlatAdam(params, lr=0.0).state, (0.0, 0.9, 0.999, 1e-8, math.inf), td_log, q_log,
    )  # fmt: skip
    loss, td_errors, q_taken = dqn_loss(
        q_reference, burst.obs[0], burst.actions[0, :, 0], burst.weights[0], burst.returns[0], burst.discounts[0],
        burst.next_obs[0], burst.next_q_target[0], double_dqn,
    )  # fmt: skip
    torch.autograd.backward(loss)
    torch.testing.assert_close(td_log[0], td_errors)
    torch.testing.assert_close(q_log[0], q_taken)
    torch.testing.assert_close(params.grad, torch.cat([t.grad.flatten() for t in layers if t.grad is not None]))


def _reference_burst(cfg: DQNConfig, state: DQNState, steps: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """SB3's gradient steps: per step, a batch, target values from the target network, autograd of dqn_loss,
    clip_grad_norm_ and torch.optim.Adam. Returns the parameters after the steps and the first step's TD errors."""
    flat = state.q.params.data.clone().requires_grad_(True)
    adam = torch.optim.Adam([flat], lr=state.optimizer.lr)
    target = state.q.params.bind_copy(state.q.target_data)[0]
    indices = np.random.default_rng(seed).integers(0, len(state.buffer), size=steps * cfg.batch_size)
    first_td = torch.zeros(0)
    for step in range(steps):
        b = state.buffer.gather(indices[step * cfg.batch_size : (step + 1) * cfg.batch_size], cfg.n_step, cfg.gamma)
        online = state.q.params.bind_copy(flat)[0]
        obs, next_obs = torch.from_numpy(b.obs), torch.from_numpy(b.next_obs)
        loss, td_errors, _ = dqn_loss(
            functools.partial(state.q.q_values, mlp=online), obs, torch.from_numpy(b.actions),
            torch.from_numpy(b.weights), torch.from_numpy(b.returns), torch.from_numpy(b.discounts), next_obs,
            state.q.q_values(next_obs, target).detach(), cfg.double_dqn,
        )  # fmt: skip
        first_td = td_errors if step == 0 else first_td
        adam.zero_grad()
        torch.autograd.backward(loss)
        torch.nn.utils.clip_grad_norm_([flat], cfg.max_grad_norm)
        adam.step()
    return flat.detach(), first_td


@pytest.mark.parametrize("autograd", [False, True], ids=["fast-path", "autograd"])
@pytest.mark.parametrize("double_dqn", [False, True])
def test_a_burst_takes_the_steps_of_autograd_clip_grad_norm_and_torch_adam(double_dqn: bool, autograd: bool) -> None:
    """Six gradient steps of a burst (one batched target forward; the fast path or the autograd path) against SB3's
    per-step procedure, compared relative to the size of the update. Rounding differs between CPUs; it moves the
    parameters apart by ~1e-7 of the update here, and at worst flips the sign of the Adam step of an entry whose
    gradient is within rounding of zero: 2 * lr, 1% of this update. A wrong sign or a missing bias correction
    moves them apart by more than twice the update."""
    cfg = DQNConfig.defaults_for("CartPole-v1", hidden_sizes=(64, 64), batch_size=32, double_dqn=double_dqn,
                                 max_grad_norm=0.5, learning_rate=1e-2)  # fmt: skip
    steps, ours, reference = 6, _state(cfg), _state(cfg)
    start = ours.q.params.data.clone()
    td_log, q_log = torch.zeros(steps, cfg.batch_size), torch.zeros(steps, cfg.batch_size)
    ours.rng = np.random.default_rng(3)
    q_learning_burst(ours, steps, 0.4, td_log, q_log, autograd=autograd)
    expected, first_td = _reference_burst(cfg, reference, steps, seed=3)
    torch.testing.assert_close(td_log[0], first_td, rtol=1e-5, atol=1e-5 * float(first_td.abs().max()))
    update = (expected - start).norm()
    assert update > 10 * cfg.learning_rate  # the steps moved the parameters
    assert (ours.q.params.data - expected).norm() < 0.05 * update


def test_lazy_target_update_equals_polyak_steps_towards_a_fixed_online_network() -> None:
    step_by_step, lazy = _network(seed=0), _network(seed=0)
    for net in (step_by_step, lazy):
        net.params.data.add_(1.0)  # online moved away from the target copy
    tau, pending = 0.1, 7
    for _ in range(pending):
        step_by_step.update_target(tau)
    lazy.update_target(1.0 - (1.0 - tau) ** pending)
    torch.testing.assert_close(lazy.target_data, step_by_step.target_data)
    lazy.update_target(1.0)
    assert torch.equal(lazy.target_data, lazy.params.data)


def test_every_parameter_changes_after_a_burst() -> None:
    cfg = DQNConfig.defaults_for("CartPole-v1", hidden_sizes=(8, 8), batch_size=32, dueling=True)
    state = _state(cfg)
    online = state.q.online
    before = [t.clone() for t in (*online.weights, *online.biases)]
    target_before = state.q.target_data.clone()
    td_log = torch.zeros(3, 32)
    q_learning_burst(state, 3, 0.4, td_log, torch.zeros_like(td_log))
    assert all(not torch.equal(b, a) for b, a in zip(before, (*online.weights, *online.biases), strict=True))
    assert torch.equal(state.q.target_data, target_before)  # the target moves only when told to


@pytest.mark.parametrize("dueling", [False, True])
@pytest.mark.parametrize("batch", [1, 9])
def test_greedy_actions_agree_with_the_batched_forward(dueling: bool, batch: int) -> None:
    q = _network(dueling=dueling)
    obs = np.random.default_rng(batch).normal(size=(batch, 4)).astype(np.float32)
    for _ in range(5):
        q.params.data.add_(torch.randn(q.params.data.shape) * 0.3)  # acting reads the live weights
        expected = q.q_values(torch.from_numpy(obs)).argmax(dim=1).numpy()
        np.testing.assert_array_equal(q.greedy_actions(obs), expected)


def test_per_env_defaults_and_overrides() -> None:
    acrobot = DQNConfig.defaults_for("Acrobot-v1", learning_rate=1e-3)
    assert acrobot.learning_rate == 1e-3  # an override wins
    assert acrobot.target_update_interval == 250 and acrobot.total_steps == 100_000  # the env's row
    assert DQNConfig() == DQNConfig.defaults_for("CartPole-v1")  # field defaults are CartPole-v1's row
    assert DQNConfig.cli_default("Acrobot-v1", None, None) == acrobot.__class__.defaults_for("Acrobot-v1")
    unknown_env = DQNConfig.defaults_for("LunarLander-v3")
    assert (unknown_env.train_freq, unknown_env.gradient_steps) == (4, -1)


def test_run_folder_summary_metrics_and_report(tmp_path: Path) -> None:
    out = tmp_path / "run"
    summary = train_dqn(
        DQNConfig(
            total_steps=1200, learning_starts=200, train_freq=64, gradient_steps=8, eval_every=600, out=out,
            num_envs=2, double_dqn=True, dueling=True, n_step=3, prioritized=True, **TINY,  # type: ignore[arg-type]
        )
    )  # fmt: skip
    for key in ("algo", "env_id", "seed", "env_steps", "wall_seconds", "steps_per_second", "eval_return_mean"):
        assert key in summary
    assert summary["algo"] == "dqn" and summary["env_steps"] == 1200 and summary["eval_episodes"] == 2
    assert json.loads((out / "summary.json").read_text())["env_steps"] == 1200
    keys = {k for line in (out / "metrics.jsonl").read_text().splitlines() for k in json.loads(line)}
    expected = {"charts/episodic_return", "charts/epsilon", "charts/SPS", "charts/per_beta", "losses/td_loss"}
    assert expected | {"losses/q_values", "eval/return_mean", "eval/return_std"} <= keys
    assert (out / "report.html").stat().st_size > 10_000 and (out / "checkpoint.pt").exists()
    config = json.loads((out / "config.json").read_text())
    assert config["prioritized"] is True and config["hidden_sizes"] == [16, 16]


@pytest.mark.slow
def test_short_learning_check_on_cartpole(tmp_path: Path) -> None:
    """10k steps with a small network: a random policy scores ~20; seeds 0-3 scored 374, 433, 500, 377."""
    config = DQNConfig(
        total_steps=10_000,
        hidden_sizes=(64, 64),
        lr_schedule="linear",
        n_step=3,
        train_freq=64,
        gradient_steps=64,
        target_update_interval=100,
        eval_every=0,
        eval_episodes=5,
        seed=0,
        out=tmp_path / "run",
    )
    summary = train_dqn(config)
    assert summary["eval_return_mean"] >= 200, summary


class _Interrupt(Exception):
    pass


def test_resume_continues_from_the_saved_step(tmp_path: Path) -> None:
    out = tmp_path / "run"
    config = DQNConfig(
        total_steps=1500,
        learning_starts=100,
        train_freq=50,
        gradient_steps=5,
        eval_every=500,
        out=out,
        **TINY,  # type: ignore[arg-type]
    )

    def stop_at_1000(step: int, _: float) -> None:
        if step >= 1000:
            raise _Interrupt

    with pytest.raises(_Interrupt):
        train_dqn(config, on_eval=stop_at_1000)
    assert not (out / "summary.json").exists()
    with pytest.raises(ConfigError, match="unfinished run; continue it with --resume"):
        train_dqn(config)
    summary = train_dqn(resume_default(DQNConfig, out))
    assert summary["resumed_from_step"] == 1000 and summary["env_steps"] == 1500
    assert summary["gradient_steps"] == (1500 // 50 - 2) * 5  # bursts from step 150 on, none lost or repeated
    eval_steps = [row["step"] for row in map(json.loads, (out / "metrics.jsonl").read_text().splitlines())
                  if "eval/return_mean" in row]  # fmt: skip
    assert eval_steps == [500, 1000, 1500]
    with pytest.raises(ConfigError, match="already ran 1500 steps"):
        train_dqn(resume_default(DQNConfig, out))
    shown = DQNConfig.cli_default(None, None, str(out))  # what `rlhf dqn --resume DIR` starts from
    assert (shown.resume, shown.out, shown.total_steps, shown.hidden_sizes) == (out, out, 1500, (16, 16))
    more = train_dqn(dataclasses.replace(shown, total_steps=1800))  # `--resume DIR --total-steps 1800`
    assert more["resumed_from_step"] == 1500 and more["env_steps"] == 1800
    with pytest.raises(ConfigError, match="drop --learning-rate"):
        dataclasses.replace(resume_default(DQNConfig, out), learning_rate=0.5).resolved()


def test_continuous_actions_are_refused_before_anything_is_written(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="DQN needs discrete actions; Pendulum-v1") as info:
        train_dqn(DQNConfig(env="Pendulum-v1", out=tmp_path / "run"))
    assert "\n" not in str(info.value)
    assert not (tmp_path / "run").exists()


def test_corrupt_checkpoint_is_a_one_line_error(tmp_path: Path) -> None:
    out = tmp_path / "run"
    train_dqn(DQNConfig(total_steps=300, learning_starts=100, train_freq=50, gradient_steps=2, out=out, **TINY))  # type: ignore[arg-type]
    (out / "summary.json").unlink()
    config = json.loads((out / "config.json").read_text())
    (out / "config.json").write_text(json.dumps({**config, "total_steps": 600}))
    (out / "checkpoint.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ConfigError, match="corrupt") as info:
        train_dqn(resume_default(DQNConfig, out))
    assert "\n" not in str(info.value)


def test_unknown_hyperparameter_in_a_config_file(tmp_path: Path) -> None:
    path = tmp_path / "best.json"
    path.write_text(json.dumps({"learning_rate": 1e-3, "learnig_starts": 5}))
    with pytest.raises(ConfigError, match=r"unknown hyperparameter.*learnig_starts"):
        DQNConfig.cli_default(None, str(path), None)


def test_config_file_values_apply_between_env_defaults_and_overrides(tmp_path: Path) -> None:
    path = tmp_path / "best.json"
    path.write_text(json.dumps({"learning_rate": 1e-3, "batch_size": 32, "hidden_sizes": [32, 32]}))
    cfg = DQNConfig.cli_default("Acrobot-v1", str(path), None)  # `rlhf dqn --env Acrobot-v1 --config best.json`
    assert (cfg.learning_rate, cfg.batch_size, cfg.hidden_sizes, cfg.target_update_interval) == (
        1e-3,
        32,
        (32, 32),
        250,
    )
    shown = DQNConfig.cli_default(None, str(path), None)
    assert shown.env == "CartPole-v1" and shown.learning_rate == 1e-3 and shown.config == path
    path.write_text(json.dumps({"env": "Acrobot-v1", "learning_rate": 1e-3}))
    assert DQNConfig.cli_default(None, str(path), None).target_update_interval == 250  # the file's env


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"gamma": 1.5}, "--gamma"),
        ({"batch_size": 0}, "--batch-size"),
        ({"tau": 0.0}, "--tau"),
        ({"n_step": 0}, "--n-step"),
        ({"gradient_steps": 0}, "--gradient-steps"),
        ({"env": "CartPol-v1"}, "unknown env id 'CartPol-v1'; did you mean CartPole-v1"),
    ],
)
def test_invalid_values_are_refused(changes: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        dataclasses.replace(DQNConfig(), **changes).resolved()  # type: ignore[arg-type]


@pytest.mark.parametrize("env", ["Acrobot-v1", "MountainCar-v0", "CartPole-v1"])
def test_classic_control_envs_run_with_their_defaults(env: str, tmp_path: Path) -> None:
    config = DQNConfig.defaults_for(
        env, total_steps=400, learning_starts=100, hidden_sizes=(16, 16), eval_episodes=1, eval_every=0,
        out=tmp_path / "run",
    )  # fmt: skip
    summary = train_dqn(config)
    assert summary["env_id"] == env and summary["env_steps"] == 400 and summary["gradient_steps"] > 0
    assert np.isfinite(summary["eval_return_mean"])
