"""Labeling-service load: simulated labelers over HTTP on loopback against a real server on a real SQLite file.

Each simulated labeler holds one keep-alive connection and loops without pause: ``GET /api/queries/next``, then
``POST /api/labels`` (with an idempotency key). The client is a small asyncio HTTP/1.1 client, so that the machine's
cores go to the server rather than to the load generator. Targets (issue 6): with 32 labelers on SQLite, p95 of
next-pair and of submit at most 50 ms, and at least 500 labels/s sustained.

    python benchmarks/ui_load.py [--labelers 32] [--seconds 10] [--sqlite-synchronous FULL]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import numpy as np

from feedback_ui.server import start_server_in_background
from rlhf.sample_workspace import add_random_queries, build_workspace

P95_TARGET_MS = 50.0
RATE_TARGET = 500.0


class Connection:
    """One keep-alive HTTP/1.1 connection that sends JSON requests and reads JSON answers."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, token: str, host: str) -> None:
        self.reader = reader
        self.writer = writer
        self.auth = f"Authorization: Bearer {token}\r\n"
        self.host = host

    @classmethod
    async def open(cls, host: str, port: int, token: str) -> Connection:
        reader, writer = await asyncio.open_connection(host, port)
        return cls(reader, writer, token, f"{host}:{port}")

    async def request(self, method: str, path: str, body: dict[str, Any] | None = None) -> tuple[int, Any]:
        payload = b"" if body is None else json.dumps(body).encode()
        head = f"{method} {path} HTTP/1.1\r\nHost: {self.host}\r\n{self.auth}"
        if body is not None:
            head += f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\n"
        self.writer.write((head + "\r\n").encode() + payload)
        await self.writer.drain()
        header = await self.reader.readuntil(b"\r\n\r\n")
        lines = header.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        length = next(int(line.split(":", 1)[1]) for line in lines if line.lower().startswith("content-length:"))
        return status, json.loads(await self.reader.readexactly(length))

    def close(self) -> None:
        self.writer.close()


@dataclass
class Measurements:
    next_ms: list[float] = field(default_factory=list)
    submit_ms: list[float] = field(default_factory=list)
    labels: int = 0
    errors: list[str] = field(default_factory=list)


async def labeler(
    url: str, token: str, start_at: float, stop_at: float, seed: int, think_s: float, out: Measurements
) -> None:
    parts = urlsplit(url)
    assert parts.hostname is not None and parts.port is not None
    connection = await Connection.open(parts.hostname, parts.port, token)
    sides = ("left", "right", "tie", "skip")
    pauses = np.random.default_rng(seed).uniform(0.5 * think_s, 1.5 * think_s, size=1_000_000)
    count = 0
    try:
        while (now := time.perf_counter()) < stop_at:
            measuring = now >= start_at
            began = time.perf_counter()
            status, answer = await connection.request("GET", "/api/queries/next")
            leased = time.perf_counter()
            if status != 200 or answer["pair"] is None:
                out.errors.append(f"next: {status} {answer}")
                return
            body = {
                "query_id": answer["pair"]["query_id"],
                "side": sides[(seed + count) % 4],
                "seconds_taken": 1.0,
                "idempotency_key": uuid.uuid4().hex,
            }
            status, answer = await connection.request("POST", "/api/labels", body)
            done = time.perf_counter()
            if status != 200:
                out.errors.append(f"submit: {status} {answer}")
                return
            count += 1
            if measuring and done < stop_at:
                out.next_ms.append((leased - began) * 1e3)
                out.submit_ms.append((done - leased) * 1e3)
                out.labels += 1
            if think_s > 0:
                await asyncio.sleep(float(pauses[count % len(pauses)]))
    finally:
        connection.close()


async def run_load(
    url: str, tokens: list[str], warmup_s: float, seconds: float, think_s: float = 0.0
) -> tuple[Measurements, float]:
    start_at = time.perf_counter() + warmup_s
    stop_at = start_at + seconds
    out = Measurements()
    await asyncio.gather(*(labeler(url, token, start_at, stop_at, i, think_s, out) for i, token in enumerate(tokens)))
    return out, seconds


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of a process (Linux), to report the server's CPU cost per label."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--labelers", type=int, default=32, help="concurrent simulated labelers")
    parser.add_argument("--seconds", type=float, default=10.0, help="measured duration")
    parser.add_argument("--warmup", type=float, default=2.0, help="unmeasured seconds first")
    parser.add_argument("--queries", type=int, default=20_000, help="pairs in the queue")
    parser.add_argument(
        "--think-ms", type=float, default=0.0, help="mean pause between a labeler's labels (0: no pause, max load)"
    )
    parser.add_argument("--sqlite-synchronous", choices=("FULL", "NORMAL"), default="FULL")
    parser.add_argument("--out", type=Path, default=None, help="write the figures as JSON here")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="ui-load-") as scratch:
        workspace = Path(scratch) / "workspace"
        store = build_workspace(workspace, "CartPole-v1", segments=12, queries=0, segment_length=25, seed=0)
        add_random_queries(store, store.segment_ids(), args.queries, np.random.default_rng(0))
        tokens = [store.add_labeler(f"bench-{i:02d}")[1] for i in range(args.labelers)]
        store.close()
        env = {"RLHF_UI_SQLITE_SYNCHRONOUS": args.sqlite_synchronous}
        with start_server_in_background(workspace, port=0, env=env) as handle:
            cpu_before = cpu_seconds(handle.pid)
            measured, seconds = asyncio.run(
                run_load(handle.url, tokens, args.warmup, args.seconds, args.think_ms / 1e3)
            )
            cpu_after = cpu_seconds(handle.pid)
    server_cpu = None if cpu_before is None or cpu_after is None else cpu_after - cpu_before
    if measured.errors:
        print("errors:", *measured.errors[:5], sep="\n  ")
        return 1
    figures = {
        "labelers": args.labelers,
        "seconds": seconds,
        "sqlite_synchronous": args.sqlite_synchronous,
        "think_ms": args.think_ms,
        "labels": measured.labels,
        "labels_per_second": measured.labels / seconds,
        "next_ms": {f"p{q}": percentile(measured.next_ms, q) for q in (50, 95, 99)},
        "submit_ms": {f"p{q}": percentile(measured.submit_ms, q) for q in (50, 95, 99)},
        "cpu_count": os.cpu_count(),
        "load_average_1min": os.getloadavg()[0],
        "server_cpu_ms_per_label": None if server_cpu is None else server_cpu / max(measured.labels, 1) * 1e3,
    }
    pacing = f"{args.think_ms:.0f} ms pauses" if args.think_ms else "no pauses"
    print(f"{args.labelers} labelers ({pacing}), {seconds:.0f} s, SQLite synchronous={args.sqlite_synchronous}:")
    print(f"  labels/s       {figures['labels_per_second']:8.1f}   (target >= {RATE_TARGET:.0f})")
    for name in ("next", "submit"):
        q = figures[f"{name}_ms"]
        print(f"  {name:<6} p50 {q['p50']:6.1f} ms  p95 {q['p95']:6.1f} ms  p99 {q['p99']:6.1f} ms"
              f"   (target p95 <= {P95_TARGET_MS:.0f} ms)")  # fmt: skip
    if server_cpu is not None:
        print(f"  server CPU     {figures['server_cpu_ms_per_label']:8.2f} ms per label (warm-up included)")
    print(f"  load average   {figures['load_average_1min']:8.2f} (1 min, {os.cpu_count()} cores)")
    if args.out is not None:
        args.out.write_text(json.dumps(figures, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
