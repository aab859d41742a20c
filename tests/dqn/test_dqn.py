"""DQN: exact maths (targets, loss gradient, dueling backward, optimizer, lazy target updates, batched targets),
behaviour (parameters change, run folder, resume, bad input) and a short learning check."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from baselines.common.errors import ConfigError
from baselines.common.replay import ReplayBuffer
from baselines.dqn import (
    ClippedAdam,
    DQNConfig,
    QNetwork,
    loss_gradient,
    q_backward_,
    q_forward,
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


def test_dqn_and_double_dqn_targets() -> None:
    next_q_target = torch.tensor([[1.0, 5.0], [3.0, 2.0]])
    next_q_online = torch.tensor([[2.0, 1.0], [0.0, 4.0]])
    returns, discounts = torch.tensor([1.0, 2.0]), torch.tensor([0.9, 0.0])
    # DQN: max over the target network's values.
    torch.testing.assert_close(td_targets(next_q_target, None, returns, discounts), torch.tensor([5.5, 2.0]))
    # Double DQN: the online network picks actions 0 and 1; the target network values them (1 and 2).
    torch.testing.assert_close(td_targets(next_q_target, next_q_online, returns, discounts), torch.tensor([1.9, 2.0]))


@pytest.mark.parametrize("weighted", [False, True])
def test_loss_gradient_matches_autograd_of_smooth_l1(weighted: bool) -> None:
    gen = torch.Generator().manual_seed(0)
    q_all = (torch.randn(32, 3, generator=gen, dtype=torch.float64) * 3).requires_grad_(True)
    actions = torch.randint(0, 3, (32, 1), generator=gen)
    targets = torch.randn(32, generator=gen, dtype=torch.float64)
    weights = torch.rand(32, generator=gen, dtype=torch.float64) if weighted else torch.ones(32, dtype=torch.float64)
    q_taken = q_all.gather(1, actions).squeeze(1)
    loss = (weights * torch.nn.functional.smooth_l1_loss(q_taken, targets, reduction="none")).mean()
    torch.autograd.backward(loss)
    scaled_onehot = torch.zeros(32, 3, dtype=torch.float64).scatter_(1, actions, (weights / 32).unsqueeze(1))
    ours = loss_gradient((q_taken - targets).detach(), scaled_onehot)
    assert q_all.grad is not None
    assert (q_taken - targets).abs().max() > 1  # both branches of the Huber loss are exercised
    torch.testing.assert_close(ours, q_all.grad)


@pytest.mark.parametrize("dueling", [False, True])
def test_forward_and_backward_match_autograd(dueling: bool) -> None:
    q = _network(dueling=dueling, hidden=(8, 6, 5))
    obs = torch.randn(16, 4)
    layers = [
        (w.clone().requires_grad_(True), b.clone().requires_grad_(True))
        for w, b in zip(q.weights, q.params.mlps[0].biases, strict=True)
    ]
    h = obs
    for i, (weight, bias) in enumerate(layers):
        h = torch.nn.functional.linear(h, weight, bias)
        if i < len(layers) - 1:
            h = torch.relu(h)
    q_ref = h[:, :1] + h[:, 1:] - h[:, 1:].mean(dim=1, keepdim=True) if dueling else h  # V + A - mean(A)
    grad_q = torch.randn(16, 2)
    torch.autograd.backward((q_ref * grad_q).sum())
    q_all, activations = q_forward(obs, q.weights, q.biases, q.head)
    torch.testing.assert_close(q_all, q_ref.detach())
    torch.testing.assert_close(q.q_values(obs), q_ref.detach())  # the eager forward used for acting and targets
    q_backward_(grad_q, activations, q.weights, q.weight_grads, q.bias_grads, q.head)
    expected = torch.cat([t.grad.flatten() for pair in layers for t in pair if t.grad is not None])
    torch.testing.assert_close(q.params.grad, expected)


def test_clipped_adam_matches_torch_clip_and_adam() -> None:
    q = _network()
    reference = q.params.data.clone().requires_grad_(True)
    ours = ClippedAdam(q.params, lr=1e-2, max_grad_norm=1.0)
    torch_adam = torch.optim.Adam([reference], lr=1e-2, eps=1e-8)
    gen = torch.Generator().manual_seed(1)
    for scale in (0.01, 10.0, 0.01, 5.0):  # clipping inactive and active
        grad = torch.randn(reference.shape, generator=gen) * scale
        q.params.grad.copy_(grad)
        reference.grad = grad.clone()
        torch.testing.assert_close(ours.step(), torch.nn.utils.clip_grad_norm_([reference], 1.0))
        torch_adam.step()
        torch.testing.assert_close(q.params.data, reference.detach())


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


@pytest.mark.parametrize("double_dqn", [False, True])
def test_burst_with_batched_targets_equals_a_target_forward_per_step(double_dqn: bool) -> None:
    """One target forward for the whole burst (over distinct transitions) gives SB3's per-step targets."""
    cfg = DQNConfig.defaults_for("CartPole-v1", hidden_sizes=(8, 8), batch_size=16, double_dqn=double_dqn)
    buffer = _filled_buffer()
    batched, reference = _network(), _network()
    for net in (batched, reference):
        net.params.data.mul_(1.5)  # online differs from target
    steps = 6
    td_log, q_log = torch.zeros(steps, 16), torch.zeros(steps, 16)
    q_learning_burst(
        batched, ClippedAdam(batched.params, 1e-2, 10.0), buffer, None, cfg, steps, 0.4,
        np.random.default_rng(3), td_log, q_log,
    )  # fmt: skip
    optimizer = ClippedAdam(reference.params, 1e-2, 10.0)
    indices = np.random.default_rng(3).integers(0, len(buffer), size=steps * 16)
    for step in range(steps):
        b = buffer.gather(indices[step * 16 : (step + 1) * 16], cfg.n_step, cfg.gamma)
        obs, next_obs = torch.from_numpy(b.obs), torch.from_numpy(b.next_obs)
        actions = torch.from_numpy(b.actions).unsqueeze(1)
        next_online = reference.q_values(next_obs) if double_dqn else None
        targets = td_targets(
            reference.q_values(next_obs, target=True), next_online, torch.from_numpy(b.returns),
            torch.from_numpy(b.discounts),
        )  # fmt: skip
        q_all, activations = q_forward(obs, reference.weights, reference.biases, reference.head)
        td = q_all.gather(1, actions).squeeze(1) - targets
        torch.testing.assert_close(td, td_log[step], rtol=1e-5, atol=1e-5)
        grad_q = loss_gradient(td, torch.zeros(16, 2).scatter_(1, actions, 1.0 / 16))
        q_backward_(grad_q, activations, reference.weights, reference.weight_grads, reference.bias_grads, None)
        optimizer.step()
    torch.testing.assert_close(batched.params.data, reference.params.data, rtol=1e-5, atol=1e-6)


