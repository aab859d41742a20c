"""Interrupting a training command the way people and machines do: Ctrl-C (SIGINT) or a crash (SIGKILL).

``interrupt_run`` starts ``rlhf ARGS`` in a subprocess, waits until its ``metrics.jsonl`` holds a row past a given
step with a checkpoint beside it, then sends the signal; ``logged_steps`` reads back what the run logged.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path


def interrupt_run(args: list[str], out: Path, after_step: int, sig: signal.Signals, timeout: float = 120.0) -> int:
    """Run ``rlhf ARGS --out OUT`` until it logged a step past ``after_step`` and saved a checkpoint, then send
    ``sig``; return the exit code. Fails if the run ends before that point (the test's budget was too small)."""
    command = [sys.executable, "-c", "import sys; from rlhf.cli import main; sys.exit(main())", *args]
    env = {**os.environ, "WANDB_MODE": "disabled"}
    # Ctrl-C at a terminal: SIGINT at its default, even when the tests run from a background job that ignores it
    # (Python installs its KeyboardInterrupt handler only where SIGINT is not ignored at start).
    process = subprocess.Popen(
        [*command, "--out", str(out)],
        env=env,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    deadline = time.monotonic() + timeout
    try:
        while not (logged_steps(out) and max(logged_steps(out)) > after_step and (out / "checkpoint.pt").exists()):
            if process.poll() is not None:
                raise AssertionError(f"rlhf {args[0]} ended before step {after_step}: {process.stderr.read()}")  # type: ignore[union-attr]
            if time.monotonic() > deadline:
                raise AssertionError(f"rlhf {args[0]} did not reach step {after_step} in {timeout} s")
            time.sleep(0.02)
        process.send_signal(sig)
        return process.wait(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def logged_steps(out: Path, key: str | None = None) -> list[int]:
    """The ``step`` of every complete row of ``OUT/metrics.jsonl`` (only rows holding ``key``, when given)."""
    path = out / "metrics.jsonl"
    if not path.exists():
        return []
    steps = []
    for line in path.read_text().splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:  # a line being written right now
            continue
        if key is None or key in row:
            steps.append(int(row["step"]))
    return steps
