"""The documentation's figures: each one made from runs of the project's own commands, which the page shows.

``python docs/figures.py NAME ...`` (or ``--all``) runs each figure's commands (``rlhf ARGS --out
runs/docs/NAME/I``; a run folder that already holds a ``summary.json`` is reused), builds the plotly figure from the
run folders and writes ``docs/figures/NAME.json``: the figure and the commands. A page shows it with
``<!-- figure: NAME -->`` (``docs/hooks/embed_figures.py``). ``--list`` prints the figures and their commands.
Figures are registered per topic in ``docs/figures_TOPIC.py``.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import figures_bandits
import figures_dqn
import figures_gpto
import figures_ppo
import figures_rlhf
from figure_tools import FIGURES, ROOT, FigureSpec

SPECS: dict[str, FigureSpec] = {}
for _module in (figures_bandits, figures_dqn, figures_ppo, figures_rlhf, figures_gpto):
    for _spec in _module.SPECS:
        if _spec.name in SPECS:
            raise ValueError(f"figure {_spec.name!r} is registered twice")
        SPECS[_spec.name] = _spec


def make(spec: FigureSpec) -> Path:
    """Run what is missing, draw the figure, write ``docs/figures/NAME.json``."""
    from rlhf.cli import main

    for args, out in zip(spec.runs, spec.run_dirs(), strict=True):
        if not (ROOT / out / "summary.json").exists():
            code = main([*args, "--out", str(ROOT / out)])
            if code != 0:
                raise SystemExit(f"figure {spec.name}: `rlhf {' '.join(args)}` exited with {code}")
    figure = spec.build([ROOT / out for out in spec.run_dirs()])
    path = FIGURES / f"{spec.name}.json"
    path.write_text(json.dumps({"commands": spec.commands(), "figure": figure.to_plotly_json()}, default=_jsonable))
    return path


def _jsonable(value: object) -> object:
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"cannot write {type(value).__name__} as JSON")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", help="figures to make")
    parser.add_argument("--all", action="store_true", help="make every figure")
    parser.add_argument("--list", action="store_true", help="print the figures and their commands")
    args = parser.parse_args(argv)
    if args.list:
        for spec in SPECS.values():
            print(f"{spec.name}:\n  " + "\n  ".join(spec.commands()))
        return 0
    names = list(SPECS) if args.all else args.names
    unknown = [name for name in names if name not in SPECS]
    if unknown or not names:
        print(f"unknown figures {unknown}; choose from {', '.join(SPECS)}" if unknown else "name a figure or --all",
              file=sys.stderr)  # fmt: skip
        return 2
    for name in names:
        print(make(SPECS[name]))
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    raise SystemExit(main())
