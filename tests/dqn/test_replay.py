"""Exact checks of the replay buffer (n-step returns, wrap-around, terminated vs truncated) and the sum-tree."""

from __future__ import annotations

import numpy as np
import pytest

from baselines.common.replay import PrioritizedSampler, ReplayBuffer, SumTree

GAMMA = 0.9


def _fill(buffer: ReplayBuffer, steps: list[tuple[float, bool, bool]], env: int = 0) -> None:
    """Add one transition per ``(reward, terminated, truncated)``; obs is the step number, next obs 100 + step."""
    for t, (reward, terminated, truncated) in enumerate(steps):
        n = buffer.num_envs
        obs = np.full((n, 1), float(t))
        buffer.add(
            obs,
            np.full(n, t % 2),
            np.full(n, reward),
            obs + 100.0,
            np.full(n, terminated),
            np.full(n, truncated),
        )


def test_one_step_targets_bootstrap_on_truncation_not_on_termination() -> None:
    buffer = ReplayBuffer(10, (1,), 1)
    _fill(buffer, [(1.0, False, False), (2.0, True, False), (3.0, False, True)])
    batch = buffer.gather(np.array([0, 1, 2]), n_step=1, gamma=GAMMA)
    np.testing.assert_allclose(batch.returns, [1.0, 2.0, 3.0])
    np.testing.assert_allclose(batch.discounts, [GAMMA, 0.0, GAMMA])  # truncated: still bootstraps
    np.testing.assert_allclose(batch.next_obs[:, 0], [100.0, 101.0, 102.0])
    np.testing.assert_allclose(batch.obs[:, 0], [0.0, 1.0, 2.0])
    np.testing.assert_array_equal(batch.actions, [0, 1, 0])


def test_n_step_returns_stop_at_episode_ends_and_at_the_newest_row() -> None:
    buffer = ReplayBuffer(20, (1,), 1)
    # t:      0            1            2           3            4           5            6
    steps = [(1.0, False, False), (2.0, False, False), (3.0, True, False), (4.0, False, False),
             (5.0, False, True), (6.0, False, False), (7.0, False, False)]  # fmt: skip
    _fill(buffer, steps)
    batch = buffer.gather(np.arange(7), n_step=3, gamma=GAMMA)
    g = GAMMA
    expected_returns = [
        1 + g * 2 + g * g * 3,  # t=0: three steps, the last one terminates
        2 + g * 3,  # t=1: terminated at t=2
        3.0,  # t=2: terminates at once
        4 + g * 5,  # t=3: truncated at t=4 -> bootstrap from t=4's final obs
        5.0,  # t=4: truncated at once
        6 + g * 7,  # t=5: only t=6 is newer
        7.0,  # t=6: the newest row
    ]
    np.testing.assert_allclose(batch.returns, expected_returns, rtol=1e-6)
    np.testing.assert_allclose(batch.discounts, [0.0, 0.0, 0.0, g**2, g, g**2, g], rtol=1e-6)
    np.testing.assert_allclose(batch.next_obs[:, 0], [102, 102, 102, 104, 104, 106, 106])


def test_ring_wraps_around_and_n_step_never_crosses_into_the_oldest_rows() -> None:
    buffer = ReplayBuffer(4, (1,), 1)
    _fill(buffer, [(float(t), False, False) for t in range(6)])  # rows hold t = 4, 5, 2, 3
    assert len(buffer) == 4 and buffer.full and buffer.pos == 2
    np.testing.assert_allclose(buffer.obs[:, 0, 0], [4, 5, 2, 3])
    batch = buffer.gather(np.array([2, 3, 0, 1]), n_step=3, gamma=GAMMA)  # t = 2, 3, 4, 5
    g = GAMMA
    np.testing.assert_allclose(batch.returns, [2 + 3 * g + 4 * g * g, 3 + 4 * g + 5 * g * g, 4 + 5 * g, 5.0])
    np.testing.assert_allclose(batch.next_obs[:, 0], [104, 105, 105, 105])
    np.testing.assert_allclose(batch.discounts, [g**3, g**3, g**2, g], rtol=1e-6)


def test_vector_envs_keep_separate_columns() -> None:
    buffer = ReplayBuffer(8, (1,), num_envs=2)
    for t in range(3):
        buffer.add(
            np.array([[t], [10 + t]], dtype=float),
            np.array([0, 1]),
            np.array([1.0, 10.0]),
            np.array([[t + 1], [11 + t]], dtype=float),
            np.array([False, t == 0]),  # env 1 terminates at t = 0
            np.array([False, False]),
        )
    # flat index = row * num_envs + env
    batch = buffer.gather(np.array([0, 1]), n_step=3, gamma=GAMMA)
    np.testing.assert_allclose(batch.returns, [1 + GAMMA + GAMMA**2, 10.0])
    np.testing.assert_allclose(batch.discounts, [GAMMA**3, 0.0], rtol=1e-6)
    np.testing.assert_allclose(batch.obs[:, 0], [0, 10])


