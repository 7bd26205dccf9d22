"""Decode on a Ray cluster: the read + hash + decode stage of a sync as Ray tasks (``mmsearch index --ray``).

The driver discovers and plans exactly as a local sync does (:mod:`~mmsearch.ingest.plan`: unchanged files
skipped by size/mtime, moved ones linked by content), so only files that need the model reach Ray. Each
task runs :func:`mmsearch.ingest.pipeline._load_many` (the function the local decode workers run) on a chunk of
files and returns its :class:`~mmsearch.ingest.decode.Loaded` results (``uint8`` crops, log-mel windows) through
the object store; the driver embeds them and its single writer commits batch by batch as before
(:mod:`~mmsearch.ingest.commit`). So the vectors are those of a local run and an interrupted run resumes as one.

**Why tasks, not Ray Data.** ``Loaded`` carries numpy arrays of varied shapes and nested metadata (EXIF, a
video's info); Ray Data would turn them into Arrow columns and back, and its streaming executor costs seconds
to start and a core to run on a small machine. Remote tasks over chunks with a bounded number in flight
(:func:`ray.wait`, results as they finish, in no fixed order: a sync does not need one) is the same streaming
with none of that.

**Where.** ``address`` ``"local"`` starts a Ray runtime on this machine (``workers`` CPUs, default all
cores) unless one is already running in this process (then it is used); one started here stays up for the
process's next sync (and the next space of this one) and ends with the process (Ray's exit hook).
``"auto"`` or ``"ray://HOST:10001"`` joins a cluster. Workers read the files by the paths the driver found:
on a cluster they must see the same file system (a shared mount at the same path) and have mmsearch
installed. A task needs one CPU and never imports torch.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any, Iterable, Iterator

from mmsearch.errors import UsageError

if TYPE_CHECKING:
    from mmsearch.ingest.decode import Loaded

MISSING = "--ray needs the ray extra: pip install 'mmsearch[ray]'"
_remote: Any = None  # the remote form of pipeline._load_many, made once per process


def _ray() -> Any:
    try:
        import ray
    except ImportError:
        raise UsageError(MISSING) from None
    return ray


def _decode_task() -> Any:
    global _remote
    if _remote is None:
        from mmsearch.ingest.pipeline import _load_many

        _remote = _ray().remote(num_cpus=1, max_retries=1)(_load_many)
    return _remote


class RayDecode:
    """:class:`~mmsearch.ingest.pipeline.DecodePool`'s interface, decoding on Ray: ``with RayDecode(...) as
    pool: for x in pool.map(tasks): ...``; results in the order they finish."""

    def __init__(self, address: str, workers: int | None, expected: int, inline_below: int = 0) -> None:
        self.address, self.expected = address, expected
        self.cpus = workers or os.cpu_count() or 1
        self.workers = 0  # learnt from the cluster once connected
        self.pending: list[Any] = []  # refs in flight (decode tasks, embed calls): cancelled on leaving

    def __enter__(self) -> "RayDecode":
        if self.expected == 0:
            return self
        ray = _ray()
        if not ray.is_initialized():
            if self.address in ("", "local"):
                ray.init(num_cpus=self.cpus, include_dashboard=False, ignore_reinit_error=True, log_to_driver=False)
            else:
                ray.init(address=self.address, ignore_reinit_error=True, log_to_driver=False)
        self.workers = max(1, int(ray.cluster_resources().get("CPU", 1)))
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.expected == 0:
            return
        ray = _ray()
        for ref in self.pending:  # Ctrl-C or an error: decoded-ahead files are not needed
            try:
                ray.cancel(ref, force=True)
            except (ValueError, TypeError):  # an actor's call (an embed) cannot be forced
                ray.cancel(ref)
        self.pending = []

    def map(self, tasks: Iterable[tuple], chunk: int = 16, ahead: int = 0, window: int | None = None) -> Iterator[Loaded]:
        """``load(*task)`` for each task on the cluster, up to ``window`` chunks in flight (default: enough for
        ``ahead`` files, at least three chunks per CPU)."""
        if self.expected == 0:
            return
        ray, remote = _ray(), _decode_task()
        window = window or max(self.workers * 3, -(-ahead // chunk) + self.workers)
        owners: dict[Any, list[tuple]] = {}
        batch: list[tuple] = []

        def submit(items: list[tuple]) -> None:
            ref = remote.remote(items)
            owners[ref] = items
            self.pending.append(ref)

        def finished(n: int) -> Iterator[Loaded]:
            done, self.pending = ray.wait(self.pending, num_returns=n)
            for ref in done:
                yield from _results(ray, ref, owners.pop(ref))

        for t in tasks:
            batch.append(t)
            if len(batch) == chunk:
                submit(batch)
                batch = []
                if len(self.pending) >= window:
                    yield from finished(1)
        if batch:
            submit(batch)
        while self.pending:
            yield from finished(1)


def _results(ray: Any, ref: Any, items: list[tuple]) -> list[Loaded]:
    """A finished task's results; a task that failed as a whole (its worker died) fails its files, named."""
    from mmsearch.ingest.decode import Loaded

    try:
        return ray.get(ref)
    except Exception as exc:  # a RayTaskError or a lost worker: an event, not an abort
        why = f"decode failed on Ray: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
        return [Loaded(t[0], t[1], error=why) for t in items]
