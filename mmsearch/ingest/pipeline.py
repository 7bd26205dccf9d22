"""Decode in worker processes with a bounded look-ahead; yield results in input order.

``workers=0`` decodes in this process (small jobs, tests). Workers are *spawned* (not forked) so a
torch runtime already loaded in the parent is never duplicated in a half-initialised state.
"""

from __future__ import annotations

import os
from collections import deque
from concurrent.futures import Future, ProcessPoolExecutor
from typing import Any, Iterable, Iterator, Sequence

from mmsearch.ingest.decode import Loaded, load

#: Below this many files to decode, starting worker processes costs more than it saves.
INLINE_BELOW = 64


def default_workers() -> int:
    return max(1, min(8, (os.cpu_count() or 2) - 1))


def _init_worker() -> None:
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole group: the parent alone handles it
    import torch

    torch.set_num_threads(1)  # one decode per core; the parent does the heavy maths


def _load_many(tasks: Sequence[tuple]) -> list[Loaded]:
    return [load(*t) for t in tasks]


class DecodePool:
    """Map :func:`mmsearch.ingest.decode.load` over tasks, in order, at most ``window`` chunks ahead."""

    def __init__(self, workers: int | None, expected: int) -> None:
        n = default_workers() if workers is None else workers
        self.workers = 0 if expected < INLINE_BELOW else n
        self._pool: ProcessPoolExecutor | None = None

    def __enter__(self) -> "DecodePool":
        if self.workers > 0:
            import multiprocessing as mp

            self._pool = ProcessPoolExecutor(self.workers, mp_context=mp.get_context("spawn"), initializer=_init_worker)
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._pool is not None and exc[0] is not None:  # Ctrl-C or an error: decoded-ahead files are not needed
            procs = list((getattr(self._pool, "_processes", None) or {}).values())
            self._pool.shutdown(wait=False, cancel_futures=True)
            for proc in procs:
                proc.terminate()
            return
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)

    def map(self, tasks: Iterable[tuple], chunk: int = 16) -> Iterator[Loaded]:
        if self._pool is None:
            for t in tasks:
                yield load(*t)
            return
        window = self.workers * 3
        pending: deque[Future] = deque()
        batch: list[tuple] = []
        for t in tasks:
            batch.append(t)
            if len(batch) == chunk:
                pending.append(self._pool.submit(_load_many, batch))
                batch = []
                while len(pending) >= window:
                    yield from pending.popleft().result()
        if batch:
            pending.append(self._pool.submit(_load_many, batch))
        while pending:
            yield from pending.popleft().result()
