"""Segments: windows, padding with the absorbing state at terminations (not truncations), features, pairs."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

from baselines.common.errors import ConfigError
from rlhf.segments import (
    Segment,
    SegmentCutter,
    SegmentPool,
    absorbing_features,
    describe_action_space,
    segment_features,
    step_features,
)


def _rollout(steps: int, envs: int, ends: dict[tuple[int, int], str]) -> tuple[np.ndarray, ...]:
    obs = np.arange(steps * envs * 2, dtype=np.float32).reshape(steps, envs, 2) + 1.0
    actions = np.ones((steps, envs), dtype=np.int64)
    rewards = np.ones((steps, envs), dtype=np.float32)
    terminated = np.zeros((steps, envs), dtype=bool)
    truncated = np.zeros((steps, envs), dtype=bool)
    for (t, env), kind in ends.items():
        (terminated if kind == "term" else truncated)[t, env] = True
    return obs, actions, rewards, terminated, truncated


def test_termination_pads_with_absorbing_state_and_zero_reward() -> None:
    cutter = SegmentCutter(num_envs=1, segment_length=4, rng=np.random.default_rng(0))
    obs, actions, rewards, term, trunc = _rollout(6, 1, {(5, 0): "term"})
    segments = cutter.add(obs, actions, rewards, term, trunc)
    assert segments, "a terminated episode of 6 steps gives at least one segment"
    last = segments[-1]
    assert last.length == 4 and last.mask[0]
    padded = ~last.mask
    assert padded.any(), "the last window runs past the termination"
    assert np.all(last.true_rewards[padded] == 0) and np.all(last.obs[padded] == 0)
    assert last.true_return == last.real_steps
    # Every real step appears in order, windows do not overlap.
    firsts = [s.obs[0, 0] for s in segments]
    assert firsts == sorted(firsts)


def test_truncation_and_rollout_edge_never_pad() -> None:
    cutter = SegmentCutter(num_envs=2, segment_length=4, rng=np.random.default_rng(1))
    obs, actions, rewards, term, trunc = _rollout(10, 2, {(6, 0): "trunc"})
    segments = cutter.add(obs, actions, rewards, term, trunc)
    assert segments and all(s.mask.all() for s in segments)
    # env 1's episode (10 steps so far) continues into the next rollout and terminates after 13 steps; the random
    # offset skips at most 3 steps, and env 0's new episode (6 steps, unfinished) waits.
    more = cutter.add(*_rollout(3, 2, {(2, 1): "term"}))
    assert 10 <= sum(s.real_steps for s in more) <= 13


def test_episodes_span_rollouts() -> None:
    cutter = SegmentCutter(num_envs=1, segment_length=5, rng=np.random.default_rng(0))
    assert cutter.add(*_rollout(3, 1, {})) == []
    segments = cutter.add(*_rollout(3, 1, {(2, 0): "term"}))
    assert len(segments) >= 1
    assert segments[0].length == 5


def test_segment_length_must_be_positive() -> None:
    with pytest.raises(ConfigError, match="segment length"):
        SegmentCutter(1, 0, np.random.default_rng(0))


def test_features_one_hot_actions_and_absorbing_flag() -> None:
    space = gym.spaces.Discrete(3)
    features = step_features(np.array([[1.0, 2.0], [3.0, 4.0]]), np.array([2, 0]), np.array([False, True]), space)
    np.testing.assert_array_equal(features, [[1, 2, 0, 0, 1, 0], [0, 0, 0, 0, 0, 1]])
    np.testing.assert_array_equal(absorbing_features(2, space), features[1])
    box = gym.spaces.Box(-1, 1, (2,))
    assert step_features(np.zeros((5, 3)), np.zeros((5, 2)), np.zeros(5, bool), box).shape == (5, 6)


def test_segment_features_and_pair_sampling() -> None:
    cutter = SegmentCutter(num_envs=3, segment_length=4, rng=np.random.default_rng(0))
    segments = cutter.add(*_rollout(20, 3, {(9, 0): "term", (19, 1): "term", (19, 2): "trunc"}))
    features = segment_features(segments, gym.spaces.Discrete(2))
    assert features.shape == (len(segments), 4, 2 + 2 + 1)
    pool = SegmentPool(capacity=5)
    pool.extend(segments)
    assert len(pool) == 5
    pairs = pool.sample_pairs(50, np.random.default_rng(0))
    assert all(a is not b for a, b in pairs)


def test_describe_action_space() -> None:
    assert describe_action_space(gym.spaces.Discrete(3)) == {"type": "Discrete", "n": 3}
    box = describe_action_space(gym.spaces.Box(-2.0, 2.0, shape=(1,)))
    assert box == {"type": "Box", "shape": [1], "low": [-2.0], "high": [2.0]}
    with pytest.raises(ConfigError, match="Discrete or Box"):
        describe_action_space(gym.spaces.MultiBinary(3))


def test_ending_share_puts_terminal_segments_into_pairs() -> None:
    """Few segments reach a termination: uniform pairs include one rarely; with ending_share 0.5 at least half the
    pairs do (their first segment), the rest stay uniform; without any such segment, sampling is uniform."""
    cutter = SegmentCutter(num_envs=4, segment_length=4, rng=np.random.default_rng(0))
    ends = {(t, env): "trunc" for t in (39,) for env in range(4)} | {(5, 0): "term", (21, 1): "term"}
    segments = cutter.add(*_rollout(40, 4, ends))
    ending = {id(s) for s in segments if not s.mask.all()}
    assert 1 <= len(ending) <= 0.1 * len(segments)
    pool = SegmentPool(capacity=100)
    pool.extend(segments)

    def with_ending(pairs: list[tuple[Segment, Segment]]) -> int:
        return sum(id(a) in ending or id(b) in ending for a, b in pairs)

    uniform = pool.sample_pairs(400, np.random.default_rng(1))
    stratified = pool.sample_pairs(400, np.random.default_rng(1), ending_share=0.5)
    assert with_ending(uniform) < 0.3 * 400 and with_ending(stratified) >= 200
    assert all(a is not b for a, b in stratified)
    no_ending = SegmentPool(capacity=100)
    no_ending.extend(s for s in segments if s.mask.all())
    assert len(no_ending.sample_pairs(10, np.random.default_rng(1), ending_share=1.0)) == 10
