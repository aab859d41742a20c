"""Which pairs to ask about: uniform sampling, ensemble disagreement, or preference entropy.

Active selection scores ``candidate_factor`` times more random pairs than needed and keeps the most informative
(Christiano et al. 2017 use ensemble disagreement; B-Pref compares these rules). Scores become the queries'
priorities, so a labeling service serves the most informative pair first.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal, Protocol

import numpy as np
import torch

from rlhf.segments import Segment

QueryMethod = Literal["uniform", "disagreement", "entropy"]


class ScoresSegments(Protocol):
    def segment_returns(self, features: torch.Tensor) -> torch.Tensor:
        """Per-member predicted returns ``(E, N)`` of segments with features ``(N, L, F)``."""
        ...


def preference_probabilities(model: ScoresSegments, features_a: np.ndarray, features_b: np.ndarray) -> np.ndarray:
    """``P(a > b)`` per ensemble member, ``(E, N)``, under the Bradley-Terry model of predicted returns (computed
    on the model's device, e.g. a reward model trained on a GPU)."""
    device = _device_of(model)
    with torch.no_grad():
        returns_a = model.segment_returns(torch.from_numpy(features_a).to(device))
        returns_b = model.segment_returns(torch.from_numpy(features_b).to(device))
        return torch.sigmoid(returns_a - returns_b).cpu().numpy()


def _device_of(model: ScoresSegments) -> torch.device:
    parameter = next(model.parameters(), None) if isinstance(model, torch.nn.Module) else None
    return torch.device("cpu") if parameter is None else parameter.device


def score_pairs(method: QueryMethod, probabilities: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Informativeness of each pair ``(N,)`` from member probabilities ``(E, N)`` (higher is asked first).

    disagreement: variance over members of P(a > b); entropy: binary entropy of the mean P(a > b);
    uniform: random scores (a random subset).
    """
    if method == "uniform":
        return np.asarray(rng.random(size=probabilities.shape[1]))
    if method == "disagreement":
        return probabilities.var(axis=0)
    p = np.clip(probabilities.mean(axis=0), 1e-6, 1 - 1e-6)
    return -(p * np.log(p) + (1 - p) * np.log(1 - p))


def select_pairs(
    method: QueryMethod,
    candidates: Sequence[tuple[Segment, Segment]],
    count: int,
    probabilities: np.ndarray | None,
    rng: np.random.Generator,
) -> tuple[list[tuple[Segment, Segment]], np.ndarray]:
    """The ``count`` best candidates and their scores (as priorities), best first."""
    if method != "uniform" and probabilities is None:
        raise ValueError(f"query method {method} needs the reward model's probabilities")
    probs = probabilities if probabilities is not None else np.zeros((1, len(candidates)))
    scores = score_pairs(method, probs, rng)
    order = np.argsort(-scores, kind="stable")[:count]
    return [candidates[i] for i in order], scores[order]
