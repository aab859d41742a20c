"""Figures of the DQN and tuning pages."""

from __future__ import annotations

from figure_tools import FigureSpec

SPECS: list[FigureSpec] = []
