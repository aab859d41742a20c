"""Shared fixtures: tests never log to wandb and write only under pytest's tmp_path."""

from __future__ import annotations

import os

os.environ.setdefault("WANDB_MODE", "disabled")
