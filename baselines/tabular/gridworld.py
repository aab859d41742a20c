"""``GridWorld-v0``: a configurable grid world whose presets are Sutton & Barto's (2nd ed.) examples.

A move from a cell, in order:

1. a jump cell sends the agent to its target with the jump's reward, whatever the action (Example 3.5);
2. otherwise the agent moves one cell; a move off the grid or into a wall leaves it in place;
3. the wind of the column it moved from pushes it that many cells up, stopping at the edge or a wall (Example 6.5);
4. landing on a cliff gives ``cliff_reward`` and sends it back to the start, without ending the episode (Ex. 6.6);
5. the reward is ``step_reward`` (``off_grid_reward`` when the move left the grid), plus the cell's reward when it
   lands on a goal or a trap, which ends the episode.

With probability ``slip`` the move goes in one of the two perpendicular directions instead, each equally likely.
Actions follow FrozenLake: 0 left, 1 down, 2 right, 3 up; the observation of cell ``(r, c)`` is ``r * cols + c``.
``P[s][a]`` lists ``(prob, next_state, reward, terminated)`` as in FrozenLake and ``step`` samples from it.
Goal, trap, wall and cliff cells are absorbing there (``[(1.0, s, 0.0, True)]``); the last two are never occupied.
"""

from __future__ import annotations

import bisect
import dataclasses
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import gymnasium as gym
import numpy as np

from baselines.common.errors import ConfigError, check

Cell = tuple[int, int]
Transition = tuple[float, int, float, bool]

LEFT, DOWN, RIGHT, UP = 0, 1, 2, 3
MOVES: dict[int, Cell] = {LEFT: (0, -1), DOWN: (1, 0), RIGHT: (0, 1), UP: (-1, 0)}
ARROWS = ("←", "↓", "→", "↑")


@dataclass(frozen=True)
class GridLayout:
    """Everything that defines a grid world; cells are ``(row, col)``."""

    shape: Cell = (4, 4)
    """(rows, cols)."""
    start: Cell = (0, 0)
    """Where every episode starts (and where a cliff sends the agent back to)."""
    walls: tuple[Cell, ...] = ()
    """Blocked cells: a move into one leaves the agent in place."""
    goals: Mapping[Cell, float] = field(default_factory=lambda: {(3, 3): 0.0})
    """Terminal cells that count as success -> reward added on entering."""
    traps: Mapping[Cell, float] = field(default_factory=dict)
    """Terminal cells that count as failure -> reward added on entering."""
    cliffs: tuple[Cell, ...] = ()
    """Entering one gives ``cliff_reward`` and sends the agent back to the start (not terminal)."""
    cliff_reward: float = -100.0
    """Reward for entering a cliff cell (replaces the step reward)."""
    jumps: Mapping[Cell, tuple[Cell, float]] = field(default_factory=dict)
    """Source cell -> (target cell, reward): any action from the source moves to the target."""
    step_reward: float = -1.0
    """Reward of every move not covered by the rules above."""
    off_grid_reward: float | None = None
    """Reward of a move off the grid (the agent stays); None: the step reward."""
    slip: float = 0.0
    """Probability that the move goes in a perpendicular direction instead (half each way)."""
    wind: tuple[int, ...] | None = None
    """Upward push per column (of the column moved from); None: no wind."""
    max_steps: int | None = None
    """Truncate episodes after this many steps; None: no limit (needs a goal or a trap)."""

    @property
    def rows(self) -> int:
        return self.shape[0]

    @property
    def cols(self) -> int:
        return self.shape[1]

    def state(self, cell: Cell) -> int:
        return cell[0] * self.cols + cell[1]

    def cell(self, state: int) -> Cell:
        row, col = divmod(state, self.cols)
        return row, col

    def is_absorbing(self, cell: Cell) -> bool:
        return cell in self.goals or cell in self.traps or cell in self.walls or cell in self.cliffs


