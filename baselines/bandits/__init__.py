"""Bandits: vectorized k-armed testbeds and agents, Sutton & Barto chapter-2 experiments (numpy only).

``KArmedBandit-v0``, one bandit as a gymnasium env, is registered by importing :mod:`baselines.bandits.env`.
"""
