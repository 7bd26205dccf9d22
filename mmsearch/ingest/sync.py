"""Sync a store with folders: add new files, re-embed changed ones, link moved/copied ones, drop vanished ones.

Work is committed batch by batch, so an interrupted run leaves a consistent store and the next run
resumes: a committed file's (size, mtime) matches its row and is skipped.
"""

from __future__ import annotations

import os
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Iterable, Iterator, Sequence

import numpy as np

from mmsearch.encoders.base import Encoder
from mmsearch.ingest.decode import Loaded, load
from mmsearch.ingest.discover import Candidate, check_roots, display, walk
from mmsearch.ingest.pipeline import DecodePool
from mmsearch.store.schema import Space
from mmsearch.store.store import Store, Upsert
from mmsearch.types import BatchCommitted, IndexReport

Progress = Callable[[int, int], None]  # (done, total)
OnCommit = Callable[[BatchCommitted], None]  # called after each batch is durable
BATCH = 256  # files per transaction and per encoder call group
HASH_THREADS = 4  # readers/hashers of changed files (I/O bound)


class IndexInterrupted(KeyboardInterrupt):
    """Ctrl-C during ``index``: everything committed so far is kept; ``report`` says how far it got."""

    def __init__(self, report: IndexReport) -> None:
        super().__init__("interrupted")
        self.report = report


def _under(path: str, prefixes: Sequence[str]) -> bool:
    return any(path == p or path.startswith(p.rstrip(os.sep) + os.sep) for p in prefixes)


def sync_paths(
    store: Store,
    encoder: Encoder,
    space: Space,
    paths: Sequence[str | os.PathLike],
    *,
    workers: int | None = None,
    progress: Progress | None = None,
    limits: dict[str, int] | None = None,
    batch: int = BATCH,
    on_commit: OnCommit | None = None,
) -> IndexReport:
    t0 = time.perf_counter()
    roots = check_roots(paths)
    report = IndexReport(space=space.spec)
    walk_errors: list[tuple[str, str]] = []
    candidates = list(walk(roots, lambda p, r: walk_errors.append((p, r)), skip=[str(store.root)]))
    report.scanned = len(candidates)
    total = len(candidates)
    done = 0
    if progress:
        progress(0, total)

    try:
        # 1. What changed? Same (size, mtime) and a vector in this space → nothing to do.
        todo: list[Candidate] = []
        for start in range(0, total, 2048):
            part = candidates[start : start + 2048]
            known = store.lookup_sources([c.path for c in part])
            with_vec = store.contents_with_vectors({k.content_id for k in known.values()}, space.id)
            for c in part:
                k = known.get(c.path)
                if k and k.size == c.size and k.mtime_ns == c.mtime_ns and k.content_id in with_vec:
                    report.unchanged += 1
                    done += 1
                else:
                    todo.append(c)
        if progress:
            progress(done, total)

        # 2. Hash what changed (workers read + sha256, no decoding). Content the store already has a
        #    vector for (moved, renamed, copied, touched) is linked as is: no decode, no model call.
        # 3. Decode + preprocess the rest in workers; embed and commit batch by batch.
        recipe = encoder.image_recipe()

        def flush(items: list[Loaded], errors: list[tuple[str, str]] | None = None) -> None:
            """Commit one batch (embedding what is new), then tell the callbacks."""
            nonlocal done
            info = _commit(store, encoder, space, items, errors or [], report, _partial(progress, done, total, len(items)))
            done += len(items)
            if on_commit:
                on_commit(BatchCommitted(info[0], done, total, tuple(map(display, info[1])), info[2]))
            if progress:
                progress(done, total)

        if walk_errors:
            flush([], walk_errors)
        fresh: list[Candidate] = []
        # Hashing is I/O and hashlib, both of which release the GIL: threads, no process start-up.
        with ThreadPoolExecutor(max_workers=HASH_THREADS) as hasher:
            for start in range(0, len(todo), batch):
                chunk = list(hasher.map(lambda c: load(c.path, c.modality, None, limits, decode=False),
                                        todo[start : start + batch]))
                known = store.contents_by_sha([x.sha256 for x in chunk if x.error is None], space.id)
                linkable, new = [], []
                for x in chunk:
                    (linkable if x.error is not None or known.get(x.sha256, (0, False))[1] else new).append(x)
                fresh.extend(Candidate(x.path, x.modality, x.size, x.mtime_ns) for x in new)
                if linkable:
                    flush(linkable)
        with DecodePool(workers, len(fresh)) as pool:
            for chunk in _batched(pool.map((c.path, c.modality, recipe, limits) for c in fresh), batch):
                flush(chunk)

        # 4. Vanished files: under a root we walked, not seen now, and not under a folder we failed to read.
        # An error recorded for a path that is neither a file now nor failed in this run is stale.
        seen = {c.path for c in candidates}
        protected = [p for p, _ in walk_errors] + [display(p) for p, _ in walk_errors]
        failed_now = {p for p, _ in report.errors}
        gone: list[str] = []
        for root in roots:
            gone.extend(u for u in store.uris_under(root) if u not in seen and not _under(u, protected))
            gone.extend(u for u in store.error_uris_under(root)
                        if u not in seen and u not in failed_now and not _under(u, protected))
        if gone:
            res = store.apply([], space.id, remove_uris=gone)
            report.removed += res.removed_sources
    except KeyboardInterrupt:
        report.interrupted = True
        report.seconds = time.perf_counter() - t0
        raise IndexInterrupted(report) from None
    report.seconds = time.perf_counter() - t0
    return report


