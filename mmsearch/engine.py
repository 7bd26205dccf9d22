"""Engine: the public entry point. Wires store, encoders, ingest and search; holds no logic of its own."""

from __future__ import annotations

import builtins
import os
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from mmsearch.ann.faiss_index import SearchParams
from mmsearch.ann.sync import SpaceIndex, recorded_kind, repair_notice
from mmsearch.config import DEFAULT_MODEL, Settings
from mmsearch.encoders.base import Encoder
from mmsearch.errors import ModelError, StoreError, UsageError
from mmsearch.ingest.sync import BATCH, OnCommit, Progress, sync_paths
from mmsearch.ingest.texts import normalise_items, read_text_file, text_sha
from mmsearch.query.search import TYPES, search_space
from mmsearch.store.schema import Space
from mmsearch.store.store import Store, Upsert
from mmsearch.types import DoctorReport, ErrorInfo, Hit, IndexReport, SpaceStats, Stats


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
        self._encoders: dict[str, Encoder] = {}
        self._indexes: dict[tuple[int, str], SpaceIndex] = {}
        self._spaces: tuple[int, list[Space]] = (-1, [])  # (generation read at, spaces) cache for queries
        self.notices: list[str] = []  # what the last call repaired on its own (the CLI shows these)

    # ---- lifecycle -------------------------------------------------------------------------------
    @classmethod
    def open(
        cls,
        path: str | os.PathLike | None = None,
        *,
        model: str | None = None,
        device: str | None = None,
        batch_size: int | None = None,
        workers: int | None = None,
        index: str | None = None,
        create: bool = True,
    ) -> "Engine":
        """Open (or with ``create``, make) the store at ``path`` (default ``indexes/default``)."""
        settings = Settings.resolve(
            store=os.fspath(path) if path is not None else None, model=model, device=device,
            batch_size=batch_size, workers=workers, index=index,
        )
        return cls(Store(Path(settings.store), create=create), settings)

    def close(self) -> None:
        self.store.close()

    def __enter__(self) -> "Engine":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # ---- models and spaces -----------------------------------------------------------------------
    def encoder(self, spec: str) -> Encoder:
        if spec not in self._encoders:
            from mmsearch.encoders.registry import load_encoder

            self._encoders[spec] = load_encoder(spec, device=self.settings.device, batch_size=self.settings.batch_size)
        return self._encoders[spec]

    def _write_space(self) -> tuple[Encoder, Space]:
        """The space new content is embedded into: --model, else the store's first, else the default."""
        spaces = self.store.spaces()
        spec = self.settings.model or (spaces[0].spec if spaces else DEFAULT_MODEL)
        enc = self.encoder(spec)
        return enc, self.store.ensure_space(enc.space)

    def _spaces_at(self, generation: int) -> list[Space]:
        if self._spaces[0] != generation:
            self._spaces = (generation, self.store.spaces())
        return self._spaces[1]

    def _read_space(self, space: str | None, generation: int | None = None) -> Space:
        spaces = self._spaces_at(self.store.generation() if generation is None else generation)
        wanted = space or self.settings.model
        if not spaces:
            raise StoreError("store is empty", path=str(self.store.root), hint="run `mmsearch index PATH` first")
        if wanted is None:
            return spaces[0]
        for sp in spaces:
            if wanted in (sp.spec, sp.key, str(sp.id)):
                return sp
        key = self.encoder(wanted).space.key  # same weights under another spec (e.g. a moved local-dir)
        for sp in spaces:
            if sp.key == key:
                return sp
        held = ", ".join(sp.spec for sp in spaces)
        raise ModelError(
            f"store has no vectors for model {wanted!r}; it holds: {held}",
            hint="query with one of those (--model), or index with this model first",
        )

    def _index(self, space: Space, modality: str) -> SpaceIndex:
        key = (space.id, modality)
        if key not in self._indexes:
            self._indexes[key] = SpaceIndex(self.store, space.id, space.key, modality, self.settings.index)
        return self._indexes[key]

    def _sync_indexes(
        self, space: Space, *, save: bool, generation: int | None = None, since: int | None = None,
        modalities: Sequence[str] | None = None,
    ) -> None:
        """Bring the space's indexes up to date; collect a notice when that repaired something."""
        for modality in modalities or space.modalities.split(","):
            idx = self._index(space, modality)
            notice = repair_notice(idx, idx.sync(save=save, generation=generation), since)
            if notice:
                self.notices.append(notice)

    def _sync_written(self, space: Space, before: int) -> None:
        """After a write to ``space``: its indexes, and those of any other space that lost vectors
        (a vanished or changed file drops its content's vectors in every model)."""
        self._sync_indexes(space, save=True, since=before)
        for other in self.store.spaces():
            if other.id != space.id and any(
                self.store.changes(other.id, m, before)[1] for m in other.modalities.split(",")
            ):
                self._sync_indexes(other, save=True, since=before)

    # ---- writing ---------------------------------------------------------------------------------
    def index(
        self,
        paths: Sequence[str | os.PathLike] | str | os.PathLike,
        *,
        progress: Progress | None = None,
        commit_every: int | None = None,
        on_commit: OnCommit | None = None,
    ) -> IndexReport:
        """Sync the store with files and folders: add new, re-embed changed, link moved, drop vanished.

        Work is committed every ``commit_every`` files (default 256); ``on_commit`` is called with a
        :class:`mmsearch.types.BatchCommitted` once each batch is durable.
        Raises :class:`mmsearch.ingest.sync.IndexInterrupted` on Ctrl-C (committed work is kept).
        """
        if isinstance(paths, (str, bytes, os.PathLike)):
            paths = [paths]
        elif not isinstance(paths, Iterable):
            raise UsageError(f"paths must be a path or a list of paths, not {type(paths).__name__}")
        batch = BATCH if commit_every is None else commit_every
        if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
            raise UsageError(f"commit_every={commit_every!r}: must be a whole number of at least 1")
        self.notices = []
        with self.store.writer_lock("index"):
            enc, space = self._write_space()
            before = self.store.generation()
            try:
                report = sync_paths(self.store, enc, space, list(paths), workers=self.settings.workers,
                                    progress=progress, batch=batch, on_commit=on_commit)
            finally:
                self._sync_written(space, before)
                self.store.write_manifest()
            report.notices.extend(self.notices)
            return report

    def add_texts(self, texts: Iterable[str] | Mapping[str, str] | None = None, *, file: str | os.PathLike | None = None) -> int:
        """Add texts (a list, an ``{id: text}`` mapping, or a CSV/JSONL ``file``). Returns how many are new or changed."""
        if (texts is None) == (file is None):
            raise UsageError("give texts or file, not both or neither")
        items = read_text_file(file) if file is not None else normalise_items(texts)  # type: ignore[arg-type]
        if not items:
            return 0
        self.notices = []
        with self.store.writer_lock("add-text"):
            enc, space = self._write_space()
            before = self.store.generation()
            uris = [f"text:{key}" for key, _ in items]
            previous = self.store.lookup_sources(uris)
            shas = [text_sha(t) for _, t in items]
            known = self.store.contents_by_sha(shas, space.id)
            need = {sha: t for (_, t), sha in zip(items, shas) if not known.get(sha, (0, False))[1]}
            vectors = dict(zip(need, enc.embed_texts(list(need.values())))) if need else {}
            upserts = [
                Upsert(uri=uri, kind="text", size=len(t.encode()), mtime_ns=0, sha256=sha, modality="text",
                       text=t, vector=vectors.get(sha))
                for uri, (_, t), sha in zip(uris, items, shas)
            ]
            changed = sum(
                1 for u in upserts if u.uri not in previous or previous[u.uri].content_id != known.get(u.sha256, (None,))[0]
            )
            self.store.apply(upserts, space.id)
            self._sync_written(space, before)
            self.store.write_manifest()
            return changed

    def remove(self, targets: Iterable[str | os.PathLike]) -> int:
        """Forget files (or everything under folders) and added texts (``text:<id>``). Returns sources removed."""
        if isinstance(targets, (str, bytes, os.PathLike)):
            targets = [targets]  # one path, not its characters (iterating "/photos" would name "/")
        uris: list[str] = []
        for t in targets:
            if not isinstance(t, (str, bytes, os.PathLike)):
                raise UsageError(f"remove takes paths or text:ID strings, not {type(t).__name__}")
            t = os.fsdecode(t)
            if t.startswith("text:"):
                uris.append(t)
            else:
                uris.extend(self.store.uris_under(os.path.abspath(t)))
                uris.extend(self.store.error_uris_under(os.path.abspath(t)))
        if not uris:
            return 0
        self.notices = []
        with self.store.writer_lock("remove"):
            before = self.store.generation()
            res = self.store.apply([], None, remove_uris=uris)
            for space in self.store.spaces():
                self._sync_indexes(space, save=True, since=before)
            self.store.write_manifest()
            return res.removed_sources

    # ---- reading ---------------------------------------------------------------------------------
    def search(
        self,
        text: str | None = None,
        image: str | os.PathLike | Any | None = None,
        *,
        vector: np.ndarray | None = None,
        k: int = 10,
        type: str | None = None,
        space: str | None = None,
        under: str | os.PathLike | None = None,
        nprobe: int | None = None,
        ef_search: int | None = None,
    ) -> list[Hit]:
        """Search by ``text``, ``image`` (path, bytes or PIL image) or a raw unit ``vector``.

        ``type``: what comes back, ``image``, ``text`` or ``any`` (default: images when the store has
        any, else texts). ``under``: only files below this folder.
        """
        given = [x is not None for x in (text, image, vector)]
        if sum(given) != 1:
            raise UsageError("give exactly one of text, image or vector")
        if not isinstance(k, int) or k < 1:
            raise UsageError(f"k={k!r}: must be a positive whole number")
        if type is not None and type not in TYPES:
            raise UsageError(f"type={type!r}: expected one of {', '.join(TYPES)}")
        if text is not None and not isinstance(text, str):
            raise UsageError(f"text must be a string, not {builtins.type(text).__name__}")
        if text is not None and not text.strip():
            raise UsageError("the query text is empty")
        for name, value in (("nprobe", nprobe), ("ef_search", ef_search)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise UsageError(f"{name}={value!r}: must be a positive whole number")
        if under is not None and not isinstance(under, (str, os.PathLike)):
            raise UsageError(f"under must be a folder path, not {builtins.type(under).__name__}")
        self.notices = []
        gen = self.store.generation()
        sp = self._read_space(space, gen)
        mods = sp.modalities.split(",")
        if type is None:
            has_images = "image" in mods and self.store.has_vectors(sp.id, "image")
            type = "image" if has_images else ("text" if "text" in mods else mods[0])
        elif type != "any" and type not in mods:
            raise UsageError(f"type={type!r}: model {sp.spec} holds {', '.join(mods)}")
        modalities = mods if type == "any" else [type]
        self._sync_indexes(sp, save=False, generation=gen, modalities=modalities)  # only what is searched
        if vector is not None:
            try:
                q = np.asarray(vector, dtype=np.float32).reshape(-1)
            except (TypeError, ValueError):
                raise UsageError("vector must be a sequence of numbers") from None
            if q.shape[0] != sp.dim:
                raise UsageError(f"vector has {q.shape[0]} dimensions, space {sp.spec} has {sp.dim}")
        else:
            enc = self.encoder(sp.spec)
            if enc.space.key != sp.key:
                raise ModelError(f"model {sp.spec!r} now loads different weights than the store was built with",
                                 hint="re-index, or point --model at the original weights")
            if text is not None:
                q = enc.embed_texts([text])[0]
            else:  # the very preprocessing indexing uses, so an indexed image finds itself at cosine 1
                from mmsearch.ingest.decode import preprocess

                q = enc.embed_image_batch(preprocess(self._query_image(image), enc.image_recipe())[None])[0]
        return search_space(
            self.store, {m: self._index(sp, m) for m in modalities}, q, k=k, modalities=modalities,
            space_spec=sp.spec, under=os.path.abspath(under) if under is not None else None,
            params=SearchParams(nprobe=nprobe, ef_search=ef_search),
        )

    @staticmethod
    def _query_image(image: Any):
        from mmsearch.ingest.decode import BadInput, decode_image, read_file, MAX_FILE_BYTES

        if hasattr(image, "convert") and hasattr(image, "size"):  # a PIL image
            from mmsearch.ingest.decode import to_rgb

            return to_rgb(image)
        try:
            if isinstance(image, (bytes, bytearray)):
                return decode_image(bytes(image))
            if not isinstance(image, (str, os.PathLike)):
                raise UsageError(f"image must be a path, bytes or a PIL image, not {type(image).__name__}")
            path = os.fspath(image)
            data, _ = read_file(path, MAX_FILE_BYTES)
            return decode_image(data)
        except BadInput as exc:
            raise UsageError(f"query image: {exc}", path=None if isinstance(image, (bytes, bytearray)) else os.fspath(image)) from None

    def stats(self) -> Stats:
        raw = self.store.stats()
        spaces = []
        for sp in raw["spaces"]:
            kinds = {}
            for modality in sp.modalities.split(","):
                idx = self._indexes.get((sp.id, modality))
                if idx is not None and idx.ann is not None:
                    kinds[modality] = idx.ann.kind
                else:
                    kinds[modality] = recorded_kind(self.store.root, sp.id, modality)
            spaces.append(SpaceStats(sp.id, sp.key, sp.spec, sp.dim, raw["vectors_per_space"].get(sp.id, 0), kinds))
        size = 0
        for f in self.store.root.rglob("*"):
            try:
                size += f.stat().st_size if f.is_file() else 0
            except OSError:  # a writer's temp file renamed away mid-walk
                pass
        return Stats(str(self.store.root), raw["contents"], raw["sources"], tuple(spaces), raw["errors"],
                     raw["generation"], size)

    def evaluate(
        self, dataset: str | os.PathLike, *, images_root: str | os.PathLike | None = None, split: str | None = None
    ):
        """Recall@1/5/10 text→image and image→text on a captioned dataset, exact search vs the ANN index.

        Indexes the dataset's images and captions into this store (use a scratch store).
        Returns :class:`mmsearch.query.evaluate.EvalReport`.
        """
        from mmsearch.query.evaluate import evaluate, load_dataset

        data = load_dataset(dataset, images_root=images_root, split=split)
        return evaluate(self, data)

    def errors(self) -> list[ErrorInfo]:
        return [ErrorInfo(e.uri, e.reason, e.at) for e in self.store.errors()]

    def doctor(self, repair: bool = True) -> DoctorReport:
        """Check the store (database, index files vs database, files on disk, lock) and repair what can be.

        Repairing takes the writer lock (:class:`StoreLockedError` while another process writes).
        See :mod:`mmsearch.doctor`.
        """
        from mmsearch.doctor import check_store

        report = check_store(self.store, repair=repair)
        self._indexes.clear()  # files may have been rebuilt: reload them on the next query
        self._spaces = (-1, [])
        return report
