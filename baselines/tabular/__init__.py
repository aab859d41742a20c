"""Tabular methods: configurable grid worlds, dynamic programming, TD control.

Importing this package registers ``GridWorld-v0`` (and ``KArmedBandit-v0``) with gymnasium.
"""

from baselines.common.envs import register_envs

register_envs()
