"""Data parallelism through ``torch.distributed``, launched by ``torchrun`` (gloo on the CPU, nccl on CUDA).

A trainer asks :func:`init_world` once: outside ``torchrun`` (no ``WORLD_SIZE`` above 1 in the environment) it is
one process and nothing here does anything. Under ``torchrun --nproc_per_node=N`` each process is a rank of the
world; the trainer gives each rank ``1/N`` of the envs and, after every backward pass, averages one flat gradient
buffer over the ranks (:meth:`World.all_reduce_mean_`), so the ranks' parameters stay identical. Running statistics
that normalize inputs are merged over the ranks after each rollout (:meth:`World.merge_stats_`).

A collective that fails because another rank is gone (killed, crashed, its host down) is a :class:`RankLost`, one
line, instead of a traceback from deep inside gloo or a hang: gloo notices a closed connection at once, and every
collective has a timeout (``RLHF_DIST_TIMEOUT`` seconds, default 300).
"""

from __future__ import annotations

import datetime
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from baselines.common.errors import ConfigError, RankLost, check
from baselines.common.normalization import RunningMeanStd

TIMEOUT_VARIABLE = "RLHF_DIST_TIMEOUT"


@dataclass(frozen=True)
class World:
    """This process's place among the ranks: ``rank`` of ``size`` (one process: 0 of 1)."""

    rank: int = 0
    size: int = 1

    @property
    def is_main(self) -> bool:
        """Rank 0: the one that writes the run folder, the metrics, checkpoints and the report."""
        return self.rank == 0

    def all_reduce_sum_(self, tensor: torch.Tensor) -> None:
        """Sum ``tensor`` over the ranks, in place (one call for a whole flat buffer)."""
        if self.size > 1:
            with _collective("all_reduce"):
                dist.all_reduce(tensor)

    def all_reduce_mean_(self, tensor: torch.Tensor) -> None:
        """Average ``tensor`` over the ranks, in place."""
        if self.size > 1:
            self.all_reduce_sum_(tensor)
            tensor.div_(self.size)

    def broadcast_(self, tensor: torch.Tensor, src: int = 0) -> None:
        """Copy rank ``src``'s ``tensor`` into every rank's, in place."""
        if self.size > 1:
            with _collective("broadcast"):
                dist.broadcast(tensor, src)

    def broadcast_object(self, value: Any, src: int = 0) -> Any:
        """Rank ``src``'s ``value`` (picklable) on every rank."""
        if self.size == 1:
            return value
        box = [value]
        with _collective("broadcast"):
            dist.broadcast_object_list(box, src)
        return box[0]

    def gather_objects(self, value: Any) -> list[Any]:
        """Every rank's ``value`` (picklable), in rank order, on every rank."""
        if self.size == 1:
            return [value]
        boxes: list[Any] = [None] * self.size
        with _collective("all_gather"):
            dist.all_gather_object(boxes, value)
        return boxes

    def merge_stats_(self, stats: RunningMeanStd, start: dict[str, Any]) -> None:
        """Every rank folded its own data into ``stats`` since ``start`` (``stats.state_dict()`` then): fold all
        ranks' data into ``start``, in rank order, so every rank ends with the same statistics."""
        if self.size == 1:
            return
        added = stats.since(start)
        merged = RunningMeanStd.from_state(start)
        for count, mean, var in self.gather_objects(added):
            merged.merge(count, mean, var)
        stats.load_state_dict(merged.state_dict())


SINGLE = World()


@contextmanager
def _collective(name: str) -> Iterator[None]:
    try:
        yield
    except (RuntimeError, dist.DistBackendError) as error:
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise RankLost(f"{name} across the ranks failed: another rank stopped or did not answer ({first})") from None


def launched() -> bool:
    """Whether this process is one of several started by ``torchrun`` (``WORLD_SIZE`` > 1)."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def init_world(device: str = "cpu") -> World:
    """This process's :class:`World`; under ``torchrun`` the process group is set up on the first call (gloo on the
    CPU, nccl on CUDA, each rank on its own GPU ``LOCAL_RANK``)."""
    if dist.is_available() and dist.is_initialized():
        return World(dist.get_rank(), dist.get_world_size())
    if not launched():
        return SINGLE
    check(dist.is_available(), "this torch build has no torch.distributed: run without torchrun")
    try:
        timeout = float(os.environ.get(TIMEOUT_VARIABLE, "300"))
    except ValueError:
        raise ConfigError(
            f"{TIMEOUT_VARIABLE} must be a number of seconds, got {os.environ[TIMEOUT_VARIABLE]!r}"
        ) from None
    check(timeout > 0, f"{TIMEOUT_VARIABLE} must be positive, got {timeout}")
    backend = "nccl" if device.startswith("cuda") else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    try:
        dist.init_process_group(backend, timeout=datetime.timedelta(seconds=timeout))
    except (RuntimeError, ValueError) as error:
        message = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ConfigError(f"torch.distributed could not start ({backend}): {message}") from None
    return World(dist.get_rank(), dist.get_world_size())


def close_world() -> None:
    """Tear the process group down (a no-op outside ``torchrun``)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def finish_world() -> None:
    """The end of a command under ``torchrun``: wait until every rank is done (rank 0 writes its run folder last),
    then tear the process group down together. A rank that exits while another still holds gloo's connections
    can bring that one down with it."""
    if dist.is_available() and dist.is_initialized():
        with _collective("barrier"):
            dist.barrier()
        dist.destroy_process_group()
