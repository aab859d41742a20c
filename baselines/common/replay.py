"""Replay memory for off-policy agents: a preallocated NumPy ring buffer with n-step returns, and proportional
prioritized replay on a sum-tree (Schaul et al. 2016, https://arxiv.org/abs/1511.05952).

Layout: row ``t`` of every array holds the transitions of all ``num_envs`` sub-envs at vector step ``t``; a
transition's flat index is ``row * num_envs + env``. ``terminated`` ends the return (no bootstrap); ``truncated``
(time limit, or a run cut by a resume) ends the episode but the target still bootstraps from the stored final
observation.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np
import torch


class Batch(NamedTuple):
    """Sampled transitions with their n-step returns. Shapes: ``(batch, ...)``.

    The TD target is ``returns + discounts * max_a Q(next_obs, a)``: ``discounts`` is ``gamma**m`` for an
    ``m``-step return that ends in a bootstrap and 0 when the episode terminated inside the window.
    """

    obs: np.ndarray
    actions: np.ndarray
    returns: np.ndarray
    next_obs: np.ndarray
    discounts: np.ndarray
    indices: np.ndarray
    weights: np.ndarray


class ReplayBuffer:
    """Ring buffer of ``capacity`` transitions (``capacity // num_envs`` rows of ``num_envs``), uniform sampling."""

    def __init__(self, capacity: int, obs_shape: tuple[int, ...], num_envs: int = 1) -> None:
        self.num_envs = num_envs
        self.rows = max(capacity // num_envs, 1)
        self.obs = np.zeros((self.rows, num_envs, *obs_shape), dtype=np.float32)
        self.next_obs = np.zeros_like(self.obs)
        self.actions = np.zeros((self.rows, num_envs), dtype=np.int64)
        self.rewards = np.zeros((self.rows, num_envs), dtype=np.float32)
        self.terminated = np.zeros((self.rows, num_envs), dtype=bool)
        self.truncated = np.zeros((self.rows, num_envs), dtype=bool)
        self.pos = 0  # the row the next add writes
        self.full = False

    @property
    def capacity(self) -> int:
        return self.rows * self.num_envs

    def __len__(self) -> int:
        """Transitions stored."""
        return (self.rows if self.full else self.pos) * self.num_envs

    def add(
        self,
        obs: np.ndarray,
        actions: np.ndarray,
        rewards: np.ndarray,
        next_obs: np.ndarray,
        terminated: np.ndarray,
        truncated: np.ndarray,
    ) -> np.ndarray:
        """Store one vector step (arrays of shape ``(num_envs, ...)``); return the flat indices written."""
        row = self.pos
        self.obs[row] = obs
        self.next_obs[row] = next_obs
        self.actions[row] = actions
        self.rewards[row] = rewards
        self.terminated[row] = terminated
        self.truncated[row] = truncated
        self.pos = (row + 1) % self.rows
        self.full = self.full or self.pos == 0
        return row * self.num_envs + np.arange(self.num_envs)

    def cut_episodes(self) -> None:
        """Mark the newest transition of every sub-env as truncated (a resumed run restarts its envs)."""
        if len(self):
            self.truncated[(self.pos - 1) % self.rows] = True

    def sample_indices(self, batch_size: int, rng: np.random.Generator) -> np.ndarray:
        """Flat indices drawn uniformly with replacement from the stored transitions."""
        return rng.integers(0, len(self), size=batch_size)

    def gather(self, indices: np.ndarray, n_step: int, gamma: float, weights: np.ndarray | None = None) -> Batch:
        """The transitions at flat ``indices`` with n-step returns (Sutton & Barto 2018, eq. 7.1).

        The return from row ``t`` sums ``gamma**k r_{t+k}`` for ``k < n_step``, stopping early at the end of an
        episode (terminated: discount 0; truncated: bootstrap from the final observation) or at the newest stored
        row (a shorter return that bootstraps there; never crossing into the oldest data of the ring).
        """
        rows, envs = np.divmod(indices, self.num_envs)
        if n_step == 1:
            last_rows, returns, steps = rows, self.rewards[rows, envs], np.ones(len(rows), dtype=np.int64)
        else:
            offsets = np.arange(n_step)
            window = (rows[:, None] + offsets) % self.rows  # (batch, n_step)
            newer = (self.pos - 1 - rows) % self.rows  # rows stored after row t in this column
            ended = self.terminated[window, envs[:, None]] | self.truncated[window, envs[:, None]]
            ended_before = (np.cumsum(ended, axis=1) - ended) > 0
            used = (offsets <= newer[:, None]) & ~ended_before
            steps = used.sum(axis=1)
            discounted = self.rewards[window, envs[:, None]] * (gamma**offsets).astype(np.float32)
            returns = np.where(used, discounted, 0.0).sum(axis=1, dtype=np.float32)
            last_rows = window[np.arange(len(rows)), steps - 1]
        discounts = np.where(self.terminated[last_rows, envs], 0.0, gamma**steps).astype(np.float32)
        return Batch(
            obs=self.obs[rows, envs],
            actions=self.actions[rows, envs],
            returns=returns.astype(np.float32, copy=False),
            next_obs=self.next_obs[last_rows, envs],
            discounts=discounts,
            indices=indices,
            weights=np.ones(len(rows), dtype=np.float32) if weights is None else weights,
        )

    def state_dict(self) -> dict[str, Any]:
        arrays = ("obs", "next_obs", "actions", "rewards", "terminated", "truncated")
        return {
            **{name: torch.from_numpy(getattr(self, name)) for name in arrays},
            "pos": self.pos,
            "full": self.full,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for name in ("obs", "next_obs", "actions", "rewards", "terminated", "truncated"):
            getattr(self, name)[...] = state[name].numpy()
        self.pos, self.full = int(state["pos"]), bool(state["full"])


class SumTree:
    """A binary tree over ``capacity`` leaves whose nodes hold the sum of their children, in one float64 array.

    Leaf ``i`` lives at node ``leaf_start + i``; node ``k``'s children are ``2k`` and ``2k + 1``; the root is 1.
    Updates and prefix-sum searches are vectorized over a batch: one NumPy operation per tree level.
    """

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.depth = max(capacity - 1, 0).bit_length()
        self.leaf_start = 1 << self.depth
        self.nodes = np.zeros(2 * self.leaf_start, dtype=np.float64)

    @property
    def total(self) -> float:
        return float(self.nodes[1])

    @property
    def leaves(self) -> np.ndarray:
        return self.nodes[self.leaf_start : self.leaf_start + self.capacity]

    def update(self, indices: np.ndarray, values: np.ndarray) -> None:
        """Set leaves ``indices`` to ``values`` and refresh their ancestors (duplicate indices: the last wins)."""
        nodes = np.asarray(indices, dtype=np.int64) + self.leaf_start
        self.nodes[nodes] = values
        for _ in range(self.depth):
            # Duplicated parents are written several times with the same value (their children are final).
            nodes = nodes >> 1
            self.nodes[nodes] = self.nodes[2 * nodes] + self.nodes[2 * nodes + 1]

    def find(self, prefix_sums: np.ndarray) -> np.ndarray:
        """For each value ``u`` in ``[0, total)``, the leaf ``i`` with ``sum(leaves[:i]) <= u < sum(leaves[:i+1])``."""
        nodes = np.ones(len(prefix_sums), dtype=np.int64)
        remaining = np.asarray(prefix_sums, dtype=np.float64).copy()
        for _ in range(self.depth):
            left = 2 * nodes
            left_sums = self.nodes[left]
            go_right = remaining >= left_sums
            remaining -= np.where(go_right, left_sums, 0.0)
            nodes = left + go_right
        return nodes - self.leaf_start


class PrioritizedSampler:
    """Proportional prioritization: ``P(i) = p_i / sum_k p_k`` with ``p_i = (|delta_i| + eps) ** alpha``.

    New transitions get the largest priority seen so far, so each is replayed at least once soon. Importance
    weights ``w_i = (N P(i)) ** -beta``, divided by the largest weight in the buffer, which is
    ``(N P_min) ** -beta``; hence ``w_i = (p_i / p_min) ** -beta``.
    """

    def __init__(self, capacity: int, alpha: float, eps: float = 1e-6) -> None:
        self.tree = SumTree(capacity)
        self.alpha = alpha
        self.eps = eps
        self.max_priority = 1.0  # already raised to alpha

    def add(self, indices: np.ndarray) -> None:
        self.tree.update(indices, np.full(len(indices), self.max_priority))

    def sample(
        self, batch_size: int, size: int, beta: float, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray]:
        """Draw ``batch_size`` flat indices among the first ``size`` leaves (stratified over ``batch_size`` equal
        segments of the total priority); return them and their normalized importance weights."""
        total = self.tree.total
        prefix = (np.arange(batch_size) + rng.random(batch_size)) * (total / batch_size)
        indices = np.minimum(self.tree.find(np.minimum(prefix, np.nextafter(total, 0.0))), size - 1)
        priorities = self.tree.leaves[indices]
        min_priority = self.tree.leaves[:size].min()
        weights = (priorities / min_priority) ** -beta
        return indices, weights.astype(np.float32)

    def update(self, indices: np.ndarray, td_errors: np.ndarray) -> None:
        """Set the priorities of replayed transitions from their new absolute TD errors."""
        priorities = (np.abs(td_errors).astype(np.float64) + self.eps) ** self.alpha
        self.tree.update(indices, priorities)
        self.max_priority = max(self.max_priority, float(priorities.max()))

    def state_dict(self) -> dict[str, Any]:
        return {"nodes": torch.from_numpy(self.tree.nodes), "max_priority": self.max_priority}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.tree.nodes[...] = state["nodes"].numpy()
        self.max_priority = float(state["max_priority"])
