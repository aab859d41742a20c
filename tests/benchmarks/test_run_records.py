"""Run records: the code hash that keys them, and a file that survives a kill mid-write."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import run_records


def test_the_code_version_changes_with_an_uncommitted_edit_to_the_code_that_runs(tmp_path: Path) -> None:
    """The results cache must not take a run of edited code for one of the committed code: an edit to the loop,
    committed or not, or a new file beside it, changes the hash; an edit elsewhere does not."""

    def git(*args: str) -> None:
        subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=tmp_path, check=True,
                       capture_output=True)  # fmt: skip

    for name in ("baselines/ppo.py", "rlhf/loop.py", "docs/index.md"):
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_text("x = 1\n")
    git("init", "-q")
    git("add", ".")
    git("commit", "-q", "-m", "first")
    versions = [run_records._code_version.__wrapped__(tmp_path)]
    (tmp_path / "docs/index.md").write_text("changed\n")
    versions.append(run_records._code_version.__wrapped__(tmp_path))
    (tmp_path / "rlhf/loop.py").write_text("x = 2\n")
    versions.append(run_records._code_version.__wrapped__(tmp_path))
    (tmp_path / "rlhf/new.py").write_text("y = 1\n")
    versions.append(run_records._code_version.__wrapped__(tmp_path))
    assert versions[0] == versions[1] != "unknown"
    assert len(set(versions[1:])) == 3


def test_records_append_as_they_come_and_a_line_cut_short_is_skipped(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "sub" / "runs.jsonl"
    run_records.append_records(({"key": f"k{i}", "value": i} for i in range(2)), path, 2, lambda r: r["key"])
    assert capsys.readouterr().out.splitlines() == ["[1/2] k0", "[2/2] k1"]
    path.write_text(path.read_text() + '{"key": "k2", "val')  # killed while writing a third record
    assert sorted(run_records.load_records(path)) == ["k0", "k1"]
    run_records.append_records([{"key": "k1", "value": 10}], path, 1, lambda r: r["key"])
    lines = path.read_text().splitlines()
    assert json.loads(lines[-1]) == {"key": "k1", "value": 10}  # on its own line, after the cut one
    assert run_records.load_records(path)["k1"]["value"] == 10  # the last record of a key wins


def test_records_of_an_earlier_code_are_read_within_the_block_only() -> None:
    here = run_records.code_version()
    with run_records.records_of_code("0123456789"):
        assert run_records.code_version() == "0123456789"
        with run_records.records_of_code(None):  # None: the code that runs, unchanged
            assert run_records.code_version() == "0123456789"
    assert run_records.code_version() == here
    with pytest.raises(RuntimeError), run_records.records_of_code("abc"):
        raise RuntimeError
    assert run_records.code_version() == here


@pytest.mark.parametrize("script", ["rlhf_protocol", "gpto_ablation"])
def test_code_needs_no_run(script: str, capsys: pytest.CaptureFixture[str]) -> None:
    module = __import__(script)
    assert module.main(["--code", "066e4b2965"]) == 2
    assert "--code reads the records of other code: it needs --no-run" in capsys.readouterr().err