PRESETS: dict[str, GridLayout] = {
    # Example 4.1: terminal corners, -1 per move, used with the equiprobable random policy and gamma 1.
    "sutton-4x4": GridLayout(shape=(4, 4), start=(3, 0), goals={(0, 0): 0.0, (3, 3): 0.0}, step_reward=-1.0),
    # Example 3.5: continuing, so episodes are truncated for TD methods.
    "sutton-5x5": GridLayout(
        shape=(5, 5),
        start=(2, 2),
        goals={},
        jumps={(0, 1): ((4, 1), 10.0), (0, 3): ((2, 3), 5.0)},
        step_reward=0.0,
        off_grid_reward=-1.0,
        max_steps=100,
    ),
    # Example 6.5.
    "windy": GridLayout(
        shape=(7, 10), start=(3, 0), goals={(3, 7): 0.0}, wind=(0, 0, 0, 1, 1, 1, 2, 2, 1, 0), step_reward=-1.0
    ),
    # Example 6.6.
    "cliff": GridLayout(
        shape=(4, 12),
        start=(3, 0),
        goals={(3, 11): 0.0},
        cliffs=tuple((3, col) for col in range(1, 11)),
        cliff_reward=-100.0,
        step_reward=-1.0,
    ),
}


def make_layout(preset: str | None = None, **overrides: Any) -> GridLayout:
    """The preset's layout (or the default 4x4 one) with ``overrides`` applied, normalized and validated."""
    check(
        preset is None or preset in PRESETS,
        f"unknown GridWorld preset '{preset}'; choose from {', '.join(PRESETS)}",
    )
    allowed = [f.name for f in dataclasses.fields(GridLayout)]
    unknown = sorted(set(overrides) - set(allowed))
    check(not unknown, f"unknown GridWorld option(s) {', '.join(unknown)}; allowed: {', '.join(allowed)}")
    base = PRESETS[preset] if preset is not None else GridLayout()
    layout = _normalized(dataclasses.replace(base, **overrides))
    _validate(layout)
    return layout


def _to_cell(value: Any, what: str) -> Cell:
    try:
        row, col = value
        return int(row), int(col)
    except (TypeError, ValueError):
        raise ConfigError(f"GridWorld {what} must be a (row, col) pair, got {value!r}") from None


def _to_float(value: Any, what: str) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"GridWorld {what} must be a number, got {value!r}") from None


def _normalized(layout: GridLayout) -> GridLayout:
    """Turn lists (from JSON or the command line) into the tuples and dicts the layout holds."""
    try:
        wind = None if layout.wind is None else tuple(int(w) for w in layout.wind)
        goals = {_to_cell(c, "goal"): _to_float(r, "goal reward") for c, r in dict(layout.goals).items()}
        traps = {_to_cell(c, "trap"): _to_float(r, "trap reward") for c, r in dict(layout.traps).items()}
        jumps = {
            _to_cell(c, "jump source"): (_to_cell(target, "jump target"), _to_float(reward, "jump reward"))
            for c, (target, reward) in dict(layout.jumps).items()
        }
        walls = tuple(dict.fromkeys(_to_cell(c, "wall") for c in layout.walls))
        cliffs = tuple(dict.fromkeys(_to_cell(c, "cliff") for c in layout.cliffs))
        max_steps = None if layout.max_steps is None else int(layout.max_steps)
    except ConfigError:
        raise
    except (TypeError, ValueError) as error:
        raise ConfigError(f"GridWorld layout is malformed: {error}") from None
    off_grid = None if layout.off_grid_reward is None else _to_float(layout.off_grid_reward, "off_grid_reward")
    return dataclasses.replace(
        layout,
        shape=_to_cell(layout.shape, "shape"),
        start=_to_cell(layout.start, "start"),
        walls=walls,
        goals=goals,
        traps=traps,
        cliffs=cliffs,
        cliff_reward=_to_float(layout.cliff_reward, "cliff_reward"),
        jumps=jumps,
        step_reward=_to_float(layout.step_reward, "step_reward"),
        off_grid_reward=off_grid,
        slip=_to_float(layout.slip, "slip"),
        wind=wind,
        max_steps=max_steps,
    )


