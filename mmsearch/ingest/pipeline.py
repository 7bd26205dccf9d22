"""Decode in light worker processes with a bounded look-ahead; yield results in input order.

``workers=0`` decodes in this process (small jobs, tests). Workers are *spawned* (not forked), so a
torch runtime already loaded in the parent is never duplicated in a half-initialised state.

**Light.** A worker runs :func:`mmsearch.ingest.decode.load`: read, hash, decode (JPEGs at a reduced
DCT scale), resize and crop in Pillow + numpy (:mod:`mmsearch.ingest.pixels`) and hand back a
``uint8`` crop. It never imports torch or open_clip (tests/ingest/test_workers.py checks): ~30 MB
resident idle and ~40 MB after decoding 12 MP photos, against ~520 MB and ~740 MB for a worker that
imported torch to run open_clip's transform. This module imports the decoder
lazily, so :func:`_init_worker` runs before numpy is imported in the worker and can pin numpy's BLAS
pool to one thread (it does no BLAS work; idle BLAS threads per worker are waste).

**Dies with its parent.** A ``kill -9`` of ``mmsearch index`` must not leave decoders behind (they
would block on a full result pipe forever: each holds both ends of its queues, so it never sees EOF).
Two guards, set up in :func:`_init_worker`:

* Linux: ``prctl(PR_SET_PDEATHSIG, SIGKILL)``. The signal fires when the *thread* that spawned the
  worker exits, not the process. In Python 3.11 a spawn-context ``ProcessPoolExecutor`` spawns workers
  from ``submit()`` (``_adjust_process_count``), i.e. from the thread iterating :meth:`DecodePool.map`;
  its manager thread spawns only to replace workers retired by ``max_tasks_per_child``, which is not
  used here. A pool is entered, used and shut down within one call on one thread (``sync_paths``),
  so that thread outlives its workers' useful life: use a :class:`DecodePool` from the thread that
  entered it.
* Everywhere: a daemon thread that calls ``os._exit`` once ``os.getppid()`` is no longer the parent's pid
  (other platforms, and the race where the parent died before ``prctl`` ran: the parent's pid is
  passed in and checked once at start).

**How many.** :func:`default_workers` gives a quarter of the cores, at least 1, at most 8. The
encoder runs in the parent on all cores, and with reduced JPEG decodes a 12 MP photo costs a worker
~55 ms of one core (a 640×480 JPEG ~18 ms) while a CPU ViT-B/32 forward pass takes 68–88 ms per
image on both cores of the 2-core machine in benchmarks/RESULTS.md, so one decoder per four cores
keeps the encoder fed without taking its cores
(2 cores → 1 worker, 8 → 2, 16 → 4). Pass ``--workers`` for another balance: a GPU encoder leaves
the cores free, and more workers then help.
"""

from __future__ import annotations

import os
from collections import deque
from concurrent.futures import Future, ProcessPoolExecutor
from typing import TYPE_CHECKING, Any, Iterable, Iterator, Sequence

if TYPE_CHECKING:
    from mmsearch.ingest.decode import Loaded

#: Below this many files to decode, starting worker processes costs more than it saves.
INLINE_BELOW = 64

#: Thread pools a worker never needs more than one thread of (numpy's BLAS, OpenMP).
_ONE_THREAD = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "VECLIB_MAXIMUM_THREADS")
_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
_WATCH_SECONDS = 0.5


def default_workers() -> int:
    return max(1, min(8, (os.cpu_count() or 2) // 4))


def _init_worker(parent: int) -> None:
    """Runs first in each worker: ignore Ctrl-C, die with ``parent``, keep thread pools at one thread."""
    import signal

    # Ctrl-C, and SIGTERM from a service manager (systemctl stop, docker stop), reach the whole group: the
    # parent alone handles them (a clean stop with a summary); workers die with it all the same (below)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    for name in _ONE_THREAD:
        os.environ.setdefault(name, "1")
    _die_with_parent(parent)


def _die_with_parent(parent: int) -> None:
    import signal
    import sys
    import threading

    if sys.platform.startswith("linux"):
        try:
            import ctypes

            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
        except (OSError, AttributeError):  # no prctl (an odd libc): the watchdog below still works
            pass
    if os.getppid() != parent:  # the parent died before the guard was set
        os._exit(1)

    def watch() -> None:
        import time

        while os.getppid() == parent:
            time.sleep(_WATCH_SECONDS)
        os._exit(1)

    threading.Thread(target=watch, name="mmsearch-parent-watch", daemon=True).start()


def _load_many(tasks: Sequence[tuple]) -> list[Loaded]:
    from mmsearch.ingest.decode import load

    return [load(*t) for t in tasks]


class DecodePool:
    """Map :func:`mmsearch.ingest.decode.load` over tasks, in order, a bounded number of chunks ahead."""

    def __init__(self, workers: int | None, expected: int, inline_below: int = INLINE_BELOW) -> None:
        """``inline_below``: fewer tasks than this are decoded in this process (starting workers costs
        about a second; a task worth more, such as a video, lowers it)."""
        n = default_workers() if workers is None else workers
        self.workers = 0 if expected < inline_below else n
        self._pool: ProcessPoolExecutor | None = None

    def __enter__(self) -> "DecodePool":
        if self.workers > 0:
            import multiprocessing as mp

            self._pool = ProcessPoolExecutor(self.workers, mp_context=mp.get_context("spawn"),
                                             initializer=_init_worker, initargs=(os.getpid(),))
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

    def map(self, tasks: Iterable[tuple], chunk: int = 16, ahead: int = 0, window: int | None = None) -> Iterator[Loaded]:
        """``load(*task)`` for each task, in order. Workers decode up to ``ahead`` files (at least three
        chunks per worker) before the consumer takes them: with ``ahead`` = one commit batch, the next
        batch decodes while the parent embeds this one. ``window``: at most this many chunks in flight
        (a hard bound for heavy results, such as sounds' windows)."""
        if self._pool is None:
            from mmsearch.ingest.decode import load

            for t in tasks:
                yield load(*t)
            return
        window = window or max(self.workers * 3, -(-ahead // chunk) + self.workers)
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
