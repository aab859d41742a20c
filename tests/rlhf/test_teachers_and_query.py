"""B-Pref teachers' statistics on a fixed set of pairs, and query selection rules."""

from __future__ import annotations

import math

import numpy as np
import pytest

from baselines.common.errors import ConfigError
from rlhf.query import score_pairs, select_pairs
from rlhf.segments import Segment, new_segment_id
from rlhf.teachers import SimulatedTeacher, make_teacher


def _segment(rewards: list[float]) -> Segment:
    length = len(rewards)
    return Segment(
        new_segment_id(),
        np.zeros((length, 1)),
        np.zeros(length),
        np.array(rewards, dtype=np.float32),
        np.ones(length, bool),
    )


def _pairs(count: int, seed: int = 0) -> list[tuple[Segment, Segment]]:
    rng = np.random.default_rng(seed)
    return [(_segment(list(rng.normal(size=5))), _segment(list(rng.normal(size=5)))) for _ in range(count)]


def test_oracle_prefers_higher_return_and_ties_equal() -> None:
    oracle = make_teacher("oracle")
    rng = np.random.default_rng(0)
    assert oracle.choose(_segment([1, 1]), _segment([0, 1]), rng) == "a"
    assert oracle.choose(_segment([0, 0]), _segment([0, 1]), rng) == "b"
    assert oracle.choose(_segment([1, 0]), _segment([0, 1]), rng) == "tie"


def test_mistake_flips_about_epsilon_of_labels() -> None:
    pairs = _pairs(4000)
    oracle, mistake = make_teacher("oracle"), make_teacher("mistake", epsilon=0.2)
    rng = np.random.default_rng(1)
    flips = np.mean([oracle.choose(a, b, rng) != mistake.choose(a, b, rng) for a, b in pairs])
    assert abs(flips - 0.2) < 0.02


def test_noisy_teacher_follows_bradley_terry() -> None:
    teacher = make_teacher("noisy", beta=1.0)
    a, b = _segment([1.0]), _segment([0.0])
    rng = np.random.default_rng(2)
    rate = np.mean([teacher.choose(a, b, rng) == "a" for _ in range(20_000)])
    assert abs(rate - 1 / (1 + math.exp(-1.0))) < 0.01


def test_myopic_teacher_weights_the_end_of_the_segment() -> None:
    myopic = make_teacher("myopic", gamma=0.5)
    early, late = _segment([3.0, 0.0, 0.0]), _segment([0.0, 0.0, 1.0])
    rng = np.random.default_rng(0)
    assert make_teacher("oracle").choose(early, late, rng) == "a"
    assert myopic.choose(early, late, rng) == "b"  # 3 * 0.25 < 1
    assert myopic.segment_return(early) == pytest.approx(0.75)


def test_skip_and_equal_teachers() -> None:
    rng = np.random.default_rng(0)
    skip = make_teacher("skip", threshold=0.0)
    assert skip.choose(_segment([-1.0]), _segment([-2.0]), rng) == "skip"
    assert skip.choose(_segment([1.0]), _segment([-2.0]), rng) == "a"
    equal = make_teacher("equal", threshold=0.5)
    assert equal.choose(_segment([1.0]), _segment([1.3]), rng) == "tie"
    assert equal.choose(_segment([1.0]), _segment([2.0]), rng) == "b"
    with pytest.raises(ConfigError, match="needs --teacher-threshold"):
        make_teacher("skip")
    with pytest.raises(ConfigError, match="unknown teacher"):
        make_teacher("lazy")
    with pytest.raises(ConfigError, match="epsilon"):
        SimulatedTeacher(epsilon=2.0)


def test_query_scores_disagreement_and_entropy() -> None:
    probs = np.array([[0.5, 0.9, 0.1], [0.5, 0.1, 0.1]])  # members x pairs
    rng = np.random.default_rng(0)
    disagreement = score_pairs("disagreement", probs, rng)
    np.testing.assert_allclose(disagreement, [0.0, 0.16, 0.0])
    entropy = score_pairs("entropy", probs, rng)
    assert entropy[0] == pytest.approx(math.log(2)) and entropy[2] < entropy[0]
    candidates = _pairs(3)
    chosen, priorities = select_pairs("disagreement", candidates, 1, probs, rng)
    assert chosen[0] is candidates[1] and priorities[0] == pytest.approx(0.16)
    uniform, _ = select_pairs("uniform", candidates, 2, None, rng)
    assert len(uniform) == 2
