"""Classic RL baselines: bandits, tabular methods, DQN and PPO.

Importing this package registers ``GridWorld-v0`` and ``KArmedBandit-v0`` with gymnasium.
"""

from baselines.bandits.env import register_bandit
from baselines.tabular.gridworld import register_gridworld

register_bandit()
register_gridworld()
