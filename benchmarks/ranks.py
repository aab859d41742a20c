"""Data parallelism over ranks against one process, same settings, same seeds (docs/distributed.md).

``--part ppo``: PPO with two ranks (``torchrun --nproc_per_node=2 -m rlhf ppo``) against one process at the same
total env count. Target (issue 16), on this 2-core machine: at least 1.6x the env steps per second of one rank, and
the same learning: CartPole-v1 >= 475 at 100k total steps on 5 of 5 seeds. The runs go one at a time (two ranks take
both cores), alternating which goes first per seed so that both meet the same machine load; one thread per rank
(torchrun sets ``OMP_NUM_THREADS=1``; ``--torch-threads`` is 1 by default). The ratio is of the training loop's env
steps per second: rank 0's last ``charts/SPS`` (from the first rollout to the last update), without the one final
evaluation (``--eval-every 0``; rank 0 alone evaluates) and without torchrun's start-up, both printed apart.
``--ppo-flags`` changes the env's row (more envs, larger minibatches: where each rank's share of the work outweighs
an all-reduce, about 0.4 ms here).

``--part reward``: reward-model training (an MLP ensemble of 3, ``rlhf.reward.train_reward_model``) on the same
labels in one process and over two gloo ranks: a synthetic preference task with a known reward (random 8-wide step
features, the teacher prefers the higher sum of ``tanh(w . x)``), ``--pairs`` labels per seed. Target (issue 16):
the same held-out accuracy (within noise), the parameters identical across ranks after every step (checked after
each optimizer step here).

Run: ``.venv/bin/python benchmarks/ranks.py --part ppo [--env CartPole-v1] [--seeds 5]`` or ``--part reward``.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
TARGET_RETURN = {"CartPole-v1": 475.0}
TARGET_SPEEDUP = 1.6


# ------------------------------------------------------------------------------------------------------ PPO
def run_ppo(
    ranks: int, env: str, seed: int, total_steps: int | None, out: Path, extra: Sequence[str] = ()
) -> tuple[dict[str, Any], float]:
    """One training run with ``ranks`` processes; its summary.json, with ``train_steps_per_second`` (the last
    ``charts/SPS`` of metrics.jsonl: the training loop without the final evaluation), and the command's seconds."""
    flags = ["ppo", "--env", env, "--seed", str(seed), "--out", str(out), "--eval-every", "0", *extra]
    flags += [] if total_steps is None else ["--total-steps", str(total_steps)]
    launcher = [sys.executable, "-m", "rlhf"]
    if ranks > 1:
        launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={ranks}"]
        launcher += ["-m", "rlhf"]
    env_vars = {**os.environ, "PYTHONPATH": str(ROOT), "TQDM_DISABLE": "1", "WANDB_MODE": "disabled"}
    started = time.perf_counter()
    done = subprocess.run([*launcher, *flags], env=env_vars, capture_output=True, text=True)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(launcher + flags)} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    summary = json.loads((out / "summary.json").read_text())
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    summary["train_steps_per_second"] = [row["charts/SPS"] for row in rows if "charts/SPS" in row][-1]
    return summary, wall


def ppo_part(args: argparse.Namespace) -> None:
    rows: dict[int, list[tuple[dict[str, Any], float]]] = {1: [], args.ranks: []}
    with tempfile.TemporaryDirectory(prefix="ranks-ppo-") as tmp:
        for seed in range(args.first_seed, args.first_seed + args.seeds):
            for ranks in (1, args.ranks) if seed % 2 == 0 else (args.ranks, 1):
                out = Path(tmp) / f"{ranks}-{seed}"
                summary, wall = run_ppo(ranks, args.env, seed, args.total_steps, out, args.ppo_flags.split())
                rows[ranks].append((summary, wall))
                print(f"{args.env} seed {seed}, {ranks} rank(s): return {summary['eval_return_mean']:.1f}, "
                      f"{summary['train_steps_per_second']:.0f} steps/s training ({summary['steps_per_second']:.0f} "
                      f"with the final evaluation), {wall:.1f} s with start-up", flush=True)  # fmt: skip
    speeds = {ranks: statistics.median(s["train_steps_per_second"] for s, _ in runs) for ranks, runs in rows.items()}
    print(f"\n{args.env} {args.ppo_flags}, seeds {args.first_seed}-{args.first_seed + args.seeds - 1} "
          f"(commit {_commit()})")  # fmt: skip
    print("ranks | returns | median training steps/s | median wall s (with start-up)")
    for ranks, runs in rows.items():
        returns = ", ".join(f"{s['eval_return_mean']:.1f}" for s, _ in runs)
        print(f"{ranks} | {returns} | {speeds[ranks]:.0f} | {statistics.median(w for _, w in runs):.1f}")
    print(f"speed-up of {args.ranks} ranks over 1: {speeds[args.ranks] / speeds[1]:.2f}x (target >= {TARGET_SPEEDUP}x)")
    target = TARGET_RETURN.get(args.env)
    if target is not None:
        for ranks, runs in rows.items():
            hits = sum(s["eval_return_mean"] >= target for s, _ in runs)
            print(f"{ranks} rank(s): {hits} of {len(runs)} seeds >= {target:.0f}")


# --------------------------------------------------------------------------------------------------- reward
FEATURES, LENGTH = 8, 25


