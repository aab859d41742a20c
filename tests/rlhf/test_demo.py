"""`rlhf demo` end to end with tiny budgets: reference PPO, the service, labels over HTTP, RLHF, one report."""

from __future__ import annotations

import base64
import json
import re
import socket
from pathlib import Path

import pytest

from rlhf.cli import main


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.slow
def test_demo_with_tiny_budgets(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "demo"
    args = ["demo", "--env", "CartPole-v1", "--labels", "20", "--total-steps", "8192", "--port", str(_free_port())]
    assert main([*args, "--out", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["labels_used"] == 20
    assert 8.0 <= summary["eval_return_mean"] <= 500.0 and 8.0 <= summary["reference_eval_return"] <= 500.0
    assert 0.0 <= summary["reward_model_accuracy"] <= 1.0
    for run in ("reference", "rlhf"):
        assert json.loads((out / run / "summary.json").read_text())["env_steps"] >= 8192
    page = (out / "report.html").read_text()
    assert "True return over env steps" in page and "reference/report.html" in page and "Predicted vs true" in page
    # Both final policies as MP4 clips, inlined: the reference's and the RLHF policy's.
    clips = re.findall(r"src='data:video/mp4;base64,([A-Za-z0-9+/=]+)'", page)
    assert len(clips) == 2 and all(base64.b64decode(clip)[4:8] == b"ftyp" for clip in clips)
    assert (out / "reference" / "clips" / "policy-final.mp4").is_file()
    err = capsys.readouterr().err
    assert "labeling service: http://127.0.0.1:" in err and "label alongside here: http" in err
    # The service was stopped: nothing listens on its port (SO_REUSEADDR ignores TIME_WAIT, not a listener).
    port = int(args[-1])
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", port))
    # A second demo into the same folder needs --resume; with it, finished runs are reused.
    assert main([*args, "--out", str(out)]) == 2
    assert "pass --resume" in capsys.readouterr().err
    assert main([*args, "--out", str(out), "--resume"]) == 0


def test_zero_steps_is_refused_not_replaced_by_the_default(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--total-steps", "0", "--out", str(tmp_path / "d")]) == 2
    assert "--total-steps must be positive, got 0" in capsys.readouterr().err
    assert not (tmp_path / "d").exists()
