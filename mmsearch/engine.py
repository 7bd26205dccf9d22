"""Engine: the public entry point. Wires store, encoders, ingest, indexes and search; holds no logic of its own."""

from __future__ import annotations

import dataclasses
import os
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence

from mmsearch.ann.indexes import IndexSet
from mmsearch.config import Settings
from mmsearch.encoders.base import Encoder
from mmsearch.encoders.registry import Portable, portable
from mmsearch.errors import ModelError, UsageError
from mmsearch.ingest.backfill import backfill_metadata
from mmsearch.ingest.commit import commit, text_items
from mmsearch.ingest.sync import BATCH, OnCommit, Progress, Target, sync_paths
from mmsearch.ingest.targets import choose as choose_targets
from mmsearch.ingest.plan import removal_uris
from mmsearch.ingest.texts import normalise_items, read_text_file
from mmsearch.query.calibrate import BackgroundZ
from mmsearch.query.encode import Query, able_spaces, with_examples
from mmsearch.query.filters import Filters
from mmsearch.query.search import require_spaces, resolve_space, run, targets
from mmsearch.store.schema import Space
from mmsearch.store.store import Store
from mmsearch.types import (CachedExport, DoctorReport, DupCluster, ErrorInfo, Hit, IndexReport, SpaceStats, Stats,
                            WatchReport, WatchSync)


