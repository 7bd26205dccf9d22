"""Sync a store with folders: add new files, re-embed changed ones, link moved/copied ones, drop vanished ones.

The stages (:mod:`~mmsearch.ingest.plan` decides, :mod:`~mmsearch.ingest.pipeline` decodes,
:mod:`~mmsearch.ingest.commit` embeds and writes). Work is committed batch by batch, so an interrupted
run leaves a consistent store and the next run resumes: a committed file's (size, mtime) matches its
row and is skipped.
"""

from __future__ import annotations

import os
import time
from typing import Callable, Iterable, Iterator, Sequence

import numpy as np

from mmsearch.encoders.base import Encoder
from mmsearch.errors import IndexInterrupted
from mmsearch.ingest.commit import commit, embed
from mmsearch.ingest.decode import Loaded
from mmsearch.ingest.discover import check_roots, display
from mmsearch.ingest.pipeline import DecodePool
from mmsearch.ingest.plan import hashed, plan, vanished
from mmsearch.store.schema import Space
from mmsearch.store.store import Store
from mmsearch.types import BatchCommitted, IndexReport
from mmsearch.util import batched

Progress = Callable[[int, int], None]  # (done, total)
OnCommit = Callable[[BatchCommitted], None]  # called after each batch is durable
BATCH = 256  # files per transaction and per encoder call group


def streamed(decoded: Iterable[Loaded], encoder: Encoder, batch: int,
             progress: Callable[[int], None]) -> Iterator[tuple[list[Loaded], dict[str, np.ndarray]]]:
    """Commit batches of decoded items with their vectors, embedded step by step as items arrive, so
    the model works while the workers decode the rest of the batch (not after the whole batch is in).
    Pixels are dropped once embedded."""
    step = int(getattr(encoder, "batch_size", 64) or 64)
    pending: list[Loaded] = []
    vectors: dict[str, np.ndarray] = {}
    for part in batched(decoded, min(step, batch)):
        todo = {x.sha256: x for x in part if x.error is None and x.sha256 not in vectors}
        vectors.update(embed(encoder, list(todo.values())))
        for x in part:
            x.pixels = None
        pending += part
        progress(len(pending))
        if len(pending) >= batch:
            yield pending, vectors
            pending, vectors = [], {}
    if pending:
        yield pending, vectors


def sync_paths(store: Store, encoder: Encoder, space: Space, paths: Sequence[str | os.PathLike], *,
               workers: int | None = None, progress: Progress | None = None, limits: dict[str, int] | None = None,
               batch: int = BATCH, on_commit: OnCommit | None = None) -> IndexReport:
    """Sync ``paths`` into ``space``; raises :class:`IndexInterrupted` on Ctrl-C (committed work kept)."""
    t0 = time.perf_counter()
    report = IndexReport(space=space.spec)
    try:
        p = plan(store, space, check_roots(paths))
        report.scanned, report.unchanged = len(p.candidates), p.unchanged
        total, done = len(p.candidates), p.unchanged
        tell = progress or (lambda _d, _t: None)
        tell(done, total)

        def flush(items: list[Loaded], errors: Sequence[tuple[str, str]] = (),
                  vectors: dict[str, np.ndarray] | None = None) -> None:
            nonlocal done
            start = done
            res = commit(store, encoder, space, items, errors=errors, vectors=vectors,
                         partial=lambda f: tell(start + int(len(items) * f), total))
            # Counted only once committed: an interrupted run's summary never claims work it did not keep.
            report.indexed += res.indexed
            report.unchanged += res.unchanged
            report.reused += res.reused
            report.failed += len(res.errors)
            report.errors.extend(res.errors)
            done += len(items)
            if on_commit:
                on_commit(BatchCommitted(res.generation, done, total, tuple(map(display, res.paths)), res.failed))
            tell(done, total)

        if p.walk_errors:
            flush([], p.walk_errors)
        fresh = []
        for linkable, new in hashed(store, space, p.todo, batch, limits):
            fresh += new
            if linkable:
                flush(linkable)
        if fresh:
            recipe = encoder.image_recipe()
            with DecodePool(workers, len(fresh)) as pool:
                decoded = pool.map(((c.path, c.modality, recipe, limits) for c in fresh), ahead=batch)
                for chunk, vectors in streamed(decoded, encoder, batch, lambda n: tell(done + n, total)):
                    flush(chunk, vectors=vectors)
        gone = vanished(store, p, {path for path, _ in report.errors})
        if gone:
            report.removed += store.apply([], space.id, remove_uris=gone).removed_sources
    except KeyboardInterrupt:
        report.interrupted = True
        report.seconds = time.perf_counter() - t0
        raise IndexInterrupted(report) from None
    report.seconds = time.perf_counter() - t0
    return report