def _validate(layout: GridLayout) -> None:
    rows, cols = layout.shape
    check(rows >= 1 and cols >= 1, f"GridWorld shape must have at least 1 row and 1 column, got {layout.shape}")

    def inside(cell: Cell, what: str) -> None:
        check(
            0 <= cell[0] < rows and 0 <= cell[1] < cols,
            f"GridWorld {what} {cell} is outside the {rows}x{cols} grid (rows 0..{rows - 1}, cols 0..{cols - 1})",
        )

    kinds = {"wall": layout.walls, "goal": tuple(layout.goals), "trap": tuple(layout.traps), "cliff": layout.cliffs}
    owner: dict[Cell, str] = {}
    for kind, cells in kinds.items():
        for cell in cells:
            inside(cell, kind)
            check(cell not in owner, f"GridWorld cell {cell} is both a {owner.get(cell)} and a {kind}")
            owner[cell] = kind
    inside(layout.start, "start")
    check(layout.start not in owner, f"GridWorld start {layout.start} is on a {owner.get(layout.start)}")
    for source, (target, _) in layout.jumps.items():
        inside(source, "jump source")
        inside(target, "jump target")
        check(source not in owner, f"GridWorld jump source {source} is on a {owner.get(source)}")
        check(
            target not in layout.walls and target not in layout.cliffs,
            f"GridWorld jump target {target} is on a {owner.get(target)}",
        )
    check(0.0 <= layout.slip <= 1.0, f"GridWorld slip must be in [0, 1], got {layout.slip}")
    if layout.wind is not None:
        check(
            len(layout.wind) == cols,
            f"GridWorld wind needs one value per column ({cols}), got {len(layout.wind)}",
        )
        check(all(w >= 0 for w in layout.wind), f"GridWorld wind must be >= 0 (an upward push), got {layout.wind}")
    check(
        layout.max_steps is None or layout.max_steps >= 2,
        f"GridWorld max_steps must be at least 2 or None, got {layout.max_steps}",
    )
    check(
        layout.max_steps is not None or bool(layout.goals) or bool(layout.traps),
        "a GridWorld without goals or traps never ends; set max_steps",
    )


def _outcome(layout: GridLayout, cell: Cell, action: int) -> tuple[Cell, float, bool]:
    """Where a move in direction ``action`` from ``cell`` lands, its reward, and whether it ends the episode."""
    if cell in layout.jumps:
        target, reward = layout.jumps[cell]
        return target, reward, target in layout.goals or target in layout.traps
    d_row, d_col = MOVES[action]
    row, col = cell[0] + d_row, cell[1] + d_col
    off_grid = not (0 <= row < layout.rows and 0 <= col < layout.cols)
    if off_grid or (row, col) in layout.walls:
        row, col = cell
    for _ in range(layout.wind[cell[1]] if layout.wind is not None else 0):
        if row == 0 or (row - 1, col) in layout.walls:
            break
        row -= 1
    landed = (row, col)
    if landed in layout.cliffs:
        return layout.start, layout.cliff_reward, False
    reward = layout.step_reward
    if off_grid and layout.off_grid_reward is not None:
        reward = layout.off_grid_reward
    terminal_reward = layout.goals.get(landed, layout.traps.get(landed))
    if terminal_reward is not None:
        return landed, reward + terminal_reward, True
    return landed, reward, False


def transition_model(layout: GridLayout) -> dict[int, dict[int, list[Transition]]]:
    """FrozenLake's ``P``: outcomes that coincide (e.g. two slips into the same wall) are merged."""
    model: dict[int, dict[int, list[Transition]]] = {}
    for state in range(layout.rows * layout.cols):
        cell = layout.cell(state)
        model[state] = {}
        for action in MOVES:
            if layout.is_absorbing(cell):
                model[state][action] = [(1.0, state, 0.0, True)]
                continue
            side = layout.slip / 2.0
            directions = ((action, 1.0 - layout.slip), ((action - 1) % 4, side), ((action + 1) % 4, side))
            merged: dict[tuple[int, float, bool], float] = {}
            for direction, prob in directions:
                if prob > 0.0:
                    landed, reward, terminated = _outcome(layout, cell, direction)
                    key = (layout.state(landed), reward, terminated)
                    merged[key] = merged.get(key, 0.0) + prob
            model[state][action] = [(prob, s, r, t) for (s, r, t), prob in merged.items()]
    return model


