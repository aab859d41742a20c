"""GridWorld-v0: the gymnasium API, the transition model against sampled steps, the book presets, bad layouts."""

from __future__ import annotations

import warnings
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

from baselines.common.envs import register_envs
from baselines.common.errors import ConfigError
from baselines.tabular.gridworld import PRESETS, GridWorldEnv, make_layout

LEFT, DOWN, RIGHT, UP = 0, 1, 2, 3


def random_layout(rng: np.random.Generator) -> dict[str, Any]:
    """A random valid layout: every kind of cell, slip, wind and a time limit."""
    rows, cols = int(rng.integers(2, 6)), int(rng.integers(2, 7))
    cells = [(int(r), int(c)) for r, c in rng.permutation([(r, c) for r in range(rows) for c in range(cols)])]
    start, goal, trap, wall, cliff, jump_source, jump_target = (cells + [None] * 7)[:7]
    layout: dict[str, Any] = {"shape": (rows, cols), "start": start, "goals": {goal: float(rng.normal())}}
    if trap is not None:
        layout["traps"] = {trap: -float(rng.random())}
    if wall is not None:
        layout["walls"] = [wall]
    if cliff is not None:
        layout["cliffs"] = [cliff]
    if jump_source is not None and jump_target is not None:
        layout["jumps"] = {jump_source: (jump_target, 2.0)}
    layout["slip"] = float(rng.choice([0.0, 0.2, 1.0]))
    layout["wind"] = [int(w) for w in rng.integers(0, 3, size=cols)]
    layout["step_reward"] = float(rng.normal())
    layout["off_grid_reward"] = float(rng.choice([-1.0, 0.5]))
    layout["max_steps"] = int(rng.integers(2, 50))
    return layout


def test_register_twice_is_silent() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        register_envs()
        register_envs()
    assert isinstance(gym.make("GridWorld-v0").unwrapped, GridWorldEnv)


@pytest.mark.parametrize("preset", [None, *PRESETS])
@pytest.mark.parametrize("render_mode", [None, "ansi", "rgb_array"])
def test_check_env_passes_on_every_preset(preset: str | None, render_mode: str | None) -> None:
    env = gym.make("GridWorld-v0", preset=preset, render_mode=render_mode)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_env(env.unwrapped)


@pytest.mark.parametrize("seed", range(8))
def test_check_env_passes_on_random_layouts(seed: int) -> None:
    env = gym.make("GridWorld-v0", render_mode="rgb_array", **random_layout(np.random.default_rng(seed)))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_env(env.unwrapped)


def test_transition_model_rows_are_distributions() -> None:
    env = GridWorldEnv(**random_layout(np.random.default_rng(3)))
    for state, by_action in env.P.items():
        for outcomes in by_action.values():
            assert sum(prob for prob, *_ in outcomes) == pytest.approx(1.0)
            if env.layout.is_absorbing(env.layout.cell(state)):
                assert outcomes == [(1.0, state, 0.0, True)]


MIXED_LAYOUT: dict[str, Any] = {
    "shape": (4, 5),
    "start": (3, 0),
    "goals": {(0, 4): 1.0},
    "traps": {(1, 2): -1.0},
    "walls": [(2, 2)],
    "cliffs": [(3, 2), (3, 3)],
    "jumps": {(0, 0): ((2, 4), 3.0)},
    "wind": [0, 1, 0, 2, 0],
    "off_grid_reward": -2.0,
    "slip": 0.3,
}


@pytest.mark.parametrize(
    "env", [GridWorldEnv("windy", slip=0.3), GridWorldEnv(**MIXED_LAYOUT)], ids=["windy-slip", "mixed"]
)
def test_step_samples_from_the_transition_model(env: GridWorldEnv) -> None:
    env.reset(seed=0)
    samples = 300
    for state, by_action in env.P.items():
        if env.layout.is_absorbing(env.layout.cell(state)):
            continue
        for action, outcomes in by_action.items():
            probs = {(s, r, t): p for p, s, r, t in outcomes}
            counts = dict.fromkeys(probs, 0)
            for _ in range(samples):
                env.s = state
                next_state, reward, terminated, _, info = env.step(action)
                key = (next_state, reward, terminated)
                assert info["prob"] == probs[key]  # never an outcome outside the model
                counts[key] += 1
            for key, prob in probs.items():
                assert abs(counts[key] / samples - prob) <= 5 * np.sqrt(prob * (1 - prob) / samples) + 1e-9


def test_sutton_4x4_has_terminal_corners_and_minus_one_per_move() -> None:
    env = GridWorldEnv("sutton-4x4")
    assert env.P[0][LEFT] == [(1.0, 0, 0.0, True)] and env.P[15][UP] == [(1.0, 15, 0.0, True)]
    assert env.P[1][LEFT] == [(1.0, 0, -1.0, True)]
    assert env.P[4][UP] == [(1.0, 0, -1.0, True)]
    assert env.P[5][RIGHT] == [(1.0, 6, -1.0, False)]
    assert env.P[3][UP] == [(1.0, 3, -1.0, False)]  # off the grid: stay, -1


def test_sutton_5x5_jumps_and_off_grid_penalty() -> None:
    env = GridWorldEnv("sutton-5x5")
    a, a_prime, b, b_prime = 1, 21, 3, 13
    for action in range(4):
        assert env.P[a][action] == [(1.0, a_prime, 10.0, False)]
        assert env.P[b][action] == [(1.0, b_prime, 5.0, False)]
    assert env.P[0][UP] == [(1.0, 0, -1.0, False)]
    assert env.P[12][DOWN] == [(1.0, 17, 0.0, False)]


