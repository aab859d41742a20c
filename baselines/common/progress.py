"""Progress bars for long commands (stderr, so stdout stays parseable).

tqdm is imported when a bar starts, so that a command's ``--help`` does not load it.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from tqdm import tqdm

T = TypeVar("T")


def progress(iterable: Iterable[T], desc: str, total: int | None = None, leave: bool = True) -> Iterator[T]:
    """Wrap ``iterable`` in a progress bar that refreshes at most twice a second."""
    from tqdm.auto import tqdm

    yield from tqdm(iterable, desc=desc, total=total, leave=leave, mininterval=0.5, dynamic_ncols=True)


def progress_bar(total: int, desc: str) -> tqdm[Any]:
    """A manual progress bar (call ``update(n)``; close it or use it as a context manager)."""
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, mininterval=0.5, dynamic_ncols=True)
