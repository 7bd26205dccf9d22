"""Sync a store with folders: add new files, re-embed changed ones, link moved/copied ones, drop vanished ones.

The stages (:mod:`~mmsearch.ingest.plan` decides, :mod:`~mmsearch.ingest.pipeline` decodes,
:mod:`~mmsearch.ingest.commit` embeds and writes). Work is committed batch by batch, so an interrupted
run leaves a consistent store and the next run resumes: a committed file's (size, mtime) matches its
row and is skipped.
"""

from __future__ import annotations

import os
import time
from typing import Any, Callable, Iterable, Iterator, Sequence

import numpy as np

from mmsearch.encoders.base import Encoder
from mmsearch.encoders.registry import Portable, portable
from mmsearch.errors import IndexInterrupted, ModelError
from mmsearch.ingest.commit import Segments, WhileDecoding, commit, embed
from mmsearch.ingest.decode import Loaded
from mmsearch.ingest.discover import Candidate, check_roots, display
from mmsearch.ingest.pipeline import INLINE_BELOW, DecodePool
from mmsearch.ingest.plan import Plan, current, gone_uris, hashed, present_and_gone, vanished, walked
from mmsearch.store.schema import Space
from mmsearch.store.store import Store
from mmsearch.types import BatchCommitted, IndexReport
from mmsearch.util import batched

Progress = Callable[[int, int], None]  # (done, total)
OnCommit = Callable[[BatchCommitted], None]  # called after each batch is durable
BATCH = 256  # files per transaction and per encoder call group
#: Sounds decoded ahead of the model, and embedded per step: a sound's windows weigh up to ~15 MB
#: (10 minutes, LAION-CLAP), so at most SOUNDS_AHEAD + SOUNDS_PER_STEP sounds (~0.4 GB) are in memory.
SOUNDS_AHEAD = 16
SOUNDS_PER_STEP = 8
#: Videos decoded ahead of the model: one weighs up to ~90 MB of frames (600 crops of 224², the cap).
VIDEOS_AHEAD = 4
#: Videos decoded in this process are committed at least this often (seconds of work kept if interrupted).
COMMIT_SECONDS = 30.0


class Target:
    """One space a sync writes: the modalities it embeds and counts, its model loaded on first need.

    ``load()`` gives (encoder, space); a model that cannot load fails only the files that needed it.
    ``optional``: modalities embedded only when the model loads anyway (texts in a sound model's space
    whose model the folder's sounds did not need): a load failure then is a notice, not file errors.
    ``portable``: the model as a Ray embed actor loads it (:mod:`~mmsearch.ingest.ray_embed`).
    """

    def __init__(self, spec: str, load: Callable[[], tuple[Encoder, Space]], modalities: Sequence[str], *,
                 space: Space | None = None, counted: Sequence[str] = (), optional: Sequence[str] = (),
                 portable: Portable | None = None) -> None:
        self.spec, self._load, self.space = spec, load, space
        self.portable = portable  # how a Ray actor loads this model (default: the spec with default options)
        self.modalities, self.counted, self.optional = tuple(modalities), tuple(counted), tuple(optional)
        self.encoder: Encoder | None = None
        self.failure: ModelError | None = None

    def get(self) -> tuple[Encoder, Space]:
        if self.failure is not None:
            raise self.failure
        if self.encoder is None:
            try:
                self.encoder, self.space = self._load()
            except ModelError as exc:
                self.failure = exc
                raise
        return self.encoder, self.space


