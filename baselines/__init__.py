"""Classic RL baselines: bandits, tabular methods, DQN and PPO.

Importing this package does nothing else: ``baselines.common.envs.register_envs()`` registers ``GridWorld-v0`` and
``KArmedBandit-v0`` with gymnasium (``import baselines.tabular`` and ``import baselines.bandits.env`` call it, and
so does every env factory of ``baselines.common.envs``).
"""
