"""Simulated labelers over HTTP for the load and crash tests: each asks for a pair, answers it, repeats."""

from __future__ import annotations

import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import httpx

SIDES = ("left", "right", "tie", "skip")


@dataclass
class Acknowledged:
    """A label the server answered 2xx for."""

    labeler: str
    query_id: int
    side: str
    key: str
    label_id: int


@dataclass
class LoadResult:
    acknowledged: list[Acknowledged] = field(default_factory=list)
    unanswered: list[tuple[str, int, str, str]] = field(default_factory=list)
    """(token, query_id, side, key) of submits that got no answer (the server died mid-request)."""
    errors: list[str] = field(default_factory=list)


def label_concurrently(
    url: str,
    labelers: dict[str, str],
    labels_each: int | None,
    stop: threading.Event | None = None,
    timeout_s: float = 120.0,
    retries: int = 0,
) -> LoadResult:
    """Every labeler (name -> token) on its own thread and connection labels ``labels_each`` pairs.

    A request whose connection breaks is sent again up to ``retries`` times on a new connection (a label with the
    same idempotency key), as the page does; past that the labeler stops, its answer recorded as unanswered.

    With ``labels_each=None`` each labeler goes on until the queue holds nothing it may answer. With k labels per
    pair that is the way to have the queue emptied: fixed quotas can end with the last open pair wanting a label only
    from a labeler who has already answered it.
    """
    result = LoadResult()
    lock = threading.Lock()
    deadline = time.monotonic() + timeout_s

    def work(name: str, token: str, seed: int) -> None:
        headers = {"Authorization": f"Bearer {token}"}
        done = 0
        with httpx.Client(base_url=url, headers=headers, timeout=30) as client:
            while labels_each is None or done < labels_each:
                if time.monotonic() > deadline or (stop and stop.is_set()):
                    return
                try:
                    pair = _send(client, "GET", "/api/queries/next", None, retries)
                except httpx.TransportError:
                    return  # the server is gone
                if pair.status_code != 200:
                    with lock:
                        result.errors.append(f"{name} next: {pair.status_code} {pair.text}")
                    return
                if pair.json()["pair"] is None:
                    if labels_each is None and client.get("/api/progress").json()["queue_size"] == 0:
                        return  # nothing left this labeler may answer
                    time.sleep(0.01)  # what is left is leased to others: their leases end in an answer or expire
                    continue
                query_id = int(pair.json()["pair"]["query_id"])
                side = SIDES[(seed + done) % len(SIDES)]
                key = uuid.uuid4().hex
                body = {"query_id": query_id, "side": side, "seconds_taken": 0.5, "idempotency_key": key}
                try:
                    answer = _send(client, "POST", "/api/labels", body, retries)
                except httpx.TransportError:
                    with lock:
                        result.unanswered.append((token, query_id, side, key))
                    return
                with lock:
                    if answer.status_code == 200:
                        label_id = int(answer.json()["label"]["label_id"])
                        result.acknowledged.append(Acknowledged(name, query_id, side, key, label_id))
                    else:
                        result.errors.append(f"{name} submit: {answer.status_code} {answer.text}")
                        return
                done += 1

    with ThreadPoolExecutor(max_workers=len(labelers)) as pool:
        futures = [pool.submit(work, name, token, i) for i, (name, token) in enumerate(labelers.items())]
        for future in futures:
            future.result()
    return result


def _send(client: httpx.Client, method: str, path: str, body: dict[str, object] | None, retries: int) -> httpx.Response:
    for attempt in range(retries + 1):
        try:
            return client.request(method, path, json=body)
        except httpx.TransportError:
            if attempt == retries:
                raise
            time.sleep(0.05 * 2**attempt)
    raise AssertionError("unreachable")
