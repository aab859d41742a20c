"""Labeling-service load: simulated labelers over HTTP on loopback against a real server on a real database.

Each simulated labeler holds one keep-alive connection and loops without pause: ``GET /api/queries/next``, then
``POST /api/labels`` (with an idempotency key). The client is a small asyncio HTTP/1.1 client, so that the machine's
cores go to the server rather than to the load generator. A request whose connection breaks (a server process
killed) is sent again on a new connection, a label with the same idempotency key.

After the run the store is checked: every acknowledged label is stored exactly once, and nothing else is stored.

Targets: with 32 labelers, p95 of next-pair and of submit at most 50 ms and at least 500 labels/s sustained, on
SQLite with one server process (issue 6) and on PostgreSQL with 4 (issue 16, also with one worker SIGKILLed
mid-load).

    python benchmarks/ui_load.py [--labelers 32] [--seconds 10] [--sqlite-synchronous FULL]
    python benchmarks/ui_load.py --postgres-url postgresql+psycopg://USER:PASSWORD@HOST/SCRATCH_DB --workers 4 \\
        [--kill-worker-after 5]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import tempfile
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import numpy as np
from sqlalchemy import create_engine

from feedback_ui.server import ServerHandle, start_server_in_background
from rlhf.sample_workspace import add_random_queries, build_workspace
from rlhf.store import PreferenceStore
from rlhf.store.schema import metadata

P95_TARGET_MS = 50.0
RATE_TARGET = 500.0


RETRIES = 5
"""Times a request is sent again on a new connection after its connection broke."""
STAGGER_S = 0.02
"""Labeler i starts i * STAGGER_S seconds into the warm-up."""


class Connection:
    """A keep-alive HTTP/1.1 connection that sends JSON requests and reads JSON answers, and opens a new connection
    to send a request again when the old one breaks (its server process was killed)."""

    def __init__(self, host: str, port: int, token: str) -> None:
        self.address = (host, port)
        self.auth = f"Authorization: Bearer {token}\r\n"
        self.host = f"{host}:{port}"
        self.retries = 0
        self._streams: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None

    async def request(self, method: str, path: str, body: dict[str, Any] | None = None) -> tuple[int, Any]:
        for attempt in range(RETRIES + 1):
            try:
                if self._streams is None:
                    self._streams = await asyncio.open_connection(*self.address)
                return await self._send(*self._streams, method, path, body)
            except (ConnectionError, asyncio.IncompleteReadError) as error:
                self.close()
                if attempt == RETRIES:
                    raise ConnectionError(f"{method} {path}: {RETRIES + 1} connections broke") from error
                self.retries += 1
                await asyncio.sleep(0.01 * 2**attempt)
        raise AssertionError("unreachable")

    async def _send(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        method: str,
        path: str,
        body: dict[str, Any] | None,
    ) -> tuple[int, Any]:
        payload = b"" if body is None else json.dumps(body).encode()
        head = f"{method} {path} HTTP/1.1\r\nHost: {self.host}\r\n{self.auth}"
        if body is not None:
            head += f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\n"
        writer.write((head + "\r\n").encode() + payload)
        await writer.drain()
        header = await reader.readuntil(b"\r\n\r\n")
        lines = header.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        length = next(int(line.split(":", 1)[1]) for line in lines if line.lower().startswith("content-length:"))
        return status, json.loads(await reader.readexactly(length))

    def close(self) -> None:
        if self._streams is not None:
            self._streams[1].close()
            self._streams = None


@dataclass
class Measurements:
    next_ms: list[float] = field(default_factory=list)
    submit_ms: list[float] = field(default_factory=list)
    labels: int = 0
    errors: list[str] = field(default_factory=list)
    acknowledged: list[int] = field(default_factory=list)
    """Label ids the server answered 200 for, warm-up included."""
    retries: int = 0


async def labeler(
    url: str, token: str, start_at: float, stop_at: float, seed: int, think_s: float, out: Measurements
) -> None:
    parts = urlsplit(url)
    assert parts.hostname is not None and parts.port is not None
    connection = Connection(parts.hostname, parts.port, token)
    await asyncio.sleep(seed * STAGGER_S)  # people open the page one after another, not all in one millisecond
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
            out.acknowledged.append(int(answer["label"]["label_id"]))
            count += 1
            if measuring and done < stop_at:
                out.next_ms.append((leased - began) * 1e3)
                out.submit_ms.append((done - leased) * 1e3)
                out.labels += 1
            if think_s > 0:
                await asyncio.sleep(float(pauses[count % len(pauses)]))
    except ConnectionError as error:
        out.errors.append(str(error))
    finally:
        out.retries += connection.retries
        connection.close()


async def run_load(
    url: str, tokens: list[str], warmup_s: float, seconds: float, think_s: float = 0.0, kill: KillPlan | None = None
) -> tuple[Measurements, float]:
    start_at = time.perf_counter() + warmup_s
    stop_at = start_at + seconds
    out = Measurements()
    labelers = [labeler(url, token, start_at, stop_at, i, think_s, out) for i, token in enumerate(tokens)]
    killing = [] if kill is None else [kill.run(start_at)]
    await asyncio.gather(*labelers, *killing)
    return out, seconds


@dataclass
class KillPlan:
    """SIGKILL one worker process of ``server`` at ``after_s`` into the measured part."""

    server: ServerHandle
    after_s: float
    killed: int | None = None
    workers_after: int | None = None

    async def run(self, start_at: float) -> None:
        await asyncio.sleep(max(0.0, start_at + self.after_s - time.perf_counter()))
        workers = [pid for pid in self.server.worker_pids() if pid != self.server.pid]
        if not workers:
            raise RuntimeError(f"server {self.server.pid} has no worker process to kill")
        self.killed = workers[0]
        os.kill(self.killed, signal.SIGKILL)


def check_stored(db_url: str, acknowledged: list[int]) -> list[str]:
    """Problems with the store after a run: an acknowledged label missing or stored twice, a label stored that no
    one was told about, a pair with more labels than it wants."""
    problems: list[str] = []
    with PreferenceStore(db_url) as store:
        records = store.labels()
        stored = Counter(record.id for record in records if not record.is_undo)
        per_pair = Counter(record.query_id for record in records if not record.is_undo)
    told = Counter(acknowledged)
    missing = set(told) - set(stored)
    unacknowledged = set(stored) - set(told)
    if missing:
        problems.append(f"{len(missing)} acknowledged label(s) missing from the store")
    if unacknowledged:
        problems.append(f"{len(unacknowledged)} stored label(s) no labeler was told about")
    if per_pair and max(per_pair.values()) > 1:
        problems.append(f"{sum(count > 1 for count in per_pair.values())} pair(s) hold more than their one label")
    return problems


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of a process (Linux), to report the server's CPU cost per label."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def machine_cpu_seconds() -> float:
    """CPU time spent by every process of this machine (Linux): server, database, load generator."""
    fields = [int(value) for value in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle, iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


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
    parser.add_argument(
        "--postgres-url",
        default=None,
        help="run on this PostgreSQL database instead of SQLite (its rlhf_* tables are dropped)",
    )
    parser.add_argument("--workers", type=int, default=1, help="server processes (more than 1 needs --postgres-url)")
    parser.add_argument(
        "--kill-worker-after",
        type=float,
        default=None,
        help="SIGKILL one server process this many seconds into the measured part",
    )
    parser.add_argument("--out", type=Path, default=None, help="write the figures as JSON here")
    args = parser.parse_args()
    if args.kill_worker_after is not None and args.workers < 2:
        parser.error("--kill-worker-after needs --workers 2 or more (a server of one process would just stop)")

    with tempfile.TemporaryDirectory(prefix="ui-load-") as scratch:
        workspace = Path(scratch) / "workspace"
        if args.postgres_url is not None:
            engine = create_engine(args.postgres_url)
            metadata.drop_all(engine)
            engine.dispose()
        db_url = args.postgres_url or f"sqlite:///{workspace / 'prefs.sqlite'}"
        store = build_workspace(
            workspace, "CartPole-v1", segments=12, queries=0, segment_length=25, seed=0, db_url=args.postgres_url
        )
        add_random_queries(store, store.segment_ids(), args.queries, np.random.default_rng(0))
        tokens = [store.add_labeler(f"bench-{i:02d}")[1] for i in range(args.labelers)]
        store.close()
        env = {"RLHF_UI_SQLITE_SYNCHRONOUS": args.sqlite_synchronous}
        options: dict[str, Any] = {"workers": args.workers}
        if args.postgres_url is not None:
            options["db_url"] = args.postgres_url
        with start_server_in_background(workspace, port=0, env=env, **options) as handle:
            kill = None if args.kill_worker_after is None else KillPlan(handle, args.kill_worker_after)
            pids = sorted({handle.pid, *handle.worker_pids()})
            cpu_before = [cpu_seconds(pid) for pid in pids]
            machine_before = machine_cpu_seconds()
            measured, seconds = asyncio.run(
                run_load(handle.url, tokens, args.warmup, args.seconds, args.think_ms / 1e3, kill)
            )
            cpu_after = [cpu_seconds(pid) for pid in pids]
            machine_cpu = machine_cpu_seconds() - machine_before
            if kill is not None:
                time.sleep(2.0)  # the supervisor checks its workers every 0.5 s
                kill.workers_after = len([pid for pid in handle.worker_pids() if pid != handle.pid])
        problems = check_stored(db_url, measured.acknowledged)
    # The CPU of the processes alive from start to end (a killed worker's is lost with it).
    spent = [after - before for before, after in zip(cpu_before, cpu_after, strict=True) if None not in (before, after)]  # type: ignore[operator]
    server_cpu = sum(spent) if spent else None
    if measured.errors:
        print("errors:", *measured.errors[:5], sep="\n  ")
        return 1
    database = "PostgreSQL" if args.postgres_url else f"SQLite synchronous={args.sqlite_synchronous}"
    figures = {
        "labelers": args.labelers,
        "seconds": seconds,
        "database": database,
        "workers": args.workers,
        "sqlite_synchronous": args.sqlite_synchronous,
        "think_ms": args.think_ms,
        "labels": measured.labels,
        "labels_per_second": measured.labels / seconds,
        "next_ms": {f"p{q}": percentile(measured.next_ms, q) for q in (50, 95, 99)},
        "submit_ms": {f"p{q}": percentile(measured.submit_ms, q) for q in (50, 95, 99)},
        "acknowledged": len(measured.acknowledged),
        "store_problems": problems,
        "requests_sent_again": measured.retries,
        "killed_worker": None if kill is None else kill.killed,
        "workers_after_kill": None if kill is None else kill.workers_after,
        "cpu_count": os.cpu_count(),
        "load_average_1min": os.getloadavg()[0],
        "server_cpu_ms_per_label": None
        if server_cpu is None
        else server_cpu / max(len(measured.acknowledged), 1) * 1e3,
        "machine_cpu_ms_per_label": machine_cpu / max(len(measured.acknowledged), 1) * 1e3,
    }
    pacing = f"{args.think_ms:.0f} ms pauses" if args.think_ms else "no pauses"
    processes = f", {args.workers} server processes" if args.workers > 1 else ""
    print(f"{args.labelers} labelers ({pacing}), {seconds:.0f} s, {database}{processes}:")
    print(f"  labels/s       {figures['labels_per_second']:8.1f}   (target >= {RATE_TARGET:.0f})")
    for name in ("next", "submit"):
        q = figures[f"{name}_ms"]
        print(f"  {name:<6} p50 {q['p50']:6.1f} ms  p95 {q['p95']:6.1f} ms  p99 {q['p99']:6.1f} ms"
              f"   (target p95 <= {P95_TARGET_MS:.0f} ms)")  # fmt: skip
    if kill is not None:
        print(f"  killed worker  {kill.killed} at {args.kill_worker_after:.1f} s; {measured.retries} request(s) sent "
              f"again; {kill.workers_after} of {args.workers} workers serving 2 s after the run")  # fmt: skip
    print(f"  store          {len(measured.acknowledged)} labels acknowledged: "
          + ("each stored exactly once, nothing else stored" if not problems else "; ".join(problems)))  # fmt: skip
    if server_cpu is not None:
        print(f"  server CPU     {figures['server_cpu_ms_per_label']:8.2f} ms per label (warm-up included)")
    print(
        f"  machine CPU    {figures['machine_cpu_ms_per_label']:8.2f} ms per label (server, database, load generator)"
    )
    print(f"  load average   {figures['load_average_1min']:8.2f} (1 min, {os.cpu_count()} cores)")
    if args.out is not None:
        args.out.write_text(json.dumps(figures, indent=2) + "\n")
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