def test_every_parameter_changes_after_a_burst() -> None:
    cfg = DQNConfig.defaults_for("CartPole-v1", hidden_sizes=(8, 8), batch_size=32, dueling=True)
    q = _network(dueling=True)
    before = [t.clone() for t in (*q.params.mlps[0].weights, *q.params.mlps[0].biases)]
    td_log = torch.zeros(3, 32)
    q_learning_burst(
        q, ClippedAdam(q.params, 1e-3, 10.0), _filled_buffer(), None, cfg, 3, 0.4, np.random.default_rng(0),
        td_log, torch.zeros_like(td_log),
    )  # fmt: skip
    after = (*q.params.mlps[0].weights, *q.params.mlps[0].biases)
    assert all(not torch.equal(b, a) for b, a in zip(before, after, strict=True))
    assert not torch.equal(q.target_data, q.params.data)  # the target moves only when told to


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
    summary = train_dqn(DQNConfig(resume=out))
    assert summary["resumed_from_step"] == 1000 and summary["env_steps"] == 1500
    assert summary["gradient_steps"] == (1500 // 50 - 2) * 5  # bursts from step 150 on, none lost or repeated
    eval_steps = [row["step"] for row in map(json.loads, (out / "metrics.jsonl").read_text().splitlines())
                  if "eval/return_mean" in row]  # fmt: skip
    assert eval_steps == [500, 1000, 1500]
    with pytest.raises(ConfigError, match="already ran 1500 steps"):
        train_dqn(DQNConfig(resume=out))
    shown = DQNConfig.cli_default(None, None, str(out))  # what `rlhf dqn --resume DIR` starts from
    assert (shown.resume, shown.out, shown.total_steps, shown.hidden_sizes) == (out, out, 1500, (16, 16))
    more = train_dqn(dataclasses.replace(shown, total_steps=1800))  # `--resume DIR --total-steps 1800`
    assert more["resumed_from_step"] == 1500 and more["env_steps"] == 1800
    with pytest.raises(ConfigError, match="drop --learning-rate"):
        DQNConfig(resume=out, learning_rate=0.5).resolved()


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
        train_dqn(DQNConfig(resume=out))
    assert "\n" not in str(info.value)


def test_unknown_hyperparameter_in_a_config_file(tmp_path: Path) -> None:
    path = tmp_path / "best.json"
    path.write_text(json.dumps({"learning_rate": 1e-3, "learnig_starts": 5}))
    with pytest.raises(ConfigError, match=r"unknown hyperparameter.*learnig_starts"):
        DQNConfig.cli_default(None, str(path), None)
    with pytest.raises(ConfigError, match="learnig_starts"):
        DQNConfig.defaults_for("CartPole-v1", config=path)


def test_config_file_values_apply_between_env_defaults_and_overrides(tmp_path: Path) -> None:
    path = tmp_path / "best.json"
    path.write_text(json.dumps({"learning_rate": 1e-3, "batch_size": 32, "hidden_sizes": [32, 32]}))
    cfg = DQNConfig.defaults_for("Acrobot-v1", config=path, batch_size=16)
    assert (cfg.learning_rate, cfg.batch_size, cfg.hidden_sizes, cfg.target_update_interval) == (
        1e-3,
        16,
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