def test_sutton_5x5_truncates_at_max_steps() -> None:
    env = gym.make("GridWorld-v0", preset="sutton-5x5")
    env.reset(seed=0)
    for step in range(1, 101):
        _, _, terminated, truncated, _ = env.step(LEFT)
        assert not terminated and truncated == (step == 100)


def test_windy_pushes_up_by_the_wind_of_the_column_moved_from() -> None:
    env = GridWorldEnv("windy")
    state = env.layout.state
    assert env.P[state((3, 6))][RIGHT] == [(1.0, state((1, 7)), -1.0, False)]  # column 6 blows 2 up
    assert env.P[state((3, 5))][RIGHT] == [(1.0, state((2, 6)), -1.0, False)]  # column 5 blows 1 up
    assert env.P[state((0, 6))][LEFT] == [(1.0, state((0, 5)), -1.0, False)]  # the top edge stops the wind
    assert env.P[state((4, 7))][UP] == [(1.0, state((1, 7)), -1.0, False)]
    assert env.P[state((3, 8))][LEFT] == [(1.0, state((2, 7)), -1.0, False)]  # column 8 blows 1 up
    assert env.P[state((4, 8))][LEFT] == [(1.0, state((3, 7)), -1.0, True)]  # ...into the goal


def test_cliff_sends_back_to_start_without_ending() -> None:
    env = gym.make("GridWorld-v0", preset="cliff")
    start, _ = env.reset(seed=0)
    assert start == 36
    next_state, reward, terminated, truncated, _ = env.step(RIGHT)
    assert (next_state, reward, terminated, truncated) == (36, -100.0, False, False)
    base = env.unwrapped
    assert isinstance(base, GridWorldEnv)
    assert base.P[35][DOWN] == [(1.0, 47, -1.0, True)]


def test_slip_splits_between_perpendicular_moves() -> None:
    env = GridWorldEnv(shape=(3, 3), start=(1, 1), goals={(0, 0): 1.0}, slip=0.2)
    assert env.P[4][RIGHT] == [(0.8, 5, -1.0, False), (0.1, 7, -1.0, False), (0.1, 1, -1.0, False)]
    corner = GridWorldEnv(shape=(3, 3), start=(1, 1), goals={(0, 0): 1.0}, slip=0.2, walls=[(1, 2)])
    assert corner.P[4][RIGHT] == [(0.8, 4, -1.0, False), (0.1, 7, -1.0, False), (0.1, 1, -1.0, False)]
    assert env.P[1][LEFT] == [(0.8, 0, 0.0, True), (0.1, 1, -1.0, False), (0.1, 4, -1.0, False)]


def test_goal_reward_adds_to_the_step_reward() -> None:
    env = GridWorldEnv(shape=(1, 3), start=(0, 0), goals={(0, 2): 10.0}, traps={(0, 1): -5.0}, step_reward=-1.0)
    assert env.P[0][RIGHT] == [(1.0, 1, -6.0, True)]
    assert env.goal_states == frozenset({2})


def test_keyword_arguments_override_the_preset() -> None:
    env = GridWorldEnv("cliff", slip=0.1, step_reward=-2)
    assert env.layout.slip == 0.1 and env.layout.step_reward == -2.0
    assert env.layout.cliffs == PRESETS["cliff"].cliffs


def test_layouts_from_json_lists_are_normalized() -> None:
    layout = make_layout(shape=[2, 2], start=[0, 0], goals={(1, 1): 1}, walls=[[0, 1]], wind=[0, 1])
    assert layout.shape == (2, 2) and layout.walls == ((0, 1),) and layout.wind == (0, 1)


def test_render_modes() -> None:
    env = GridWorldEnv("cliff", render_mode="rgb_array")
    env.reset(seed=0)
    frame = env.render()
    assert isinstance(frame, np.ndarray)
    assert frame.shape == (4 * 32, 12 * 32, 3) and frame.dtype == np.uint8
    env.step(UP)
    moved = env.render()
    assert isinstance(moved, np.ndarray) and not np.array_equal(frame, moved)
    text_env = GridWorldEnv("windy", render_mode="ansi")
    text_env.reset(seed=0)
    text = text_env.render()
    assert isinstance(text, str)
    assert text.splitlines()[3] == "A......G.."


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"preset": "nope"}, "unknown GridWorld preset"),
        ({"colour": "red"}, "unknown GridWorld option"),
        ({"walls": [(0, 0)]}, "start (0, 0) is on a wall"),
        ({"goals": {(4, 0): 1.0}}, "outside the 4x4 grid"),
        ({"slip": 1.5}, "slip must be in [0, 1]"),
        ({"slip": -0.1}, "slip must be in [0, 1]"),
        ({"wind": [0, 1]}, "one value per column"),
        ({"wind": [0, -1, 0, 0]}, "wind must be >= 0"),
        ({"goals": {}}, "never ends"),
        ({"max_steps": 1}, "max_steps must be at least 2"),
        ({"shape": (0, 3)}, "at least 1 row"),
        ({"start": "corner"}, "(row, col) pair"),
        ({"walls": [(1, 1)], "traps": {(1, 1): -1.0}}, "both a wall and a trap"),
        ({"jumps": {(1, 1): ((3, 3), 1.0)}, "goals": {(1, 1): 1.0}}, "jump source (1, 1) is on a goal"),
        ({"render_mode": "human"}, "render_mode"),
    ],
)
def test_invalid_layouts_raise_config_error(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as error:
        GridWorldEnv(**kwargs)
    assert message in str(error.value)
