"""Data-parallel PPO: two ranks (``torchrun --nproc_per_node=2 -m rlhf ppo``) against one process at the same total
env count, same settings, same seeds (docs/distributed.md).

Target (issue 16), on this 2-core machine: at least 1.6x the env steps per second of one rank, and the same
learning: CartPole-v1 >= 475 at 100k total steps on 5 of 5 seeds. The runs go one at a time (two ranks take both
cores), alternating one rank and two per seed so that both meet the same machine load; each run is one thread per
rank (torchrun sets ``OMP_NUM_THREADS=1``; ``--torch-threads`` is 1 by default).

Run: ``.venv/bin/python benchmarks/ppo_ranks.py [--env CartPole-v1] [--seeds 5] [--first-seed 0]``. The ratio
counts the training loop (``steps_per_second`` of ``summary.json``: rank 0's wall clock from the first rollout to the
end, the one final evaluation included: ``--eval-every 0``, as rank 0 alone evaluates while the others wait), not
torchrun's start-up, which is printed apart.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
TARGET_RETURN = {"CartPole-v1": 475.0}
TARGET_SPEEDUP = 1.6


def run(ranks: int, env: str, seed: int, total_steps: int | None, out: Path) -> tuple[dict[str, Any], float]:
    """One training run with ``ranks`` processes; its summary.json and the command's wall seconds."""
    flags = ["ppo", "--env", env, "--seed", str(seed), "--out", str(out), "--eval-every", "0"]
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
    return json.loads((out / "summary.json").read_text()), wall


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--env", default="CartPole-v1")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--first-seed", type=int, default=0)
    parser.add_argument("--ranks", type=int, default=2)
    parser.add_argument("--total-steps", type=int, default=None, help="default: the env's PPO row")
    args = parser.parse_args(argv)
    rows: dict[int, list[tuple[dict[str, Any], float]]] = {1: [], args.ranks: []}
    with tempfile.TemporaryDirectory(prefix="ppo-ranks-") as tmp:
        for seed in range(args.first_seed, args.first_seed + args.seeds):
            for ranks in (1, args.ranks) if seed % 2 == 0 else (args.ranks, 1):
                summary, wall = run(ranks, args.env, seed, args.total_steps, Path(tmp) / f"{ranks}-{seed}")
                rows[ranks].append((summary, wall))
                print(f"{args.env} seed {seed}, {ranks} rank(s): return {summary['eval_return_mean']:.1f}, "
                      f"{summary['steps_per_second']:.0f} steps/s, {wall:.1f} s with start-up", flush=True)  # fmt: skip
    speeds = {ranks: statistics.median(s["steps_per_second"] for s, _ in runs) for ranks, runs in rows.items()}
    speedup = speeds[args.ranks] / speeds[1]
    print(f"\n{args.env}, seeds {args.first_seed}-{args.first_seed + args.seeds - 1}, total steps as the env's row "
          f"unless --total-steps (commit {_commit()})")  # fmt: skip
    print("ranks | returns | median steps/s | median wall s (with start-up)")
    for ranks, runs in rows.items():
        returns = ", ".join(f"{s['eval_return_mean']:.1f}" for s, _ in runs)
        print(f"{ranks} | {returns} | {speeds[ranks]:.0f} | {statistics.median(w for _, w in runs):.1f}")
    print(f"speed-up of {args.ranks} ranks over 1: {speedup:.2f}x (target >= {TARGET_SPEEDUP}x)")
    target = TARGET_RETURN.get(args.env)
    if target is not None:
        for ranks, runs in rows.items():
            hits = sum(s["eval_return_mean"] >= target for s, _ in runs)
            print(f"{ranks} rank(s): {hits} of {len(runs)} seeds >= {target:.0f}")
    return 0


def _commit() -> str:
    done = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    return done.stdout.strip() or "unknown"


if __name__ == "__main__":
    sys.exit(main())
