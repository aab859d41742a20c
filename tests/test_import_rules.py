"""The rules of the house about who imports whom (docs: design.md), checked on every module's source.

Every import statement counts, including those inside functions and ``if TYPE_CHECKING:`` blocks: a lazy import of a
forbidden module is still a dependency.
"""

from __future__ import annotations

import ast
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("baselines", "rlhf", "feedback_ui")
"""The project's packages; any other top-level name is a third-party or standard-library module."""


@dataclass(frozen=True)
class Rule:
    """Modules under ``scope`` may not import ``forbidden``; of the project they may import only ``allowed``
    (None: any project module that ``forbidden`` does not name)."""

    scope: str
    forbidden: tuple[str, ...]
    allowed: tuple[str, ...] | None = None
    why: str = ""


RULES = (
    Rule("baselines", ("rlhf", "feedback_ui"), why="baselines are a leaf of the project"),
    Rule(
        "feedback_ui",
        ("torch", "gymnasium"),
        allowed=("feedback_ui", "rlhf.store", "baselines.common.errors", "baselines.common.config"),
        why="the labeling service meets the rest only through the store",
    ),
    Rule(
        "rlhf.store",
        ("torch", "gymnasium"),
        allowed=("rlhf.store", "baselines.common.errors"),
        why="the store is a leaf",
    ),
    Rule("baselines.bandits", ("torch",), why="bandits need numpy and gymnasium, not torch"),
    Rule("baselines.tabular", ("torch",), why="tabular methods need numpy and gymnasium, not torch"),
)


def _within(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(source: str, module: str, is_package: bool = False) -> list[tuple[int, str]]:
    """``(line, imported name)`` of every import in ``source``; ``from M import x`` gives ``M.x`` (a submodule or an
    attribute of M: both name what is used), relative imports resolved against ``module``."""
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                package = module.split(".")
                package = package if is_package else package[:-1]
                base = ".".join(package[: len(package) - node.level + 1] + ([base] if base else []))
            found.extend((node.lineno, base if alias.name == "*" else f"{base}.{alias.name}") for alias in node.names)
    return found


def violations(source: str, module: str, is_package: bool = False) -> list[str]:
    """What ``source`` (the module ``module``) imports against :data:`RULES`, one line per import and rule."""
    problems = []
    for line, name in imports(source, module, is_package):
        for rule in RULES:
            if not _within(module, rule.scope):
                continue
            refused = any(_within(name, forbidden) for forbidden in rule.forbidden)
            in_project = name.split(".")[0] in PACKAGES
            if in_project and rule.allowed is not None:
                refused = refused or not any(_within(name, allowed) for allowed in rule.allowed)
            if refused:
                problems.append(f"{module}:{line} imports {name} ({rule.why})")
    return problems


def test_the_checker_sees_forbidden_imports() -> None:
    source = textwrap.dedent(
        """
        import numpy as np
        from rlhf.store import PreferenceStore
        from baselines.common.errors import ConfigError

        def lazy():
            import torch
            from rlhf import datasets
            from ..segments import Segment
        """
    )
    assert violations(source, "feedback_ui.service") == [
        "feedback_ui.service:7 imports torch (the labeling service meets the rest only through the store)",
        "feedback_ui.service:8 imports rlhf.datasets (the labeling service meets the rest only through the store)",
    ]
    assert violations(source, "rlhf.store.export") == [
        "rlhf.store.export:7 imports torch (the store is a leaf)",
        "rlhf.store.export:8 imports rlhf.datasets (the store is a leaf)",
        "rlhf.store.export:9 imports rlhf.segments.Segment (the store is a leaf)",
    ]
    assert violations("import gymnasium\nimport torch\n", "baselines.tabular.td") == [
        "baselines.tabular.td:2 imports torch (tabular methods need numpy and gymnasium, not torch)"
    ]
    assert violations("from rlhf.segments import Segment\n", "baselines.ppo") == [
        "baselines.ppo:1 imports rlhf.segments.Segment (baselines are a leaf of the project)"
    ]
    assert violations("from . import records\n", "rlhf.store", is_package=True) == []
    assert violations("import torch\n", "rlhf.loop") == []


def test_every_module_keeps_the_import_rules() -> None:
    paths = sorted(path for package in PACKAGES for path in (ROOT / package).rglob("*.py"))
    assert len(paths) > 40  # the tree was found
    problems = [
        problem
        for path in paths
        for problem in violations(path.read_text(), module_name(path), is_package=path.name == "__init__.py")
    ]
    assert problems == []


def _loaded_by(statement: str, modules: tuple[str, ...]) -> list[str]:
    """Which of ``modules`` a fresh interpreter has loaded after running ``statement``."""
    code = f"import sys\n{statement}\nprint(' '.join(m for m in {modules!r} if m in sys.modules))"
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120, check=True
    )
    return result.stdout.split()


def test_the_store_and_the_service_load_without_torch() -> None:
    assert _loaded_by("import rlhf.store, feedback_ui.app", ("torch", "datasets", "rlhf.segments")) == []


def test_the_store_and_the_service_load_without_gymnasium() -> None:
    assert _loaded_by("import rlhf.store, feedback_ui.app", ("gymnasium",)) == []
