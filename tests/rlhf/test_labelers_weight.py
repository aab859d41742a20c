"""`rlhf labelers-weight`: an operator's weight for a labeler, set and cleared; every mistake is one line."""

from __future__ import annotations

from pathlib import Path

import pytest

from rlhf.cli import main
from rlhf.store import PreferenceStore


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    with PreferenceStore(tmp_path / "prefs.sqlite") as store:
        store.get_or_create_labeler("alice")
        store.get_or_create_labeler("bob")
    return tmp_path


def _overrides(workspace: Path) -> dict[str, float]:
    with PreferenceStore(workspace / "prefs.sqlite") as store:
        names = {labeler.id: labeler.name for labeler in store.labelers()}
        return {names[labeler_id]: weight for labeler_id, weight in store.labeler_weight_overrides().items()}


def test_set_then_clear_a_weight(workspace: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = str(workspace / "prefs.sqlite")
    assert main(["labelers-weight", "--db", db, "--name", "bob", "--weight", "0"]) == 0
    assert "bob: weight 0 (set by operator)" in capsys.readouterr().out
    assert main(["labelers", "weight", "--workspace", str(workspace), "--name", "alice", "--weight", "1.5"]) == 0
    assert _overrides(workspace) == {"alice": 1.5, "bob": 0.0}
    assert main(["labelers-weight", "--db", f"sqlite:///{db}", "--name", "bob", "--auto"]) == 0
    assert "bob: weight automatic" in capsys.readouterr().out
    assert _overrides(workspace) == {"alice": 1.5}


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--name", "zed", "--weight", "1"], "no labeler named 'zed' in the store at sqlite:///"),
        (["--name", "bob", "--weight", "abc"], "--weight must be a number >= 0, not 'abc'"),
        (["--name", "bob", "--weight", "nan"], "a labeler's weight must be a finite number >= 0, not nan"),
        (["--name", "bob", "--weight", "-1"], "a labeler's weight must be a finite number >= 0, not -1.0"),
        (["--name", "bob", "--weight", "1", "--auto"], "give --weight W or --auto"),
        (["--name", "bob"], "give --weight W or --auto"),
    ],
)
def test_mistakes_are_one_line_errors(
    workspace: Path, capsys: pytest.CaptureFixture[str], flags: list[str], message: str
) -> None:
    assert main(["labelers-weight", "--db", str(workspace / "prefs.sqlite"), *flags]) == 2
    err = capsys.readouterr().err
    assert err.startswith("rlhf labelers-weight: error: ") and message in err and err.count("\n") == 1
    assert _overrides(workspace) == {}


def test_a_store_that_does_not_open_is_a_one_line_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "nowhere" / "prefs.sqlite"
    for flags in (["--db", str(missing)], ["--workspace", str(tmp_path)], ["--db", "notadriver://x/y"], []):
        assert main(["labelers-weight", *flags, "--name", "bob", "--weight", "1"]) == 2
        err = capsys.readouterr().err
        assert err.startswith("rlhf labelers-weight: error: ") and err.count("\n") == 1, err
    assert not missing.parent.exists() and not (tmp_path / "prefs.sqlite").exists()  # nothing was created