class Engine:
    """A store plus the models that fill and query it.

    >>> with Engine.open("indexes/photos", model="builtin:shapes") as eng:   # doctest: +SKIP
    ...     eng.index(["samples/shapes"])
    ...     for hit in eng.search(text="a red circle", k=5):
    ...         print(hit.rank, round(hit.score, 3), hit.path)
    """

    def __init__(self, store: Store, settings: Settings) -> None:
        self.store = store
        self.settings = settings
        self.calibration = BackgroundZ(store, self.encoder)  # how scores of several spaces are made comparable
        self.indexes = IndexSet(store, settings.index, budget=settings.index_budget(), target=settings.recall_target,
                                prompts=self.calibration.prompts, device=settings.search_device)  # the FAISS caches, loaded on first use
        self.notices: list[str] = []  # what the last call repaired on its own (the CLI shows these)
        self._encoders: dict[str, Encoder] = {}
        self._spaces: tuple[int, list[Space]] = (-1, [])  # (generation read at, spaces) cache for queries

    @classmethod
    def open(cls, path: str | os.PathLike | None = None, *, model: str | Sequence[str] | None = None,
             device: str | None = None,
             batch_size: int | None = None, workers: int | None = None, index: str | None = None,
             runtime: str | None = None, precision: str | None = None, max_audio_seconds: float | None = None,
             recall_target: float | None = None, index_memory: str | None = None, gpu_decode: str | None = None,
             db: str | None = None, create: bool = True) -> "Engine":
        """Open (or with ``create``, make) the store at ``path`` (default ``indexes/default``).

        ``model``: one model spec or several (e.g. a CLIP model for images and a CLAP model for sounds);
        without one, a store keeps using its own models, and a new store gets the defaults
        (:data:`mmsearch.config.DEFAULT_MODELS`) for the kinds of files it is given.
        ``runtime``/``precision``: how models run (see :mod:`mmsearch.encoders.runtime`).
        ``max_audio_seconds``: a longer sound is indexed by its first this-many seconds (default 600).
        ``recall_target``: the Recall@10 approximate indexes are tuned to when built (default 0.95);
        ``index_memory``: bytes of full vectors ``index="auto"`` keeps in RAM before it builds IVF-PQ ("8GB").
        ``gpu_decode``: ``auto`` (default: JPEGs are decoded with nvJPEG and preprocessed on the GPU when the
        image model runs on torch on CUDA), ``on`` (also for a torch model on the CPU: the same tensor path
        there), ``off`` (every image through the CPU decode workers).
        ``db``: a PostgreSQL URL to keep the store's truth in, shared by machines (:mod:`mmsearch.store.store`).
        """
        settings = Settings.resolve(store=os.fspath(path) if path is not None else None, model=model, device=device,
                                    batch_size=batch_size, workers=workers, index=index, runtime=runtime,
                                    precision=precision, max_audio_seconds=max_audio_seconds,
                                    recall_target=recall_target, index_memory=index_memory, gpu_decode=gpu_decode,
                                    db=db)
        return cls(Store(Path(settings.store), create=create, db=settings.db), settings)

    @staticmethod
    def downgrade(revision: str, path: str | os.PathLike | None = None, *, db: str | None = None) -> str:
        """Take the store at ``path`` back to schema ``revision`` (``mmsearch.store.migrate.REVISIONS``), for an
        older release; returns the revision it had. Opening it with this release upgrades it again."""
        from mmsearch.store.store import downgrade

        settings = Settings.resolve(store=os.fspath(path) if path is not None else None, db=db)
        return downgrade(Path(settings.store), revision, db=settings.db)

    def close(self) -> None:
        self.store.close()

    def __enter__(self) -> "Engine":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # ---- models and spaces -----------------------------------------------------------------------
    def encoder(self, spec: str) -> Encoder:
        """The loaded encoder of a model spec (loaded once per engine, through the registry)."""
        if spec not in self._encoders:
            from mmsearch.encoders.registry import load_encoder

            s = self.settings
            self._encoders[spec] = load_encoder(spec, device=s.device, batch_size=s.batch_size, runtime=s.runtime,
                                                precision=s.precision)
        return self._encoders[spec]

    def models(self) -> list[str]:
        """The model specs this engine was opened with (none: the store's own, or the defaults)."""
        m = self.settings.model
        return [] if not m else [m] if isinstance(m, str) else list(m)

    def space(self, name: str | None = None) -> Space:
        """The space a query without ``--model`` reads (``name``: a model spec, space key or id)."""
        spaces, wanted = self._spaces_now(), name or (self.models()[0] if self.models() else None)
        require_spaces(self.store, spaces)
        return resolve_space(spaces, wanted, lambda spec: self.encoder(spec).space.key) if wanted else spaces[0]

    def _spaces_now(self) -> list[Space]:
        gen = self.store.generation()
        if self._spaces[0] != gen:
            self._spaces = (gen, self.store.spaces())
        return self._spaces[1]

    def _targets(self, *, files: bool = True) -> list[Target]:
        """The spaces a write embeds into (:func:`mmsearch.ingest.targets.choose`)."""
        return choose_targets(self.store, self.models(), self.encoder, self._load_space, self._portable, files=files)

    def _portable(self, spec: str) -> Portable | None:
        """How a Ray embed actor loads ``spec`` with this engine's options (None: no factory takes it)."""
        s = self.settings
        try:
            return portable(spec, device=s.device, batch_size=s.batch_size, runtime=s.runtime, precision=s.precision)
        except ModelError:
            return None

    def _load_space(self, spec: str) -> tuple[Encoder, Space]:
        enc = self.encoder(spec)
        return enc, self.store.ensure_space(enc.space)

    @staticmethod
    def runtime_cache(clear: bool = False) -> list[CachedExport]:
        """The models exported for the CPU runtime (shared by every store); ``clear`` deletes them first
        (each is exported again on its next use) and returns what was there."""
        from mmsearch.encoders import cache

        found = cache.describe()
        if clear:
            cache.clear()
        return found

    # ---- writing ---------------------------------------------------------------------------------
    def index(self, paths: Sequence[str | os.PathLike] | str | os.PathLike, *, progress: Progress | None = None,
              commit_every: int | None = None, on_commit: OnCommit | None = None, ray: str | None = None,
              ray_actors: int | None = None) -> IndexReport:
        """Sync the store with files and folders: add new, re-embed changed, link moved, drop vanished.

        Work is committed every ``commit_every`` files (default 256); ``on_commit`` is called with a
        :class:`mmsearch.types.BatchCommitted` once each batch is durable.
        Raises :class:`mmsearch.IndexInterrupted` on Ctrl-C (committed work is kept). ``ray``: decode and embed
        on Ray ("local", "auto", "ray://HOST:PORT"; :mod:`mmsearch.ingest.ray_decode`), on ``ray_actors`` embed
        actors (default: one per GPU, else one per ~4 CPUs; :mod:`mmsearch.ingest.ray_embed`).
        """
        if isinstance(paths, (str, bytes, os.PathLike)):
            paths = [paths]
        elif not isinstance(paths, Iterable):
            raise UsageError(f"paths must be a path or a list of paths, not {type(paths).__name__}")
        batch = BATCH if commit_every is None else commit_every
        if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
            raise UsageError(f"commit_every={commit_every!r}: must be a whole number of at least 1")
        with self._writing("index") as targets:
            report = sync_paths(self.store, targets, list(paths), workers=self.settings.workers,
                                progress=progress, batch=batch, on_commit=on_commit, limits=self.settings.limits(),
                                gpu_decode=self.settings.gpu_decode, ray=ray, ray_actors=ray_actors)
            filled = backfill_metadata(self.store, list(paths))  # images indexed before EXIF was kept
            if filled:
                report.notices.append(f"read the photo metadata (EXIF) of {filled} images indexed before it was kept")
        report.notices.extend(self.notices)
        return report

    def watch(self, paths: Sequence[str | os.PathLike] | str | os.PathLike, *,
              on_sync: Callable[[WatchSync], None] | None = None, stop_event: threading.Event | None = None,
              debounce_ms: int | None = None, step_ms: int | None = None, poll_seconds: float | None = None,
              commit_every: int | None = None) -> WatchReport:
        """Keep the store in sync with folders until ``stop_event`` is set (or Ctrl-C): an initial sync
        as :meth:`index` does, then batches of changes (debounced: ``debounce_ms``, default 1600,
        ``step_ms`` of quiet ends a batch, default 50), each in one write through the same sync path
        (moved files are linked, not embedded again). A root that goes away removes nothing; it is
        synced again when it is back (checked every ``poll_seconds``, default 1). The writer lock is
        held only while a batch is written. ``on_sync`` hears of each step
        (:class:`mmsearch.types.WatchSync`); returns what the session did.
        """
        from mmsearch.ingest import watch as watching
        from mmsearch.ingest.discover import check_roots

        roots = check_roots([paths] if isinstance(paths, (str, bytes, os.PathLike)) else list(paths))
        batch = BATCH if commit_every is None else commit_every
        if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
            raise UsageError(f"commit_every={commit_every!r}: must be a whole number of at least 1")

        def sync(changed: Sequence[str], progress: Progress, gone_ok: bool) -> IndexReport:
            with self._writing("watch") as targets:
                report = sync_paths(self.store, targets, list(changed), workers=self.settings.workers,
                                    progress=progress, batch=batch, limits=self.settings.limits(), gone_ok=gone_ok,
                                    gpu_decode=self.settings.gpu_decode)
            report.notices.extend(self.notices)
            return report

        timing = {k: v for k, v in (("debounce_ms", debounce_ms), ("step_ms", step_ms),
                                    ("poll_seconds", poll_seconds)) if v is not None}
        return watching.watch_roots(self.store, list(dict.fromkeys(roots)), sync, on_sync=on_sync, stop=stop_event,
                                    **timing)

    def add_texts(self, texts: Iterable[str] | Mapping[str, str] | None = None, *,
                  file: str | os.PathLike | None = None) -> int:
        """Add texts (a list, an ``{id: text}`` mapping, or a CSV/JSONL ``file``). Returns how many are new or changed."""
        if (texts is None) == (file is None):
            raise UsageError("give texts or file, not both or neither")
        items = read_text_file(file) if file is not None else normalise_items(texts)  # type: ignore[arg-type]
        if not items:
            return 0
        with self._writing("add-text", files=False) as targets:
            loaded = [t.get() for t in targets]  # every model first: a failure writes nothing
            changed = [commit(self.store, enc, space, text_items(items), kind="text").relinked for enc, space in loaded]
            return changed[0]

    def remove(self, targets: Iterable[str | os.PathLike]) -> int:
        """Forget files (or everything under folders) and added texts (``text:<id>``). Returns sources removed."""
        uris = removal_uris(self.store, targets)
        if not uris:
            return 0
        with self._writing("remove", embed=False):
            return self.store.apply([], None, remove_uris=uris).removed_sources

    @contextmanager
    def _writing(self, what: str, *, embed: bool = True, files: bool = True) -> Iterator[list[Target]]:
        """Under the writer lock: the write targets (when embedding); after, indexes, score calibration and
        manifest brought up to date."""
        self.notices = []
        with self.store.writer_lock(what):
            targets = self._targets(files=files) if embed else []
            before = self.store.generation()
            try:
                yield targets
            finally:
                loaded = [(t.encoder, t.space) for t in targets if t.space is not None and t.encoder is not None]
                self.notices += self.calibration.refresh(loaded, before)  # first: indexes record the last generation
                self.notices += self.indexes.sync_written([sp for _, sp in loaded], before)
                self.store.write_manifest()

    # ---- reading ---------------------------------------------------------------------------------
    def search(self, text: str | Sequence[str] | None = None, image: str | os.PathLike | Any | None = None, *,
               vector: Any = None, audio: str | os.PathLike | bytes | None = None,
               like: Any = (), unlike: Any = (), k: int | None = None, type: str | None = None,
               space: str | None = None, under: str | os.PathLike | None = None,
               where: Sequence[str] | str = (), since: Any = None, until: Any = None,
               path: str | os.PathLike | None = None, collapse_dups: bool | float = False,
               nprobe: int | None = None, ef_search: int | None = None, min_score: float | None = None,
               moments: int = 1, pooling: str = "peak") -> list[Hit]:
        """Search by ``text``, ``image`` (path, bytes or PIL image), ``audio`` (path or bytes) or a raw unit ``vector``.

        ``text`` is read by the query language (``"beach + sunset - people"``, ``"2:dog + cat"``; see
        :mod:`mmsearch.query.parse`); a list of texts adds up their terms. ``image`` may be a list; text,
        images, a sound and the examples ``like`` (+1 each) and ``unlike`` (-0.5 each) combine: paths or
        content ids, an indexed one by its stored vectors. Each term is embedded in every space that
        embeds all of the query's kinds of term, the unit vectors added by weight and the sum normalised.
        ``type``: what comes back, ``image``, ``audio``, ``video``, ``text`` or ``any`` (default: every kind
        of file the store holds that the query reaches; texts when asked for, or when it holds nothing else). ``under``: only files below this folder. ``space``: one model's space; by default
        a query searches every space that can embed it and merges them on calibrated scores
        (:mod:`mmsearch.query.calibrate`). ``min_score``: only hits whose calibrated score is at least this.
        A sound hit says where it matched best (``start``/``end`` seconds); a video hit gives its best
        ``moments`` (seen, heard or both; ``start``/``end``: the first's), scored by its best moment
        (``pooling="peak"``) or its frames' mean (``"mean"``): :mod:`mmsearch.query.moments`.
        ``collapse_dups``: a hit within the near-duplicate threshold (True: 0.95, or a cosine) of a
        higher-ranked one is folded into it (listed in its ``duplicates``); still ``k`` distinct hits
        when the store has them (:mod:`mmsearch.query.dups`). ``k`` defaults to the settings' (10).

        Filters, applied before the vector search (``k`` hits come back when ``k`` pass):
        ``where``: terms such as ``"width>=3000"``, ``"make~canon"``, ``"taken>=2023-06-01"``, ``"gps"``
        (all must hold; :mod:`mmsearch.query.filters` has the grammar); ``path``: a glob or prefix of file
        paths; ``since``/``until``: date taken, else file mtime (a date string, ``date`` or ``datetime``).
        """
        query = Query.make(text, image, vector, audio=audio, like=like, unlike=unlike,
                           k=self.settings.k if k is None else k, type=type, under=under,
                           nprobe=nprobe, ef_search=ef_search, min_score=min_score,
                           max_audio_seconds=self.settings.max_audio_seconds, moments=moments, pooling=pooling)
        filters = Filters.make(where, since=since, until=until, path=path)
        self.notices = []
        # one state, its generation read once, for every read; open while the query embeds (a first query
        # loads its model): no writer waits on a reader, in SQLite's WAL or PostgreSQL's MVCC
        with self.store.snapshot():
            return self._search(query, filters, space, collapse_dups)

    def _search(self, query: Query, filters: Filters, space: str | None, collapse_dups: bool | float) -> list[Hit]:
        gen = self.store.generation()
        query = with_examples(query, self.store)
        wanted = [space] if space else self.models()
        chosen = [self.space(w) for w in wanted]
        spaces = chosen or self._spaces_now()
        plan = targets(self.store, spaces, query, bool(chosen))
        skipped = able_spaces(query, spaces)[1] if query.modality is not None else []

        def top(n: int) -> list[Hit]:
            asked = query if n == query.k else dataclasses.replace(query, k=n)
            hits, self.notices = run(self.store, self.indexes, plan, asked, self.encoder, self.calibration, gen,
                                     filters)
            return hits

        if collapse_dups is False or collapse_dups is None:
            hits = top(query.k)
        else:
            from mmsearch.query import dups

            threshold = dups.DEFAULT_THRESHOLD if collapse_dups is True else collapse_dups
            videos = dups.space_for(self._spaces_now(), "video")  # by frames, whichever models search
            hits = dups.collapsed(top, self._vectors_of, query.k, threshold,
                                  video_space=videos.spec if videos is not None else None)
        self.notices = skipped + self.notices
        return hits

    def _vectors_of(self, spec: str, content_ids: list[int]) -> dict[int, Any]:
        """The stored vectors of some contents in the space of model ``spec``."""
        sp = next((sp for sp in self._spaces_now() if sp.spec == spec), None)
        return {} if sp is None else self.store.vectors_for(content_ids, sp.id)

    def dups(self, threshold: float | None = None, *, type: str = "image", space: str | None = None,
             under: str | os.PathLike | Sequence[str | os.PathLike] | None = None,
             block: int | None = None) -> list[DupCluster]:
        """Near-duplicate clusters of the store's images (``type="audio"``: sounds; ``"video"``: videos, by
        their frames), surest first.

        ``threshold``: the cosine at or above which two items are near-duplicates (default 0.95);
        exact copies (one content, several files) are a cluster too. ``space``: the model whose
        vectors are compared (default: the engine's model of that kind, else the store's first).
        ``under``: only files below this folder (or these). ``block``: vectors compared per step
        (memory; default 4096). The store's index does the range search when it is flat or IVF;
        otherwise (HNSW, PQ, ``under``) an exact index is built. See :mod:`mmsearch.query.dups`.
        """
        from mmsearch.query import dups

        self.notices = []
        gen, spaces = self.store.generation(), self._spaces_now()
        require_spaces(self.store, spaces)
        sp = dups.space_for(spaces, type, self.space(space) if space is not None else None, self.models())
        if sp is None:
            return []
        roots = dups.roots_of(under)
        if roots is None:  # the whole store: its own index may do the range search
            self.notices = self.indexes.sync(sp, [type], save=False, generation=gen)
        ann = self.indexes.get(sp, type).ann if roots is None else None
        return dups.duplicate_clusters(self.store, sp, type, threshold=threshold, under=roots, block=block, ann=ann)

    def file_of(self, content_id: int, modality: str = "image") -> str | None:
        """A file on disk that holds content ``content_id`` of ``modality`` (None: no such item or file)."""
        meta = self.store.content_meta([content_id]).get(content_id)
        if meta is None or meta.modality != modality:
            return None
        return next((u for u in meta.uris if not u.startswith("text:") and os.path.isfile(u)), None)

    def stats(self) -> Stats:
        raw = self.store.stats()
        kinds = {sp.id: self.indexes.shown_kinds(sp) for sp in raw["spaces"]}
        spaces = tuple(SpaceStats(sp.id, sp.key, sp.spec, sp.dim, raw["vectors_per_space"].get(sp.id, 0),
                                  {m: self.indexes.kind_of(sp, m) for m in kinds[sp.id]},
                                  {m: t for m in kinds[sp.id] if (t := self.indexes.tuning_of(sp, m))},
                                  {m: self.indexes.search_path(sp, m) for m in kinds[sp.id]},
                                  {m: b for m in kinds[sp.id] if (b := self.indexes.bytes_of(sp, m))})
                       for sp in raw["spaces"])
        from mmsearch.ann.placement import faiss_label

        return Stats(str(self.store.root), raw["contents"], raw["sources"], spaces, raw["errors"], raw["generation"],
                     self.store.disk_usage(), faiss_label(), "" if self.store.db_path else self.store.database)

    def evaluate(self, dataset: str | os.PathLike, *, images_root: str | os.PathLike | None = None,
                 split: str | None = None, fold: int | None = None, prompt: str | None = None):
        """Retrieval quality on a dataset, exact search vs the ANN index: Recall@1/5/10 both ways on captioned
        images or sounds (:class:`mmsearch.query.evaluate.EvalReport`), or zero-shot accuracy on labelled
        sounds or images, each class as ``prompt`` (ESC-50 ``fold``; :class:`~mmsearch.query.evaluate_audio.ClassifyReport`).

        Indexes the dataset's files and captions into this store (use a scratch store). ``images_root``:
        the folder the dataset's file paths are relative to.
        """
        from mmsearch.query.evaluate import evaluate_dataset

        return evaluate_dataset(self, dataset, root=images_root, split=split, fold=fold, prompt=prompt)

    def errors(self) -> list[ErrorInfo]:
        return [ErrorInfo(*row) for row in self.store.errors_by_path()]

    def doctor(self, repair: bool = True) -> DoctorReport:
        """Check the store (database, index files vs database, files on disk, lock) and repair what can be.

        Repairing takes the writer lock (:class:`StoreLockedError` while another process writes).
        See :mod:`mmsearch.doctor`.
        """
        from mmsearch.doctor import check_store

        report = check_store(self.store, self.indexes, repair=repair)  # IndexSet.check forgets loaded indexes
        self._spaces = (-1, [])
        return report
