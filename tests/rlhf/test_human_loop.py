"""`--teacher human`: the loop queues pairs with clips and keeps training while a person labels over HTTP."""

from __future__ import annotations

import socket
import threading
from pathlib import Path

import httpx
import pytest

from feedback_ui.server import ServerHandle, start_server_in_background
from rlhf.loop import RLHFConfig, run_rlhf
from rlhf.store import PreferenceStore


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
