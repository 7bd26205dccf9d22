"""Batch back-off: run a batch function over items in chunks, halving a chunk that runs out of memory.

A GPU batch that does not fit (``torch.cuda.OutOfMemoryError``: a folder of 50 MP photos after one of
phone shots) is split in halves and each half retried, down to one item; an item that fails alone
is handed back with its exception, for the caller to fall back on or record. The size that worked is
kept for later chunks (memory that ran out once runs out again), so only the first too-big batch
pays for the retries. Generic and torch-free: the exception types are the caller's, so the CPU tests
drive it with a fake.
"""

from __future__ import annotations

from collections import deque
from typing import Callable, Generic, Sequence, TypeVar

T = TypeVar("T")
R = TypeVar("R")


class Halving(Generic[T, R]):
    """Chunks of at most ``size`` items; ``errors``: the exception types that mean "too big"."""

    def __init__(self, size: int, errors: tuple[type[BaseException], ...], *,
                 recover: Callable[[], None] | None = None) -> None:
        if size < 1:
            raise ValueError(f"batch size {size} must be at least 1")
        self.size, self.errors, self.recover = size, errors, recover

    def run(self, items: Sequence[T], fn: Callable[[list[T]], R]) -> list[tuple[list[T], R | BaseException]]:
        """``(chunk, fn(chunk))`` for consecutive chunks covering ``items`` in order; a chunk of one that
        still raises comes back as ``(chunk, exception)``. ``recover()`` runs after each "too big" error
        (e.g. ``torch.cuda.empty_cache``); other exceptions propagate."""
        out: list[tuple[list[T], R | BaseException]] = []
        todo: deque[list[T]] = deque([list(items)] if items else [])
        while todo:
            chunk = todo.popleft()
            if len(chunk) > self.size:  # cut to the size that works now
                todo.extendleft(reversed([chunk[i : i + self.size] for i in range(0, len(chunk), self.size)]))
                continue
            try:
                out.append((chunk, fn(chunk)))
            except self.errors as exc:
                if self.recover is not None:
                    self.recover()
                if len(chunk) == 1:
                    out.append((chunk, exc))
                    continue
                half = (len(chunk) + 1) // 2
                self.size = min(self.size, half)
                todo.extendleft([chunk[half:], chunk[:half]])
        return out