class GridWorldEnv(gym.Env[int, int]):
    """A grid world; ``GridWorldEnv(preset="cliff", slip=0.1)`` takes a preset and overrides any GridLayout field.

    Presets: ``sutton-4x4`` (Example 4.1), ``sutton-5x5`` (Example 3.5), ``windy`` (Example 6.5), ``cliff``
    (Example 6.6). ``info`` carries ``prob``, the probability of the sampled outcome, as in FrozenLake.
    """

    metadata: dict[str, Any] = {"render_modes": ["ansi", "rgb_array"], "render_fps": 4}  # noqa: RUF012
    cell_pixels = 32

    def __init__(self, preset: str | None = None, render_mode: str | None = None, **overrides: Any) -> None:
        check(
            render_mode is None or render_mode in self.metadata["render_modes"],
            f"GridWorld render_mode must be one of {self.metadata['render_modes']} or None, got {render_mode!r}",
        )
        self.layout = make_layout(preset, **overrides)
        self.preset = preset
        self.render_mode = render_mode
        self.nrow, self.ncol = self.layout.shape
        n_states = self.nrow * self.ncol
        # Observations and actions are plain ints, as in FrozenLake; Discrete is typed for numpy integers.
        self.observation_space = gym.spaces.Discrete(n_states)  # type: ignore[assignment]
        self.action_space = gym.spaces.Discrete(len(MOVES))  # type: ignore[assignment]
        self.P = transition_model(self.layout)
        self._cumulative = {
            s: {a: list(np.cumsum([t[0] for t in outcomes])) for a, outcomes in by_action.items()}
            for s, by_action in self.P.items()
        }
        self.start_state = self.layout.state(self.layout.start)
        self.initial_state_distrib = np.zeros(n_states)
        self.initial_state_distrib[self.start_state] = 1.0
        self.goal_states = frozenset(self.layout.state(c) for c in self.layout.goals)
        self.s = self.start_state
        self.lastaction: int | None = None
        self._elapsed = 0
        self._background: np.ndarray | None = None

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[int, dict[str, Any]]:
        super().reset(seed=seed)
        self.s = self.start_state
        self.lastaction = None
        self._elapsed = 0
        return self.s, {"prob": 1.0}

    def step(self, action: int) -> tuple[int, float, bool, bool, dict[str, Any]]:
        outcomes = self.P[self.s][int(action)]
        index = 0
        if len(outcomes) > 1:
            cumulative = self._cumulative[self.s][int(action)]
            index = min(bisect.bisect_right(cumulative, self.np_random.random()), len(outcomes) - 1)
        prob, next_state, reward, terminated = outcomes[index]
        self.s = next_state
        self.lastaction = int(action)
        self._elapsed += 1
        truncated = not terminated and self.layout.max_steps is not None and self._elapsed >= self.layout.max_steps
        return next_state, reward, terminated, truncated, {"prob": prob}

    def cell_labels(self) -> list[list[str]]:
        """One short label per cell: S start, G goal, T trap, # wall, C cliff, J jump source, '' otherwise."""
        labels = [["" for _ in range(self.ncol)] for _ in range(self.nrow)]
        marks: list[tuple[Iterable[Cell], str]] = [
            (self.layout.jumps, "J"),
            (self.layout.goals, "G"),
            (self.layout.traps, "T"),
            (self.layout.walls, "#"),
            (self.layout.cliffs, "C"),
            ((self.layout.start,), "S"),
        ]
        for cells, mark in marks:
            for row, col in cells:
                labels[row][col] = mark
        return labels

    def render(self) -> str | np.ndarray | None:
        if self.render_mode == "ansi":
            return self._render_text()
        if self.render_mode == "rgb_array":
            return self._render_rgb()
        return None

    def _render_text(self) -> str:
        rows = [[mark or "." for mark in line] for line in self.cell_labels()]
        row, col = self.layout.cell(self.s)
        rows[row][col] = "A"
        header = f"  ({ARROWS[self.lastaction]})\n" if self.lastaction is not None else ""
        return header + "\n".join("".join(line) for line in rows) + "\n"

    def _render_rgb(self) -> np.ndarray:
        size = self.cell_pixels
        if self._background is None:
            colors = {
                "": (245, 245, 245),
                "S": (200, 220, 250),
                "G": (120, 200, 120),
                "T": (230, 120, 120),
                "#": (60, 60, 60),
                "C": (150, 60, 40),
                "J": (200, 160, 230),
            }
            labels = np.array(self.cell_labels())
            cells = np.array([colors[mark] for mark in labels.ravel()], dtype=np.uint8)
            image = cells.reshape(self.nrow, self.ncol, 3).repeat(size, axis=0).repeat(size, axis=1)
            image[::size, :] = 180  # grid lines
            image[:, ::size] = 180
            self._background = image
        frame = self._background.copy()
        row, col = self.layout.cell(self.s)
        yy, xx = np.mgrid[0:size, 0:size]
        centre = (size - 1) / 2.0
        disc = (yy - centre) ** 2 + (xx - centre) ** 2 <= (size * 0.35) ** 2
        frame[row * size : (row + 1) * size, col * size : (col + 1) * size][disc] = (30, 90, 200)
        return frame