def test_cut_episodes_marks_the_newest_rows_truncated() -> None:
    buffer = ReplayBuffer(8, (1,), 1)
    _fill(buffer, [(1.0, False, False), (1.0, False, False)])
    buffer.cut_episodes()
    _fill(buffer, [(5.0, False, False)])
    batch = buffer.gather(np.array([0]), n_step=3, gamma=GAMMA)
    np.testing.assert_allclose(batch.returns, [1 + GAMMA])  # stops at the cut, ignores the new episode
    np.testing.assert_allclose(batch.discounts, [GAMMA**2], rtol=1e-6)


def test_state_dict_round_trip() -> None:
    buffer = ReplayBuffer(4, (1,), 1)
    _fill(buffer, [(float(t), t == 2, False) for t in range(5)])
    copy = ReplayBuffer(4, (1,), 1)
    copy.load_state_dict(buffer.state_dict())
    idx = np.arange(4)
    for a, b in zip(buffer.gather(idx, 2, GAMMA), copy.gather(idx, 2, GAMMA), strict=True):
        np.testing.assert_array_equal(a, b)
    assert (copy.pos, copy.full) == (buffer.pos, buffer.full)


def test_sum_tree_sums_and_prefix_search() -> None:
    tree = SumTree(5)  # 8 leaves, 3 are padding
    tree.update(np.array([0, 1, 2, 3, 4]), np.array([1.0, 2.0, 0.0, 3.0, 4.0]))
    assert tree.total == 10.0
    prefix = np.array([0.0, 0.99, 1.0, 2.99, 3.0, 5.99, 6.0, 9.99])
    np.testing.assert_array_equal(tree.find(prefix), [0, 0, 1, 1, 3, 3, 4, 4])  # leaf 2 (zero) never found
    tree.update(np.array([4, 4]), np.array([7.0, 1.0]))  # duplicates: the last value wins
    assert tree.total == 7.0
    np.testing.assert_allclose(tree.nodes[1:8], [7.0, 6.0, 1.0, 3.0, 3.0, 1.0, 0.0])


def test_sum_tree_of_one_leaf() -> None:
    tree = SumTree(1)
    tree.update(np.array([0]), np.array([2.5]))
    assert tree.total == 2.5
    np.testing.assert_array_equal(tree.find(np.array([0.0, 2.4])), [0, 0])


def test_prioritized_sampling_probabilities_match_priorities() -> None:
    sampler = PrioritizedSampler(capacity=8, alpha=0.5, eps=0.0)
    sampler.add(np.arange(4))
    td_errors = np.array([1.0, 4.0, 9.0, 16.0])  # priorities |td|^0.5 = 1, 2, 3, 4
    sampler.update(np.arange(4), td_errors)
    rng = np.random.default_rng(0)
    counts = np.zeros(4)
    for _ in range(2000):
        indices, _ = sampler.sample(64, size=4, beta=0.4, rng=rng)
        counts += np.bincount(indices, minlength=8)[:4]
    expected = np.array([1, 2, 3, 4]) / 10
    np.testing.assert_allclose(counts / counts.sum(), expected, atol=0.003)


def test_importance_weights_are_exact_and_normalized() -> None:
    sampler = PrioritizedSampler(capacity=4, alpha=1.0, eps=0.0)
    sampler.add(np.arange(4))
    sampler.update(np.arange(4), np.array([1.0, 2.0, 4.0, 8.0]))
    indices, weights = sampler.sample(16, size=4, beta=0.5, rng=np.random.default_rng(1))
    priorities = np.array([1.0, 2.0, 4.0, 8.0])
    probs = priorities / priorities.sum()
    raw = (4 * probs[indices]) ** -0.5  # (N P(i))^-beta
    np.testing.assert_allclose(weights, raw / (4 * probs.min()) ** -0.5, rtol=1e-6)
    assert weights.max() <= 1.0


def test_new_transitions_get_the_largest_priority_seen() -> None:
    sampler = PrioritizedSampler(capacity=4, alpha=1.0, eps=0.0)
    sampler.add(np.array([0]))
    sampler.update(np.array([0]), np.array([5.0]))
    sampler.add(np.array([1]))
    np.testing.assert_allclose(sampler.tree.leaves[:2], [5.0, 5.0])


@pytest.mark.parametrize("size", [1, 3])
def test_prioritized_sampling_stays_inside_the_stored_leaves(size: int) -> None:
    sampler = PrioritizedSampler(capacity=16, alpha=0.6)
    sampler.add(np.arange(size))
    indices, weights = sampler.sample(32, size=size, beta=1.0, rng=np.random.default_rng(0))
    assert indices.max() < size and np.all(weights == 1.0)