def _batched(items: Iterable[Loaded], size: int) -> Iterator[list[Loaded]]:
    chunk: list[Loaded] = []
    for item in items:
        chunk.append(item)
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _partial(progress: Progress | None, done: int, total: int, size: int) -> Callable[[float], None] | None:
    """Progress inside one batch: the bar moves per encoder call, not only per commit."""
    if progress is None:
        return None
    return lambda fraction: progress(done + int(size * fraction), total)


def _embed_in_steps(fn: Callable[[Any], np.ndarray], items: Sequence[Any], step: int, tick: Callable[[int], None]) -> np.ndarray:
    out = []
    for start in range(0, len(items), step):
        out.append(fn(items[start : start + step]))
        tick(min(start + step, len(items)))
    return np.concatenate(out)


def _commit(
    store: Store,
    encoder: Encoder,
    space: Space,
    loaded: list[Loaded],
    errors: list[tuple[str, str]],
    report: IndexReport,
    partial: Callable[[float], None] | None = None,
) -> tuple[int, tuple[str, ...], tuple[str, ...]]:
    """Embed what is new, write one transaction; returns (generation, committed paths, failed paths)."""
    ok = [x for x in loaded if x.error is None]
    # error paths are stored as printable text (a non-UTF-8 name cannot be a database string)
    errors = [(display(p), r) for p, r in errors] + [(display(x.path), x.error) for x in loaded if x.error is not None]
    known = store.contents_by_sha([x.sha256 for x in ok], space.id)
    previous = store.lookup_sources([x.path for x in ok])
    need: dict[str, Loaded] = {}
    unchanged = reused = 0
    for x in ok:
        hit = known.get(x.sha256)
        if hit is not None and hit[1]:
            prev = previous.get(x.path)
            if prev is not None and prev.content_id == hit[0]:
                unchanged += 1  # touched, same bytes
            else:
                reused += 1
        elif x.sha256 in need:
            reused += 1  # duplicate within this batch
        else:
            need[x.sha256] = x
    vectors: dict[str, np.ndarray] = {}
    images = [x for x in need.values() if x.modality == "image"]
    texts = [x for x in need.values() if x.modality == "text"]
    step = int(getattr(encoder, "batch_size", 64) or 64)
    n_need = max(len(images) + len(texts), 1)

    def tick(n: int) -> None:
        if partial is not None:
            partial(n / n_need)

    if images:
        vecs = _embed_in_steps(lambda part: encoder.embed_image_batch(np.stack([x.pixels for x in part])), images, step,
                               lambda n: tick(n))
        vectors.update(zip((x.sha256 for x in images), vecs))
    if texts:
        vecs = _embed_in_steps(lambda part: encoder.embed_texts([x.text for x in part]), texts, step,
                               lambda n: tick(len(images) + n))
        vectors.update(zip((x.sha256 for x in texts), vecs))
    upserts = [
        Upsert(
            uri=x.path, kind="file", size=x.size, mtime_ns=x.mtime_ns, sha256=x.sha256, modality=x.modality,
            width=x.width, height=x.height, text=x.text, vector=vectors.get(x.sha256),
        )
        for x in ok
    ]
    res = store.apply(upserts, space.id, errors=errors)
    # Counted only once committed: an interrupted run's summary never claims work it did not keep.
    report.indexed += len(vectors)
    report.unchanged += unchanged
    report.reused += reused
    report.failed += len(errors)
    report.errors.extend(errors)
    return res.generation, tuple(x.path for x in ok), tuple(p for p, _ in errors)
