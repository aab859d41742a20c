"""Labeler weights against a random labeler: three labelers 90% right and one at random label a toy task (issue 12);
reward models trained unweighted, weighted by ``rlhf.labelers``, and without the random labeler's labels, scored on
1000 clean held-out pairs. The labeler-weights table of docs/rlhf.md comes from these runs:

    python benchmarks/labeler_weights.py --pairs 200 --answers 2 --seeds 12
    python benchmarks/labeler_weights.py --pairs 400 --answers 1 --seeds 8
    python benchmarks/labeler_weights.py --pairs 400 --answers 1 --seeds 8 --cross-fit

``--cross-fit``: the model's P(a) of each pair comes from a model trained on the other half of the pairs (out of
sample), and counts fully (``model_discount=1``). ``--val-fraction 0.1 --epochs 40``: the trainer's early stopping.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse
import statistics
import time

import numpy as np
import torch

from rlhf.labelers import estimate_labeler_quality, label_weights
from rlhf.reward import (
    PreferenceData,
    RewardModel,
    RewardModelConfig,
    RewardTrainerConfig,
    build_reward_model,
    evaluate_reward_model,
    train_reward_model,
)
from rlhf.reward.trainer import pair_returns
from rlhf.store import LabeledPair

ACCURACIES = (0.9, 0.9, 0.9, 0.5)
RANDOM = 4
TRUE_WEIGHTS = np.array([0.5, -1.0, 0.25, 0.75])


def toy_pairs(num_pairs: int, rng: np.random.Generator) -> PreferenceData:
    """Pairs of 10-step segments of 4 random features; segment a is better when its sum of tanh(w . x) is higher."""
    features_a, features_b = (rng.normal(size=(num_pairs, 10, 4)).astype(np.float32) for _ in range(2))
    returns_a, returns_b = (np.tanh(f @ TRUE_WEIGHTS).sum(axis=-1) for f in (features_a, features_b))
    return PreferenceData(features_a, features_b, (returns_a > returns_b).astype(np.float32))


def crowd(pool: PreferenceData, answers: int, rng: np.random.Generator) -> list[LabeledPair]:
    """Each pair answered by ``answers`` of the four labelers (ids 1-4), drawn at random."""
    labels: list[LabeledPair] = []
    for query_id, target in enumerate(pool.targets):
        for index in rng.choice(len(ACCURACIES), size=answers, replace=False):
            says_a = bool(target == 1.0) == (rng.random() < ACCURACIES[index])
            labeler = int(index) + 1
            choice = "a" if says_a else "b"
            labels.append(LabeledPair(len(labels), query_id, "", "", choice, labeler, f"l{labeler}", 1.0, 0.0, 0, True))
    return labels


def prob_a(model: RewardModel, pool: PreferenceData) -> np.ndarray:
    with torch.no_grad():
        returns_a, returns_b = pair_returns(model, torch.from_numpy(pool.features_a), torch.from_numpy(pool.features_b))
        return torch.sigmoid((returns_a - returns_b).mean(dim=0)).numpy()


def run_seed(seed: int, args: argparse.Namespace) -> dict[str, float]:
    rng = np.random.default_rng(seed)
    pool, test = toy_pairs(args.pairs, rng), toy_pairs(1000, np.random.default_rng(1000 + seed))
    labels = crowd(pool, args.answers, rng)
    rows = np.array([label.query_id for label in labels])
    targets = np.array([label.choice == "a" for label in labels], dtype=np.float32)
    config = RewardTrainerConfig(epochs=args.epochs, lr=3e-3, val_fraction=args.val_fraction)

    def train(keep: np.ndarray, weights: list[float] | None = None) -> RewardModel:
        data = PreferenceData(
            pool.features_a[rows[keep]],
            pool.features_b[rows[keep]],
            targets[keep],
            None if weights is None else np.asarray(weights)[keep],
        )
        model = build_reward_model(RewardModelConfig(feature_dim=4, seed=seed))
        train_reward_model(model, data, config, np.random.default_rng(seed))
        return model

    everyone = np.ones(len(labels), dtype=bool)
    unweighted = train(everyone)
    probabilities = prob_a(unweighted, pool)
    if args.cross_fit:
        half = np.random.default_rng(99 + seed).random(args.pairs) < 0.5
        for held_out in (True, False):
            model = train(half[rows] != held_out)
            probabilities[half == held_out] = prob_a(model, pool)[half == held_out]
    qualities = estimate_labeler_quality(
        labels, dict(enumerate(probabilities.tolist())), model_discount=1.0 if args.cross_fit else 0.5
    )
    weighted = train(everyone, label_weights(labels, qualities))
    careful_only = train(np.array([label.labeler_id != RANDOM for label in labels]))
    careful = [qualities[i] for i in (1, 2, 3)]
    random_quality = qualities[RANDOM]
    return {
        "unweighted": evaluate_reward_model(unweighted, test)["accuracy"],
        "weighted": evaluate_reward_model(weighted, test)["accuracy"],
        "careful only": evaluate_reward_model(careful_only, test)["accuracy"],
        "random/careful weight": random_quality.weight / min(quality.weight for quality in careful),
        "random model agreement": random_quality.model_agreement or float("nan"),
        "careful model agreement": statistics.mean(quality.model_agreement or float("nan") for quality in careful),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--pairs", type=int, default=200)
    parser.add_argument("--answers", type=int, default=2, help="answers per pair (1-4)")
    parser.add_argument("--seeds", type=int, default=12)
    parser.add_argument("--epochs", type=int, default=60)
    parser.add_argument("--val-fraction", type=float, default=0.0, help="0: no early stopping")
    parser.add_argument("--cross-fit", action="store_true", help="P(a) out of sample, counted fully")
    args = parser.parse_args()
    torch.set_num_threads(1)
    columns = ("unweighted", "weighted", "careful only", "random/careful weight", "random model agreement")
    print(f"{'seed':>4} " + " ".join(f"{name:>24}" for name in columns) + f" {'seconds':>8}")
    results = []
    for seed in range(args.seeds):
        start = time.perf_counter()
        results.append(run_seed(seed, args))
        row = " ".join(f"{results[-1][name]:>24.3f}" for name in columns)
        print(f"{seed:>4} {row} {time.perf_counter() - start:>8.1f}", flush=True)
    means = " ".join(f"{statistics.mean(r[name] for r in results):>24.3f}" for name in columns)
    print(f"{'mean':>4} {means}")
    better = sum(r["weighted"] > r["unweighted"] for r in results)
    print(f"weighted better than unweighted on {better} of {len(results)} seeds")


if __name__ == "__main__":
    main()
