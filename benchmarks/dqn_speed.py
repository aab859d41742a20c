"""DQN speed, like for like: our DQN vs Stable-Baselines3's on CartPole-v1 with rl-zoo's settings, one torch thread.

Same algorithm on both sides: no double DQN, dueling, prioritized replay or n-step returns; 256x256 ReLU MLP, lr
2.3e-3, batch 64, buffer 100k, learning starts 1000, gamma 0.99, target copy every 10 env steps, 128 gradient
steps every 256 env steps, epsilon 1 -> 0.04 over 16% of training, Huber loss, Adam, max grad norm 10.
Ours is timed over its training loop (which includes one final 10-episode evaluation that SB3's ``learn`` does not
do); SB3 over ``learn``. Both in wall-clock time and in process CPU time: on a shared machine other processes take
turns on the cores, which wall-clock time counts and CPU time does not. The runs alternate (SB3, ours, SB3, ...)
so such load hits both sides. Target: ours >= 3x SB3's env steps per second.

Run: ``.venv/bin/python benchmarks/dqn_speed.py [--steps 50000] [--repeats 2]`` (needs ``pip install -e .[bench]``).
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")  # one core each, as the target says

import argparse  # noqa: E402
import statistics  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402
from dqn_reliability import RL_ZOO  # noqa: E402

from baselines.dqn import DQNConfig, train_dqn  # noqa: E402

RL_ZOO_CARTPOLE = RL_ZOO["CartPole-v1"]  # rl-zoo's row, as the reliability benchmark gives it to SB3


def run_sb3(steps: int, seed: int) -> tuple[float, float, float]:
    """(env steps per wall second, per CPU second, final greedy return over 10 episodes) of SB3's DQN."""
    from stable_baselines3 import DQN

    from baselines.common.evaluation import evaluate_policy

    model = DQN(
        "MlpPolicy",
        "CartPole-v1",
        policy_kwargs={"net_arch": [256, 256]},
        seed=seed,
        device="cpu",
        **RL_ZOO_CARTPOLE,  # type: ignore[arg-type]
    )
    start, start_cpu = time.perf_counter(), time.process_time()
    model.learn(steps)
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - start_cpu
    returns = evaluate_policy(lambda obs: model.predict(obs, deterministic=True)[0], "CartPole-v1", 10, seed)
    return model.num_timesteps / seconds, model.num_timesteps / cpu_seconds, float(returns.mean())


def run_ours(steps: int, seed: int, out: Path) -> tuple[float, float, float]:
    """(env steps per wall second, per CPU second, final greedy return) of our DQN with exactly SB3's algorithm."""
    config = DQNConfig.defaults_for(
        "CartPole-v1",
        **RL_ZOO_CARTPOLE,
        total_steps=steps,
        seed=seed,
        hidden_sizes=(256, 256),
        lr_schedule="constant",
        double_dqn=False,
        dueling=False,
        n_step=1,
        prioritized=False,
        tau=1.0,
        max_grad_norm=10.0,
        exploration_initial_eps=1.0,
        num_envs=1,
        eval_every=0,
        checkpoint_every=0,
        out=out,
    )
    summary = train_dqn(config)
    steps_done = float(summary["env_steps"])
    return steps_done / summary["wall_seconds"], steps_done / summary["cpu_seconds"], float(summary["eval_return_mean"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=50_000)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(1)
    rates: dict[str, list[float]] = {"sb3": [], "ours": [], "sb3_cpu": [], "ours_cpu": []}
    print(f"CartPole-v1, rl-zoo DQN settings, {args.steps} env steps, 1 torch thread")
    print(f"{'run':<5}{'SB3 steps/s':>13}{'ours steps/s':>14}{'ratio':>7}   {'per CPU second:':<16}{'SB3':>7}"
          f"{'ours':>7}{'ratio':>7}{'SB3 return':>12}{'our return':>12}")  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["SB3_LOGDIR"] = tmp  # SB3 would leave a log folder in /tmp per run
        for i in range(args.repeats):
            sb3_rate, sb3_cpu_rate, sb3_return = run_sb3(args.steps, args.seed + i)
            our_rate, our_cpu_rate, our_return = run_ours(args.steps, args.seed + i, Path(tmp) / f"ours-{i}")
            for key, value in (
                ("sb3", sb3_rate),
                ("ours", our_rate),
                ("sb3_cpu", sb3_cpu_rate),
                ("ours_cpu", our_cpu_rate),
            ):
                rates[key].append(value)
            wall_ratio, cpu_ratio = our_rate / sb3_rate, our_cpu_rate / sb3_cpu_rate
            print(f"{i:<5}{sb3_rate:>13.0f}{our_rate:>14.0f}{wall_ratio:>7.2f}   {'':<16}{sb3_cpu_rate:>7.0f}"
                  f"{our_cpu_rate:>7.0f}{cpu_ratio:>7.2f}{sb3_return:>12.1f}{our_return:>12.1f}")  # fmt: skip
    for label, ours, sb3 in (("wall-clock", "ours", "sb3"), ("CPU-time", "ours_cpu", "sb3_cpu")):
        ratio = statistics.median(rates[ours]) / statistics.median(rates[sb3])
        verdict = "meets" if ratio >= 3.0 else "MISSES"
        print(f"median {label} ratio ours/SB3: {ratio:.2f}x ({verdict} the 3x target)")


if __name__ == "__main__":
    main()