def streamed(decoded: Iterable[Loaded], encoder: Encoder, batch: int, progress: Callable[[int], None], *,
             part: int | None = None) -> Iterator[tuple[list[Loaded], dict[str, np.ndarray], Segments]]:
    """Commit batches of decoded items with their vectors, embedded step by step (``part`` items, default
    the encoder's batch) as items arrive, so the model works while the workers decode the rest of the
    batch (not after the whole batch is in). Pixels and sound windows are dropped once embedded."""
    step = part or int(getattr(encoder, "batch_size", 64) or 64)
    pending: list[Loaded] = []
    vectors: dict[str, np.ndarray] = {}
    segments: Segments = {}
    for part in batched(decoded, min(step, batch)):
        todo = {x.sha256: x for x in part if x.error is None and x.sha256 not in vectors}
        got, windows = embed(encoder, list(todo.values()))
        vectors.update(got)
        segments.update(windows)
        for x in part:
            x.pixels = x.windows = None
        pending += part
        progress(len(pending))
        if len(pending) >= batch:
            yield pending, vectors, segments
            pending, vectors, segments = [], {}, {}
    if pending:
        yield pending, vectors, segments


def gathered(parts: Iterable[tuple[list[Loaded], dict[str, np.ndarray], Segments]], batch: int,
             progress: Callable[[int], None]) -> Iterator[tuple[list[Loaded], dict[str, np.ndarray], Segments]]:
    """Commit batches of items embedded elsewhere (Ray actors' results, as they finish)."""
    done = 0
    pending: list[Loaded] = []
    vectors: dict[str, np.ndarray] = {}
    segments: Segments = {}
    for items, got, windows in parts:
        pending += items
        vectors.update(got)
        segments.update(windows)
        progress(done + len(pending))
        while len(pending) >= batch:  # an actor's call may bring more than a batch: committed batch by batch
            yield pending[:batch], vectors, segments
            done, pending = done + batch, pending[batch:]
            left = {x.sha256 for x in pending}
            vectors = {k: v for k, v in vectors.items() if k in left}
            segments = {k: v for k, v in segments.items() if k in left}
    if pending:
        yield pending, vectors, segments


def sync_paths(store: Store, targets: Sequence[Target], paths: Sequence[str | os.PathLike], *,
               workers: int | None = None, progress: Progress | None = None, limits: dict[str, int] | None = None,
               batch: int = BATCH, on_commit: OnCommit | None = None, gone_ok: bool = False,
               gpu_decode: str = "auto", ray: str | None = None, ray_actors: int | None = None) -> IndexReport:
    """Sync ``paths`` into the ``targets``' spaces (each file into every target that embeds its kind);
    raises :class:`IndexInterrupted` on Ctrl-C (committed work kept).

    ``gone_ok`` (a watcher's batch of changed paths): a path that no longer exists is not a usage error
    but a deletion: its rows, and those below it, are dropped in this same sync, after the rest is
    linked, so a file moved from one path of the batch to another keeps its content and costs no
    model call. Only when its folder is still there (see :func:`~mmsearch.ingest.plan.present_and_gone`).

    ``gpu_decode`` (auto | on | off): whether JPEGs take the tensor path (:mod:`mmsearch.ingest.gpu_decode`).
    ``ray`` (None: local workers; ``"local"``, ``"auto"`` or ``"ray://…"``): decode as Ray tasks and embed
    on ``ray_actors`` Ray actors (default: one per GPU, else one per ~4 CPUs; :mod:`mmsearch.ingest.ray_decode`,
    :mod:`mmsearch.ingest.ray_embed`); planning and writing stay here.
    """
    t0 = time.perf_counter()
    report = IndexReport(space=targets[0].spec if targets else "", spaces=[t.spec for t in targets])
    try:
        roots, deleted = present_and_gone(paths) if gone_ok else (check_roots(paths), [])
        p = walked(store, roots) if roots else Plan([], [])
        report.scanned = len(p.candidates)
        run = _Run(store, report, p.candidates, targets, progress, on_commit, workers, limits, batch, gpu_decode, ray,
                   ray_actors)
        if p.walk_errors:
            run.flush(None, [], p.walk_errors)
        for target in targets:
            run.target(target)
        if run.later:
            run.flush(None, [], run.later)
        gone = vanished(store, p, {path for path, _ in report.errors}) + gone_uris(store, deleted)
        report.notices += [f"{root} is empty now: its {n} entries are kept (an unmounted disk or share?); "
                           f"`mmsearch remove {root}` forgets them" for root, n in p.kept]
        if gone:
            report.removed += store.apply([], None, remove_uris=gone).removed_sources
    except KeyboardInterrupt:
        report.interrupted = True
        report.seconds = time.perf_counter() - t0
        raise IndexInterrupted(report) from None
    report.seconds = time.perf_counter() - t0
    return report