def preference_task(pairs: int, seed: int) -> Any:
    """``pairs`` labelled segment pairs of a known reward (features random, weights drawn from ``seed``)."""
    from rlhf.reward import PreferenceData

    rng = np.random.default_rng(seed)
    weights = rng.normal(size=FEATURES)
    a, b = (rng.normal(size=(pairs, LENGTH, FEATURES)).astype(np.float32) for _ in range(2))
    returns_a, returns_b = (np.tanh(x @ weights).sum(axis=-1) for x in (a, b))
    return PreferenceData(a, b, (returns_a > returns_b).astype(np.float32))


def train_reward(seed: int, pairs: int, epochs: int) -> dict[str, Any]:
    """Train on the task in this process (its world: one process, or a rank under torch.distributed); the fit
    and the SHA of the flat parameters after every step."""
    import hashlib

    import torch

    from baselines.common.distributed import init_world
    from rlhf.reward import RewardModelConfig, RewardTrainerConfig, build_reward_model, train_reward_model

    world = init_world()
    model = build_reward_model(RewardModelConfig(feature_dim=FEATURES, ensemble_size=3, seed=seed))
    digest = hashlib.sha256()
    original = torch.optim.AdamW.step

    def step(self: torch.optim.AdamW, *a: Any, **k: Any) -> Any:
        result = original(self, *a, **k)
        digest.update(torch.cat([p.detach().reshape(-1) for p in model.parameters()]).numpy().tobytes())
        return result

    torch.optim.AdamW.step = step  # type: ignore[method-assign,assignment]
    try:
        fit = train_reward_model(model, preference_task(pairs, seed), RewardTrainerConfig(epochs=epochs),
                                 np.random.default_rng(seed), world=world)  # fmt: skip
    finally:
        torch.optim.AdamW.step = original  # type: ignore[method-assign]
    return {"fit": fit, "steps": digest.hexdigest(), "rank": world.rank}


def _reward_rank(rank: int, size: int, port: int, seed: int, pairs: int, epochs: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(size),
                      LOCAL_RANK=str(rank))  # fmt: skip
    from baselines.common.distributed import close_world, finish_world

    try:
        Path(out, f"rank{rank}.json").write_text(json.dumps(train_reward(seed, pairs, epochs)))
    except BaseException:
        close_world()
        raise
    finish_world()


def reward_part(args: argparse.Namespace) -> None:
    import multiprocessing

    context = multiprocessing.get_context("spawn")
    rows = []
    for seed in range(args.first_seed, args.first_seed + args.seeds):
        alone = train_reward(seed, args.pairs, args.epochs)
        with tempfile.TemporaryDirectory(prefix="ranks-reward-") as tmp, socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
            sock.close()
            workers = [context.Process(target=_reward_rank, args=(r, args.ranks, port, seed, args.pairs, args.epochs,
                                                                  tmp)) for r in range(args.ranks)]  # fmt: skip
            for worker in workers:
                worker.start()
            for worker in workers:
                worker.join()
            if any(worker.exitcode != 0 for worker in workers):
                raise SystemExit(f"seed {seed}: a rank failed ({[worker.exitcode for worker in workers]})")
            ranks = [json.loads(Path(tmp, f"rank{r}.json").read_text()) for r in range(args.ranks)]
        identical = len({r["steps"] for r in ranks}) == 1
        rows.append((seed, alone["fit"], ranks[0]["fit"], identical))
        print(f"seed {seed}: held-out accuracy {alone['fit']['val_accuracy']:.3f} in one process, "
              f"{ranks[0]['fit']['val_accuracy']:.3f} over {args.ranks} ranks; parameters identical across ranks "
              f"after every step: {identical}", flush=True)  # fmt: skip
    differences = [multi["val_accuracy"] - one["val_accuracy"] for _, one, multi, _ in rows]
    print(f"\nreward training, {args.pairs} labels, seeds {args.first_seed}-{args.first_seed + args.seeds - 1} "
          f"(commit {_commit()})")  # fmt: skip
    print(f"held-out accuracy, one process: median {statistics.median(r[1]['val_accuracy'] for r in rows):.3f}; "
          f"{args.ranks} ranks: median {statistics.median(r[2]['val_accuracy'] for r in rows):.3f}; "
          f"difference per seed {', '.join(f'{d:+.3f}' for d in differences)}")  # fmt: skip
    print(f"parameters identical across ranks after every step: {sum(r[3] for r in rows)} of {len(rows)} seeds")


def _commit() -> str:
    done = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    return done.stdout.strip() or "unknown"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--part", choices=("ppo", "reward"), default="ppo")
    parser.add_argument("--env", default="CartPole-v1", help="--part ppo: the env")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--first-seed", type=int, default=0)
    parser.add_argument("--ranks", type=int, default=2)
    parser.add_argument("--total-steps", type=int, default=None, help="--part ppo (default: the env's PPO row)")
    parser.add_argument("--ppo-flags", default="", help="--part ppo: more rlhf ppo flags, e.g. '--num-envs 256'")
    parser.add_argument("--pairs", type=int, default=2000, help="--part reward: labels per seed")
    parser.add_argument("--epochs", type=int, default=30, help="--part reward: most epochs (early stopping)")
    args = parser.parse_args(argv)
    (ppo_part if args.part == "ppo" else reward_part)(args)
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    sys.exit(main())
