"""The service's store writer: one thread that runs the routes' store writes in batches, one commit per batch.

SQLite admits one writer at a time and a durable commit costs an fsync. Running every write on one thread removes
lock contention inside the process (a waiting SQLite writer sleeps 1, 2, 5, 10 ms in its busy handler); draining
the waiting writes into one transaction (:meth:`rlhf.store.PreferenceStore.batch`, "group commit") pays one commit
for all of them. Under load a batch holds the writes that arrived while the previous one ran, so batches grow with
the load and the latency stays about two batch times; a lone write commits at once.

Answers go back to the event loop only after the commit: no client is told "stored" before it is durable. A write
that raises fails alone (the store runs each call in a savepoint); a failed commit fails every write of its batch.
On a server database (PostgreSQL) each write commits on its own: batches of two server processes could deadlock.
"""

from __future__ import annotations

import asyncio
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from rlhf.store import PreferenceStore

_T = TypeVar("_T")
MAX_BATCH = 256
"""Most writes in one transaction (bounds the latency a long queue adds to the first write of a batch)."""


@dataclass
class _Job:
    function: Callable[..., Any]
    args: tuple[Any, ...]
    future: asyncio.Future[Any]
    loop: asyncio.AbstractEventLoop


def _deliver(outcomes: list[tuple[asyncio.Future[Any], bool, Any]]) -> None:
    """On the event loop: resolve the futures of one batch (one wake-up of the loop for the whole batch)."""
    for future, ok, value in outcomes:
        if future.done():  # the request was cancelled (client gone); its write stands
            continue
        if ok:
            future.set_result(value)
        else:
            future.set_exception(value)


class StoreWriter:
    """Runs functions that write to ``store`` on one thread, batched into transactions.

    Args:
        store: the preference store the functions write to.
        lock: held while a batch runs (callers that write outside the writer take it too).
        on_failed_commit: called on the writer thread when a batch's commit fails (drop caches of what it wrote).
    """

    def __init__(
        self,
        store: PreferenceStore,
        lock: threading.RLock,
        on_failed_commit: Callable[[], None] | None = None,
    ) -> None:
        self.store = store
        self.lock = lock
        self.on_failed_commit = on_failed_commit
        self.batches = 0
        self.writes = 0
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="store-writer", daemon=True)
        self._thread.start()

    async def run(self, function: Callable[..., _T], *args: Any) -> _T:
        """Run ``function(*args)`` on the writer thread; returns its result once its batch committed.

        Raises:
            RuntimeError: the writer was closed.
        """
        if not self._thread.is_alive():
            raise RuntimeError("the store writer is closed")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[_T] = loop.create_future()
        self._jobs.put(_Job(function, args, future, loop))
        return await future

    def close(self) -> None:
        """Finish the writes already queued, then stop the thread."""
        if self._thread.is_alive():
            self._jobs.put(None)
            self._thread.join()

    def _run(self) -> None:
        stopping = False
        while not stopping:
            first = self._jobs.get()
            if first is None:
                break
            jobs = [first]
            while len(jobs) < MAX_BATCH:
                try:
                    job = self._jobs.get_nowait()
                except queue.Empty:
                    break
                if job is None:
                    stopping = True
                    break
                jobs.append(job)
            self._run_batch(jobs)
        # Writes queued while closing are refused, not left waiting forever.
        late: list[_Job] = []
        while True:
            try:
                job = self._jobs.get_nowait()
            except queue.Empty:
                break
            if job is not None:
                late.append(job)
        self._answer(late, [(job.future, False, RuntimeError("the store writer is closed")) for job in late])

    def _run_batch(self, jobs: list[_Job]) -> None:
        outcomes: list[tuple[asyncio.Future[Any], bool, Any]]
        if not self.store.serializes_writes:
            # A server database (PostgreSQL): one transaction per write, as batches of two server processes could
            # deadlock on each other's row locks; the database groups concurrent commits itself.
            outcomes = [self._run_alone(job) for job in jobs]
            self.batches += len(jobs)
            self.writes += len(jobs)
            self._answer(jobs, outcomes)
            return
        outcomes = []
        try:
            with self.lock, self.store.batch():
                for job in jobs:
                    try:
                        outcomes.append((job.future, True, job.function(*job.args)))
                    except Exception as error:  # handed to the request that made the write
                        outcomes.append((job.future, False, error))
        except Exception as error:  # the commit failed: nothing of this batch is stored
            if self.on_failed_commit is not None:
                self.on_failed_commit()
            outcomes = [(job.future, False, error) for job in jobs]
        self.batches += 1
        self.writes += len(jobs)
        self._answer(jobs, outcomes)

    def _run_alone(self, job: _Job) -> tuple[asyncio.Future[Any], bool, Any]:
        try:
            with self.lock:
                return job.future, True, job.function(*job.args)
        except Exception as error:  # handed to the request that made the write
            return job.future, False, error

    @staticmethod
    def _answer(jobs: list[_Job], outcomes: list[tuple[asyncio.Future[Any], bool, Any]]) -> None:
        by_loop: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Future[Any], bool, Any]]] = {}
        for job, outcome in zip(jobs, outcomes, strict=True):
            by_loop.setdefault(job.loop, []).append(outcome)
        for loop, delivered in by_loop.items():
            try:
                loop.call_soon_threadsafe(_deliver, delivered)
            except RuntimeError:
                pass  # that event loop is closed: nobody waits for these answers any more