class _Run:
    """One sync's bookkeeping: what is committed, counted and told (progress, on_commit)."""

    def __init__(self, store: Store, report: IndexReport, candidates: list[Candidate], targets: Sequence[Target],
                 progress: Progress | None, on_commit: OnCommit | None, workers: int | None,
                 limits: dict[str, int] | None, batch: int, gpu_decode: str = "auto", ray: str | None = None,
                 ray_actors: int | None = None) -> None:
        self.store, self.report, self.candidates, self.on_commit, self.ray = store, report, candidates, on_commit, ray
        self.workers, self.limits, self.batch, self.gpu_decode = workers, limits, batch, gpu_decode
        self.ray_actors = ray_actors
        self.tell = progress or (lambda _d, _t: None)
        self.total = sum(1 for t in targets for c in candidates if c.modality in t.counted)
        self.done = 0
        self.failed: set[str] = set()
        #: files a model with no space yet could not embed: recorded after every space has had its turn, so a
        #: success in another space (which supersedes errors about the file itself) does not wipe them out
        self.later: list[tuple[str, str]] = []
        self.tell(0, self.total)

    def flush(self, target: Target | None, items: list[Loaded], errors: Sequence[tuple[str, str]] = (),
              vectors: dict[str, np.ndarray] | None = None, segments: Segments | None = None,
              error_space: int = 0) -> None:
        """Commit one batch into ``target``'s space (None: only ``errors`` to record, in ``error_space``)."""
        counted = target.counted if target is not None else ()
        mine = sum(x.modality in counted for x in items)
        start = self.done
        if target is None:
            res = commit(self.store, None, None, [], errors=errors, error_space=error_space)
        else:
            res = commit(self.store, target.encoder, target.space, items, errors=errors, vectors=vectors,
                         segments=segments, counted=counted,
                         partial=lambda f: self.tell(start + int(mine * f), self.total))
        # Counted only once committed: an interrupted run's summary never claims work it did not keep.
        r = self.report
        r.indexed += res.indexed
        r.unchanged += res.unchanged
        r.reused += res.reused
        new = [(path, why) for path, why in res.errors if path not in self.failed]  # a text failing in two spaces: once
        self.failed.update(path for path, _ in new)
        r.failed += len(new)
        r.errors.extend(new)
        self.done += mine
        if self.on_commit:
            self.on_commit(BatchCommitted(res.generation, self.done, self.total, tuple(map(display, res.paths)),
                                          res.failed))
        self.tell(self.done, self.total)

    def target(self, target: Target) -> None:
        """Everything one target's space needs from the walk: current rows skipped, known content linked,
        the rest decoded and embedded."""
        cands = [c for c in self.candidates if c.modality in target.modalities]
        idle = target.encoder is None and target.space is None
        if not cands or (idle and all(c.modality in target.optional for c in cands)):
            return  # only optional kinds, for a model nothing else needs: not loaded for them
        space_id = target.space.id if target.space is not None else None
        _, todo = current(self.store, space_id, cands, tower=_tower(target.modalities))
        waiting = {c.path for c in todo}
        settled = sum(1 for c in cands if c.modality in target.counted and c.path not in waiting)
        self.report.unchanged += settled
        self.done += settled
        fresh: list[Candidate] = []
        copies: list[Loaded] = []
        for linkable, new, same in hashed(self.store, space_id, todo, self.batch, self.limits):
            fresh += new
            copies += same
            if linkable:  # known content (and read errors): linked with no model, even one that cannot load
                if target.space is not None:
                    self.flush(target, linkable)
                else:
                    self.flush(None, [], [(x.path, x.error) for x in linkable if x.error is not None])
        if fresh and self._ready(target, [*fresh, *copies]):
            self._decode(target, fresh)
            self._link_copies(target, copies)

    def _link_copies(self, target: Target, copies: list[Loaded]) -> None:
        """Files with the bytes of a fresh file of this run, linked to the content it was embedded as; a copy
        of one that failed (or changed since it was hashed) is decoded itself, and fails with its own error."""
        if not copies:
            return
        known = self.store.contents_by_sha([x.sha256 for x in copies], target.space.id)
        embedded, rest = [], []
        for x in copies:
            if known.get(x.sha256, (0, False))[1]:
                embedded.append(x)
            else:
                rest.append(Candidate(x.path, x.modality, x.size, x.mtime_ns))
        for part in batched(embedded, self.batch):
            self.flush(target, part)
        if rest:
            self._decode(target, rest)

    def _ready(self, target: Target, items: Sequence[Any]) -> bool:
        """Load the target's model for ``items``; when it cannot load, their files fail with the reason (or,
        for optional kinds only, a notice) and False."""
        try:
            target.get()
            return True
        except ModelError as exc:
            needed = [x for x in items if x.modality not in target.optional]
            failed = [(x.path, f"not embedded: {exc}") for x in needed]
            if failed and target.space is not None:
                self.flush(None, [], failed, error_space=target.space.id)
            self.later += failed if target.space is None else []
            note = f"model {target.spec} could not load, so its space was not updated: {exc}"
            if note not in self.report.notices:
                self.report.notices.append(note)
            return False

    def _decode(self, target: Target, fresh: list[Candidate]) -> None:
        encoder = target.encoder
        recipes = {m: _recipe(encoder, m) for m in {c.modality for c in fresh}}
        sounds = "audio" in recipes or "video" in recipes  # up to ~15 MB of windows (90 MB of frames) each
        ahead = VIDEOS_AHEAD if "video" in recipes else SOUNDS_AHEAD
        chunk, ahead, part = (1, ahead, SOUNDS_PER_STEP) if sounds else (16, self.batch, None)
        if self.ray is not None:
            return self._on_ray(target, [(c.path, c.modality, recipes[c.modality], self.limits) for c in fresh],
                                chunk, part or int(getattr(encoder, "batch_size", 64) or 64), ahead)
        videos = [c for c in fresh if c.modality == "video"]
        if videos and _tower(encoder.space.modalities) == "image" and (len(videos) < 2 or self.workers == 0):
            self._while_decoding(target, videos, recipes["video"])  # decoded here: overlap within each video
            fresh = [c for c in fresh if c.modality != "video"]
            if not fresh:
                return None
        tensors, fresh = self._tensor_path(encoder, recipes, fresh)
        # a video decodes for seconds: two are enough for the workers to decode one while the model embeds another
        with DecodePool(self.workers, len(fresh), inline_below=2 if "video" in recipes else INLINE_BELOW) as pool:
            decoded = pool.map(((c.path, c.modality, recipes[c.modality], self.limits) for c in fresh),
                               chunk=chunk, ahead=ahead, window=ahead if sounds else None)
            if tensors is not None:
                decoded = _alternate(tensors[0].map(tensors[1]), decoded)
            start = self.done
            for chunk_items, vectors, segments in streamed(decoded, encoder, self.batch,
                                                           lambda n: self.tell(start + n, self.total), part=part):
                self.flush(target, chunk_items, vectors=vectors, segments=segments)
                if tensors is not None:  # counted once committed, as the rest of the report
                    self.report.gpu_decoded += sum(x.path in tensors[2] for x in chunk_items if x.error is None)

    def _while_decoding(self, target: Target, videos: list[Candidate], recipe: dict | None) -> None:
        """Videos decoded in this process (one alone, or ``workers=0``), one after another, each one's frames
        embedded on a thread as they decode (:class:`~mmsearch.ingest.commit.WhileDecoding`); committed a
        batch at a time, or every :data:`COMMIT_SECONDS`."""
        from mmsearch.ingest import decode  # looked up per call, as the pool's workers do (benchmarks wrap it)

        done: list[Loaded] = []
        vectors: dict[str, np.ndarray] = {}
        segments: Segments = {}
        since = time.monotonic()
        for c in videos:
            sink = WhileDecoding(target.encoder)
            try:
                x = decode.load(c.path, c.modality, recipe, self.limits, sink=sink)
            except BaseException:
                sink.close()
                raise
            got, windows = sink.result(x)
            done.append(x)
            vectors.update(got)
            segments.update(windows)
            if len(done) >= self.batch or time.monotonic() - since >= COMMIT_SECONDS or c is videos[-1]:
                self.flush(target, done, vectors=vectors, segments=segments)
                done, vectors, segments, since = [], {}, {}, time.monotonic()

    def _on_ray(self, target: Target, tasks: list[tuple], chunk: int, step: int, ahead: int) -> None:
        """Decode as Ray tasks and embed on Ray actors (the tensor path is local-only); commit here."""
        from mmsearch.ingest.ray_decode import RayDecode
        from mmsearch.ingest.ray_embed import embedded

        spec = target.portable or portable(target.spec)
        window = ahead if chunk == 1 else max(4, -(-ahead // chunk))
        with RayDecode(self.ray, self.workers, len(tasks)) as pool:
            start = self.done
            parts = embedded(pool, tasks, spec, chunk=chunk, group=max(1, step // chunk), window=window,
                             requested=self.ray_actors)
            for items, vectors, segments in gathered(parts, self.batch, lambda n: self.tell(start + n, self.total)):
                self.flush(target, items, vectors=vectors, segments=segments)

    def _tensor_path(self, encoder: Encoder, recipes: dict[str, Any], fresh: list[Candidate]) -> tuple[Any, list[Candidate]]:
        """((the tensor decoder, its JPEGs, the paths it decoded) or None, what the workers decode)."""
        from mmsearch.ingest import gpu_decode as gd

        if "image" not in recipes or not any(gd.takes(c) for c in fresh):
            return None, fresh
        device, notice = gd.device_for(self.gpu_decode, encoder)
        if notice is not None and notice not in self.report.notices:
            self.report.notices.append(notice)
        if device is None:
            return None, fresh
        dec = gd.TensorDecode(recipes["image"], device, self.limits)
        jpegs = [c for c in fresh if gd.takes(c)]
        return (dec, jpegs, dec.paths), [c for c in fresh if not gd.takes(c)]


def _alternate(a: Iterator[Loaded], b: Iterator[Loaded]) -> Iterator[Loaded]:
    """Items of both streams, one from each in turn while both last (the workers decode PNGs while the
    device decodes JPEGs), then the rest of the longer one."""
    rest: list[Iterator[Loaded]] = [a, b]
    while rest:
        for it in list(rest):
            x = next(it, None)
            if x is None:
                rest.remove(it)
            else:
                yield x


def _recipe(encoder: Encoder, modality: str) -> dict | None:
    """What decode workers prepare for the model: pixels for images, log-mel windows for sounds, and for
    videos what the model's tower takes (sampled frames for an image model, the soundtrack for a sound one)."""
    if modality == "video":
        modality = _tower(encoder.space.modalities)
    if modality == "image":
        return encoder.image_recipe()
    if modality == "audio":
        return encoder.audio_recipe()  # type: ignore[attr-defined]
    return None


def with_videos(modalities: Sequence[str]) -> tuple[str, ...]:
    """The kinds of file a model embeds: its modalities, and videos when it sees or hears."""
    mods = tuple(modalities)
    return mods + ("video",) if ("image" in mods or "audio" in mods) and "video" not in mods else mods


def _tower(modalities: Sequence[str]) -> str | None:
    """Which of a video a model with these modalities embeds: "image" (its frames) or "audio" (its soundtrack)."""
    return "image" if "image" in modalities else "audio" if "audio" in modalities else None
