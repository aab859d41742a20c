"""Benchmark runs recorded one JSON line each, so that a measurement too long for one sitting resumes where it stopped.

A record is a dict with a ``key`` naming what ran (kind, settings hash, seed); a re-run skips keys already in the file.
``code_version()`` hashes the code whose behaviour a record measures (``baselines/`` and ``rlhf/``, committed or
not), so a settings hash built on it makes records of older code stop counting instead of mixing with new ones.
Used by ``rlhf_protocol.py`` and ``ppo_vs_sb3.py``; ``results/README.md`` says which files are kept in the repo.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import hashlib
import json
import multiprocessing
import os
import subprocess
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

from baselines.common.errors import check

Job = TypeVar("Job")

REPO_ROOT = Path(__file__).resolve().parent.parent


def _git(*args: str, cwd: Path = REPO_ROOT) -> str:
    """git's stdout, run at the repository's root (pathspecs are relative to it); "" when git fails."""
    try:
        done = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True)
    except OSError:
        return ""
    return done.stdout if done.returncode == 0 else ""


@functools.cache
def git_commit() -> str:
    return _git("rev-parse", "--short", "HEAD").strip() or "unknown"


_READ_CODE: list[str] = []
"""While ``records_of_code`` holds a hash, the code version that keys and reports use (innermost last)."""


def code_version(root: Path = REPO_ROOT) -> str:
    """Hash of the code that runs: the committed trees of ``baselines/`` and ``rlhf/`` and any uncommitted change
    to them. A commit elsewhere (docs, tests) keeps the results; an uncommitted edit to the loop does not. Within
    ``records_of_code(HASH)``: HASH."""
    return _READ_CODE[-1] if _READ_CODE else _code_version(root)


@contextlib.contextmanager
def records_of_code(code: str | None) -> Iterator[None]:
    """Within the block, ``code_version()`` is ``code`` (None: the code that runs): reading the records an earlier
    code made, e.g. the tables the docs show, after ``baselines/`` or ``rlhf/`` changed (``--no-run --code``)."""
    if code is not None:
        _READ_CODE.append(code)
    try:
        yield
    finally:
        if code is not None:
            _READ_CODE.pop()


@functools.cache
def _code_version(root: Path) -> str:
    trees = _git("rev-parse", "HEAD:baselines", "HEAD:rlhf", cwd=root)
    if not trees:
        return "unknown"
    changed = _git("diff", "HEAD", "--", "baselines", "rlhf", cwd=root)
    for name in _git("ls-files", "--others", "--exclude-standard", "--", "baselines", "rlhf", cwd=root).split():
        changed += name + (root / name).read_bytes().hex()
    return hashlib.sha256((trees + changed).encode()).hexdigest()[:10]


def short_hash(what: Any) -> str:
    """12 hex digits of the SHA-256 of ``what`` as sorted JSON (``str`` for what JSON lacks): a settings hash."""
    return hashlib.sha256(json.dumps(what, sort_keys=True, default=str).encode()).hexdigest()[:12]


def load_records(path: Path) -> dict[str, dict[str, Any]]:
    """Records by key (the last one wins); a line cut short by an interrupted write is skipped."""
    records: dict[str, dict[str, Any]] = {}
    if path.exists():
        for line in path.read_text().splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(record, dict) and "key" in record:
                records[record["key"]] = record
    return records


def append_records(
    finished: Iterable[dict[str, Any]], path: Path, total: int, describe: Callable[[dict[str, Any]], str]
) -> None:
    """Append each record to ``path`` as it comes (flushed, so a kill loses at most the run in progress) and print
    ``[n/total] describe(record)`` for it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as file:
        if file.tell() and not path.read_bytes().endswith(b"\n"):
            file.write("\n")  # end a line cut short by a kill, so the next record starts on its own line
        for count, record in enumerate(finished, 1):
            file.write(json.dumps(record, default=str) + "\n")
            file.flush()
            print(f"[{count}/{total}] {describe(record)}", flush=True)


def init_worker() -> None:
    """One thread per run (the runs are the parallelism) and a progress line per run instead of interleaved bars."""
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(var, "1")
    os.environ.setdefault("TQDM_DISABLE", "1")


def run_and_record(
    run: Callable[[Job], dict[str, Any]],
    jobs: Sequence[Job],
    path: Path,
    workers: int,
    describe: Callable[[dict[str, Any]], str],
) -> None:
    """``run`` each job, ``workers`` at a time in spawned processes (in this one when 1), appending each record to
    ``path`` as it finishes (``append_records``). ``run`` must be picklable: a module-level function or a partial."""
    init_worker()
    if workers == 1:
        append_records(map(run, jobs), path, len(jobs), describe)
        return
    with multiprocessing.get_context("spawn").Pool(workers, initializer=init_worker) as pool:
        append_records(pool.imap_unordered(run, jobs), path, len(jobs), describe)
        pool.close()  # then join: leaving the block terminates, which is for a failure
        pool.join()


def add_seed_set_arguments(
    parser: argparse.ArgumentParser, tuning: Sequence[int], report: Sequence[int], results: Path
) -> None:
    """The flags of a benchmark recorded over a seed set: ``--seeds``, ``--num-seeds``, ``--jobs``, ``--results``,
    ``--markdown``, ``--no-run`` (``chosen_seeds`` reads the first two)."""
    parser.add_argument(
        "--seeds",
        choices=("tuning", "report"),
        default="report",
        help=f"tuning {list(tuning)} or report {list(report)}",
    )
    parser.add_argument("--num-seeds", type=int, default=None, help="only the first N seeds of the set (smoke runs)")
    parser.add_argument("--jobs", type=int, default=2, help="worker processes (one torch thread each)")
    parser.add_argument("--results", type=Path, default=results, help="JSON-lines results file (resumable)")
    parser.add_argument("--markdown", type=Path, default=None, help="also write the table as markdown here")
    parser.add_argument("--no-run", action="store_true", help="only summarize what --results already holds")
    add_code_argument(parser)


def add_code_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--code", default=None, metavar="HASH",
        help="with --no-run: the records of this code of baselines/ and rlhf/ (the hash the docs' tables name), "
        "not of the code here",
    )  # fmt: skip


def check_code_argument(args: argparse.Namespace) -> None:
    check(args.code is None or args.no_run, "--code reads the records of other code: it needs --no-run")


def chosen_seeds(args: argparse.Namespace, tuning: Sequence[int], report: Sequence[int]) -> list[int]:
    """The seeds ``--seeds`` and ``--num-seeds`` pick; ConfigError for a count below 1."""
    check(args.num_seeds is None or args.num_seeds >= 1, f"--num-seeds must be at least 1, got {args.num_seeds}")
    return list(tuning if args.seeds == "tuning" else report)[: args.num_seeds]
