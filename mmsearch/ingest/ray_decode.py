"""A sync on a Ray cluster (``mmsearch index --ray``): the runtime, and the read + hash + decode stage as Ray tasks.

The driver discovers and plans exactly as a local sync does (:mod:`~mmsearch.ingest.plan`: unchanged files
skipped by size/mtime, moved ones linked by content), so only files that need the model reach Ray. Each
decode task runs :func:`mmsearch.ingest.pipeline._load_many` (the function the local decode workers run) on a
chunk of files; its :class:`~mmsearch.ingest.decode.Loaded` results (``uint8`` crops, log-mel windows, a
video's frames) stay in the object store and go to an embed actor (:mod:`~mmsearch.ingest.ray_embed`),
which sends back only vectors and metadata; the driver's single writer commits them batch by batch as
before (:mod:`~mmsearch.ingest.commit`). So the store is a local run's and an interrupted run resumes as one.

**Why tasks and actors, not Ray Data.** ``Loaded`` carries numpy arrays of varied shapes and nested
metadata (EXIF, a video's info); Ray Data would turn them into Arrow columns and back, and its streaming
executor costs seconds to start and a core to run on a small machine. Remote tasks over chunks, each
chunk's result reference handed to an actor's call, with a bounded number of calls in flight
(:func:`ray.wait`, results as they finish, in no fixed order: a sync does not need one), is the same
streaming (decode → embed without the driver) with none of that. What Ray Data would add, autoscaling
the actor pool to the backlog, is not built: the pool has a fixed size (``--ray-actors``).

**Where.** ``address`` ``"local"`` starts a Ray runtime on this machine (``workers`` CPUs, default all
cores) unless one is already running in this process (then it is used); one started here stays up for the
process's next sync (and the next space of this one) and ends with the process (Ray's exit hook).
``"auto"`` or ``"ray://HOST:10001"`` joins a cluster. Workers read the files by the paths the driver found:
on a cluster they must see the same file system (a shared mount at the same path) and have mmsearch
installed. A decode task needs one CPU and never imports torch.
"""

from __future__ import annotations

import os
from typing import Any

from mmsearch.errors import UsageError

MISSING = "--ray needs the ray extra: pip install 'mmsearch[ray]'"
_remote: Any = None  # the remote form of pipeline._load_many, made once per process


def ray_module() -> Any:
    """``ray``, or a usage error saying how to install it."""
    try:
        import ray
    except ImportError:
        raise UsageError(MISSING) from None
    return ray


def decode_task() -> Any:
    """The remote form of the decode workers' function (one CPU, retried once if its worker dies)."""
    global _remote
    if _remote is None:
        from mmsearch.ingest.pipeline import _load_many

        _remote = ray_module().remote(num_cpus=1, max_retries=1)(_load_many)
    return _remote


class RayDecode:
    """One sync's hold on the Ray runtime: connected on entering (when there is work), and what it has in
    flight (decode tasks, embed calls: :attr:`pending`) cancelled on leaving early (Ctrl-C, an error)."""

    def __init__(self, address: str, workers: int | None, expected: int, inline_below: int = 0) -> None:
        self.address, self.expected = address, expected
        self.cpus = workers or os.cpu_count() or 1
        self.workers = 0  # learnt from the cluster once connected
        self.pending: list[Any] = []  # refs in flight (decode tasks, embed calls): cancelled on leaving

    def __enter__(self) -> "RayDecode":
        if self.expected == 0:
            return self
        ray = ray_module()
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
        ray = ray_module()
        for ref in self.pending:  # Ctrl-C or an error: decoded-ahead files are not needed
            try:
                ray.cancel(ref, force=True)
            except (ValueError, TypeError):  # an actor's call (an embed) cannot be forced
                ray.cancel(ref)
        self.pending = []
