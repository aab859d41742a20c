"""Progress bars for long commands (stderr, so stdout stays parseable)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any, TypeVar

from tqdm.auto import tqdm

T = TypeVar("T")


def progress(iterable: Iterable[T], desc: str, total: int | None = None, leave: bool = True) -> Iterator[T]:
    """Wrap ``iterable`` in a progress bar that refreshes at most twice a second."""
    yield from tqdm(iterable, desc=desc, total=total, leave=leave, mininterval=0.5, dynamic_ncols=True)


def progress_bar(total: int, desc: str) -> tqdm[Any]:
    """A manual progress bar (call ``update(n)``; close it or use it as a context manager)."""
    return tqdm(total=total, desc=desc, mininterval=0.5, dynamic_ncols=True)
