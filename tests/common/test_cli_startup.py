"""What the `rlhf` command and the packages load before they do any work.

`rlhf bandit --help` must not load torch: commands are imported when they run, and importing ``baselines`` or
one of its leaves registers nothing and loads no gymnasium. Import checks run in a fresh interpreter, since this
one has imported everything by now. Timings belong in the docs (docs/commands.md), not in assertions.
"""

from __future__ import annotations

import dataclasses
import subprocess
import sys

import pytest

from rlhf.cli import COMMANDS, load, main

HEAVY = ("torch", "transformers", "fastapi", "sqlalchemy", "gymnasium", "plotly")


def _loaded_after(code: str) -> list[str]:
    """The modules of ``HEAVY`` that a fresh interpreter holds after running ``code`` (which may exit)."""
    probe = f"""
import atexit, sys
atexit.register(lambda: print(*[m for m in {HEAVY!r} if m in sys.modules], file=sys.stderr))
{code}
"""
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    return result.stderr.split()


def test_a_bandit_help_loads_no_torch_nor_other_heavy_packages() -> None:
    assert _loaded_after("from rlhf.cli import main; main(['bandit', '--help'])") == []


def test_the_command_listing_imports_no_command() -> None:
    modules = sorted({command.module for command in COMMANDS.values()})
    check = f"assert not [m for m in {modules!r} if m in sys.modules], 'a command was imported'"
    assert _loaded_after(f"from rlhf.cli import main\ntry:\n    main(['--help'])\nfinally:\n    {check}") == []


def test_baselines_leaves_load_no_gymnasium_and_register_nothing() -> None:
    assert _loaded_after("import baselines, baselines.common.errors, baselines.common.runs") == []
    assert _loaded_after("import baselines.bandits.experiment") == []


@pytest.mark.parametrize(
    ("module", "env_id"), [("baselines.tabular", "GridWorld-v0"), ("baselines.bandits.env", "KArmedBandit-v0")]
)
def test_importing_an_envs_package_registers_it(module: str, env_id: str) -> None:
    code = f"import gymnasium as gym\nassert {env_id!r} not in gym.registry\nimport {module}\ngym.make({env_id!r})"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr


def test_the_listing_names_every_command_with_its_summary(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["--help"])
    assert exit_.value.code == 0
    listing = " ".join(capsys.readouterr().out.split())
    for name, command in COMMANDS.items():
        assert f"{name} {command.summary}" in listing


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        ([], "the following arguments are required: COMMAND"),
        (["bogus"], "invalid choice: 'bogus' (choose from "),  # later Pythons leave the choices unquoted
        (["--no-such-flag"], "the following arguments are required: COMMAND"),
    ],
)
def test_no_or_an_unknown_command_exits_2(capsys: pytest.CaptureFixture[str], argv: list[str], message: str) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize("name", list(COMMANDS))
def test_every_command_loads_and_its_summary_is_its_config_docstring(name: str) -> None:
    config, runner = load(name)
    assert dataclasses.is_dataclass(config) and callable(runner)
    assert " ".join((config.__doc__ or "").split()).startswith(COMMANDS[name].summary)
