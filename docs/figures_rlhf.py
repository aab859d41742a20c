"""Figures of the RLHF and labeling-service pages."""

from __future__ import annotations

from figure_tools import FigureSpec

SPECS: list[FigureSpec] = []
