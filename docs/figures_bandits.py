"""Figures of the bandit and tabular pages."""

from __future__ import annotations

from figure_tools import FigureSpec

SPECS: list[FigureSpec] = []
