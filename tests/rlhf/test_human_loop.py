"""`--teacher human`: the loop queues pairs with clips and keeps training while a person labels over HTTP."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from feedback_ui.server import ServerHandle, start_server_in_background
from rlhf.cli import main
from rlhf.loop import RLHFConfig, run_rlhf
from rlhf.store import LoopStatus, PreferenceStore
from tests.interrupt import logged_steps


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _person(url: str, token: str, store_path: Path, done: threading.Event, answered: list[int]) -> None:
    """Labels through the same endpoints as the page: next pair, submit a side; prefers the longer-lived clip."""
    store = PreferenceStore(store_path)
    headers = {"Authorization": f"Bearer {token}"}
    with httpx.Client(base_url=url, headers=headers, timeout=10) as client:
        while not done.is_set():
            pair = client.get("/api/queries/next").json()["pair"]
            if pair is None:
                done.wait(0.1)
                continue
            query = store.get_query(pair["query_id"])
            left, right = store.get_segment(query.left_segment), store.get_segment(query.right_segment)
            assert pair["left"]["url"] and pair["right"]["url"], "every queued pair has its clips"
            side = "left" if left.true_return > right.true_return else "right"
            if left.true_return == right.true_return:
                side = "tie"
            response = client.post(
                "/api/labels", json={"query_id": pair["query_id"], "side": side, "seconds_taken": 1.0}
            )
            assert response.status_code in (200, 201), response.text
            answered.append(pair["query_id"])
    store.close()


@pytest.mark.slow
def test_human_labels_over_http_train_the_reward_model(tmp_path: Path) -> None:
    out = tmp_path / "run"
    config = RLHFConfig(
        env="CartPole-v1", teacher="human", labels=20, total_steps=6144, segment_length=20, label_rounds=3,
        human_retrain_labels=5, eval_episodes=2, out=out,
    )  # fmt: skip
    done = threading.Event()
    answered: list[int] = []
    handles: list[ServerHandle] = []
    workers: list[threading.Thread] = []

    def start(workspace: Path) -> None:
        handle = start_server_in_background(workspace, port=_free_port(), mode="thread")
        handles.append(handle)
        store = PreferenceStore(workspace / "prefs.sqlite")
        _, token = store.add_labeler("person")
        store.close()
        worker = threading.Thread(target=_person, args=(handle.url, token, workspace / "prefs.sqlite", done, answered))
        worker.start()
        workers.append(worker)

    try:
        summary = run_rlhf(config, on_store_ready=start)
    finally:
        done.set()
        for worker in workers:
            worker.join(timeout=30)
        for handle in handles:
            handle.stop()
    assert summary["labels_used"] == 20 and len(answered) == 20
    assert summary["reward_model_accuracy"] is not None
    store = PreferenceStore(out / "prefs.sqlite")
    labels = store.effective_labels()
    assert len(labels) == 20 and {p.labeler for p in labels} == {"person"}
    assert all(store.get_clip_path(i) for p in labels for i in (p.segment_a, p.segment_b))
    assert len(list((out / "clips").glob("*.mp4"))) >= 20


def _answer(client: httpx.Client, store: PreferenceStore) -> int | None:
    """Answer the next pair as a person would (the longer-lived clip is better); its query id, or None."""
    pair = client.get("/api/queries/next").json()["pair"]
    if pair is None:
        return None
    query = store.get_query(pair["query_id"])
    left, right = store.get_segment(query.left_segment), store.get_segment(query.right_segment)
    side = "left" if left.true_return >= right.true_return else "right"
    response = client.post("/api/labels", json={"query_id": pair["query_id"], "side": side, "seconds_taken": 1.0})
    assert response.status_code in (200, 201), response.text
    return int(pair["query_id"])


def _wait_until(condition: Callable[[], bool], what: str, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def _start(args: list[str]) -> tuple[subprocess.Popen[str], list[str]]:
    process = subprocess.Popen(
        [sys.executable, "-c", "import sys; from rlhf.cli import main; sys.exit(main())", *args],
        env={**os.environ, "WANDB_MODE": "disabled"},
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    lines: list[str] = []
    threading.Thread(target=lambda: lines.extend(iter(process.stderr.readline, "")), daemon=True).start()  # type: ignore[union-attr]
    return process, lines


def _status(out: Path) -> LoopStatus | None:
    if not (out / "prefs.sqlite").exists():
        return None
    with PreferenceStore(out / "prefs.sqlite") as store:
        return store.loop_status()


@pytest.mark.slow
def test_a_run_whose_labeler_stopped_halfway_resumes_and_waits_for_the_rest(tmp_path: Path) -> None:
    out, port = tmp_path / "run", _free_port()
    args = ["run", "--env", "CartPole-v1", "--teacher", "human", "--labels", "12", "--total-steps", "4096",
            "--segment-length", "20", "--label-rounds", "3", "--eval-episodes", "2", "--out", str(out)]  # fmt: skip
    process, lines = _start([*args, "--port", str(port)])
    try:
        _wait_until(lambda: any("label here:" in line for line in lines), "the labeling link")
        link = next(line for line in lines if "label here:" in line).split("label here: ")[1].strip()
        token = link.split("#token=")[1]
        store = PreferenceStore(out / "prefs.sqlite")
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", headers={"Authorization": f"Bearer {token}"}) as client:
            first: list[int] = []
            while len(first) < 2:  # the person labels two pairs of the first round's three, and leaves
                query_id = _answer(client, store)
                if query_id is None:
                    time.sleep(0.1)
                else:
                    first.append(query_id)
        _wait_until(lambda: (s := _status(out)) is not None and s.phase == "waiting" and s.labels_awaited == 1,
                    "the loop to wait for the last label of the round")  # fmt: skip
        time.sleep(1.0)
        assert logged_steps(out) == []  # it trains on nothing while it waits
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=60) == 130
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert store.open_label_count() == 1 and len(store.effective_labels()) == 2
    # A changed label budget is refused (the schedule was fixed when the run began); so is an unknown pace.
    assert main(["run", "--resume", str(out), "--labels", "20"]) == 2
    with pytest.raises(SystemExit) as refused:  # tyro's one-screen usage error
        main(["run", "--resume", str(out), "--human-pace", "sometimes"])
    assert refused.value.code == 2
    # The person comes back with the same link; the resumed run waits for the round's last label, then goes on.
    port = _free_port()
    process, lines = _start(["run", "--resume", str(out), "--port", str(port)])
    answered: list[int] = []
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", headers={"Authorization": f"Bearer {token}"}) as client:
            _wait_until(lambda: _healthy(client), "the resumed labeling service")
            while process.poll() is None and len(answered) < 10:
                query_id = _answer(client, store)
                if query_id is None:
                    time.sleep(0.1)
                else:
                    answered.append(query_id)
        assert process.wait(timeout=120) == 0, "".join(lines)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    summary = json.loads((out / "summary.json").read_text())
    labels = store.effective_labels()
    store.close()
    assert summary["labels_used"] == 12 and len(labels) == 12 == len({p.query_id for p in labels})
    assert set(first) | set(answered) == {p.query_id for p in labels}
    assert "waiting for" in "".join(lines) and "label here" not in "".join(lines)  # the same link goes on


def _healthy(client: httpx.Client) -> bool:
    try:
        return client.get("/api/progress").status_code == 200
    except httpx.TransportError:
        return False


@pytest.mark.slow
def test_continue_pace_does_not_wait_and_the_end_closes_the_pairs_nobody_answered(tmp_path: Path) -> None:
    out = tmp_path / "run"
    config = RLHFConfig(
        env="CartPole-v1", teacher="human", human_pace="continue", labels=20, total_steps=4096, segment_length=20,
        label_rounds=3, human_retrain_labels=5, eval_episodes=2, out=out,
    )  # fmt: skip
    handles: list[ServerHandle] = []

    def start(workspace: Path) -> None:
        handle = start_server_in_background(workspace, port=_free_port(), mode="thread")
        handles.append(handle)
        store = PreferenceStore(workspace / "prefs.sqlite")
        _, token = store.add_labeler("person")

        def five_labels() -> None:  # the first five, then the person leaves
            with httpx.Client(base_url=handle.url, headers={"Authorization": f"Bearer {token}"}) as client:
                answered = 0
                while answered < 5:
                    answered += _answer(client, store) is not None

        threading.Thread(target=five_labels, daemon=True).start()

    try:
        summary = run_rlhf(config, on_store_ready=start)
    finally:
        for handle in handles:
            handle.stop()
    assert summary["env_steps"] >= 4096 and summary["labels_used"] == 5
    with PreferenceStore(out / "prefs.sqlite") as store:
        stats, status = store.stats(), store.loop_status()
        assert stats.queries == 20 and stats.queries_pending == 0 and store.open_label_count() == 0
        assert store.lease_next(store.get_or_create_labeler("person").id) is None
    assert status is not None and status.phase == "finished" and status.policy_clip == "policy-final.mp4"
    assert (out / "clips" / "policy-final.mp4").stat().st_size > 1000
