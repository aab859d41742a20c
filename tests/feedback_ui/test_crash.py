"""Crash: SIGKILL the server in the middle of a 20-labeler load, restart it: every label that got a 2xx is there,
and retries of the unanswered requests (same idempotency keys) are stored once."""

from __future__ import annotations

import threading
import time
from collections import Counter
from pathlib import Path

import httpx
import pytest

from feedback_ui.server import start_server_in_background
from rlhf.store import PreferenceStore
from tests.feedback_ui.conftest import queue_pairs
from tests.feedback_ui.load import label_concurrently

pytestmark = pytest.mark.slow


def test_sigkill_mid_load_loses_no_acknowledged_label(workspace: Path, store: PreferenceStore) -> None:
    queue_pairs(store, 1000)
    labelers = {f"labeler-{i:02d}": store.add_labeler(f"labeler-{i:02d}")[1] for i in range(20)}
    handle = start_server_in_background(workspace, port=0)
    assert handle.process is not None
    stop = threading.Event()
    results = []
    load = threading.Thread(target=lambda: results.append(label_concurrently(handle.url, labelers, 50, stop)))
    load.start()
    deadline = time.monotonic() + 60
    while len(store.labels()) < 300 and time.monotonic() < deadline:
        time.sleep(0.05)
    handle.process.kill()  # SIGKILL, mid-load
    handle.process.wait()
    stop.set()
    load.join(60)
    result = results[0]
    assert result.errors == []
    # 300 were stored before the kill; each labeler has at most one request in flight, whose answer may be lost.
    assert 300 - len(labelers) <= len(result.acknowledged) < 1000

    stored = {label.id: label for label in store.labels()}
    for ack in result.acknowledged:
        assert ack.label_id in stored, f"acknowledged label {ack.label_id} was lost"
        assert stored[ack.label_id].query_id == ack.query_id and stored[ack.label_id].idempotency_key == ack.key

    with start_server_in_background(workspace, port=0) as restarted:
        for token, query_id, side, key in result.unanswered:
            body = {"query_id": query_id, "side": side, "seconds_taken": 0.5, "idempotency_key": key}
            for _ in range(2):  # the retry, and a retry of the retry
                answer = httpx.post(
                    f"{restarted.url}/api/labels", json=body, headers={"Authorization": f"Bearer {token}"}
                )
                assert answer.status_code == 200, answer.text
        keys = Counter(label.idempotency_key for label in store.labels())
        assert all(keys[key] == 1 for _, _, _, key in result.unanswered)
        assert max(Counter(label.query_id for label in store.effective_labels()).values()) == 1
        # The others carry on where they were: the rest of the queue gets labeled.
        rest = label_concurrently(restarted.url, labelers, labels_each=5)
        assert rest.errors == [] and len(rest.acknowledged) == 100
    assert len(store.effective_labels()) == len(result.acknowledged) + len(result.unanswered) + 100
