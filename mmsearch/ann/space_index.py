"""One FAISS index per (space, modality), kept in step with the database.

On disk: ``ann/space<ID>-<modality>.g<GEN>.faiss`` holds generation GEN; the pointer
``ann/space<ID>-<modality>.json`` names the current file with its generation, kind, size, vector count
and checksum. A save writes a new generation file, then replaces the pointer (the one commit point),
then collects older generations, so a reader finds a complete file (a reader that read the pointer just
before a save collected its file reads the new pointer once more). The single ``NAME.faiss`` +
sidecar of stores made before generations is read the same way and collected by the next save.
An ``ondisk`` index's generation is two files, ``NAME.gGEN-TAG.faiss`` + ``NAME.gGEN-TAG.ivfdata`` (its
lists, memory-mapped), both named by the pointer with their sizes and checksums; it is always mapped
read-only, and catching up writes a new lists file (see :mod:`mmsearch.ann.ondisk`).

On sync: missing → build; damaged → rebuild; behind → catch up from the vectors added and tombstones
written since; a vector count that differs from the database's → rebuild. A reader whose file is
current maps it read-only (a cold query reads only the pages it searches); a writer, or a reader that
must catch up, reads a private copy.
"""

from __future__ import annotations

import itertools
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import numpy as np

from mmsearch.ann import ondisk
from mmsearch.ann.faiss_index import (AnnIndex, CorruptIndexError, SearchParams, check_file, choose_kind,
                                      needs_rebuild)
from mmsearch.ann.placement import Placed, place
from mmsearch.ann.rerank import RERANKED, pool_size, reranked
from mmsearch.ann.tuning import K, QUERIES, TARGET, Probe, TopK, Tuned, tune
from mmsearch.store.files import (atomic_write_with, collect_generations, file_sha256, generation_file,
                                  pointer_path, read_pointer, write_json)
from mmsearch.store.store import Store

ANN_DIR = "ann"
SUFFIX = ".faiss"


def index_name(space_id: int, modality: str) -> str:
    return f"space{space_id}-{modality}"


def _record(folder: Path, name: str) -> dict[str, Any]:
    rec = read_pointer(folder, name)
    rec.setdefault("file", f"{name}{SUFFIX}")  # a sidecar of the single-file layout before generations
    if not isinstance(rec["file"], str) or "/" in rec["file"]:
        raise ValueError("pointer names no file")
    return rec


def read_record(root: Path, space_id: int, modality: str) -> dict[str, Any] | None:
    """The pointer record of one index (kind, generation, …) without loading it; None when unreadable."""
    try:
        return _record(Path(root) / ANN_DIR, index_name(space_id, modality))
    except (OSError, ValueError):
        return None


@dataclass
class SyncReport:
    action: str  # "current", "loaded", "caught-up", "built", "rebuilt"
    reason: str = ""
    generation: int = 0
    previous: int = -1  # the generation the index reflected before catching up
    from_file: bool = False  # the index was read from its file in this sync (not already in memory)


#: Text queries of a space that no index holds (generic prompts embedded by its text tower), or None.
Prompts = Callable[[], "np.ndarray | None"]
RETUNE_GROWTH = 2  # a tuned index is tuned again once it holds this many times what it was tuned at


class SpaceIndex:
    """The ANN index of one modality within one space.

    ``budget``: bytes of full vectors ``auto`` keeps in memory (see :func:`choose_kind`); ``target``: the
    Recall@10 an approximate index is tuned to (:mod:`mmsearch.ann.tuning`), with queries of its own kind
    and text queries (the store's texts and ``prompts()``). None (not given): the index keeps the target it
    was tuned to when it is tuned again or rebuilt (:data:`TARGET` for a new one); only a writer given
    a target tunes it to another.
    """

    def __init__(self, store: Store, space_id: int, space_key: str, modality: str, kind: str = "auto", *,
                 budget: int | None = None, target: float | None = None, prompts: Prompts | None = None,
                 device: str = "auto") -> None:
        self.store = store
        self.space_id = space_id
        self.space_key = space_key
        self.modality = modality
        self.kind_pref = kind
        self.budget, self.target, self.prompts = budget, target, prompts
        self.device = device  # where searches run: see mmsearch.ann.placement
        self._placed: tuple[weakref.ref, tuple, Placed] | None = None  # (for which index, its state, searcher)
        self.folder = store.root / ANN_DIR
        self.name = index_name(space_id, modality)
        self.ann: AnnIndex | None = None
        self.generation = -1
        self.dirty = False

    @property
    def pointer(self) -> Path:
        return pointer_path(self.folder, self.name)

    # ---- sync ------------------------------------------------------------------------------------
    def sync(self, *, save: bool, generation: int | None = None) -> SyncReport:
        """Bring the index up to the store's current generation. Returns what it had to do.

        ``generation``: the caller just read it; when the index already reflects it, no query runs.
        ``save``: a writer's sync; it loads a writable copy and saves what changed.
        """
        if generation is not None and self.ann is not None and generation == self.generation:
            return SyncReport("current", generation=generation)
        with self.store.snapshot():
            report = self._sync_at(self.store.generation(), writable=save)
        if save and self.dirty:
            self.save()
        return report

    def _sync_at(self, gen: int, *, writable: bool) -> SyncReport:
        if self.ann is not None and self.generation == gen:
            return SyncReport("current", generation=gen)  # the common query path: one tiny read, no O(N) check
        if self.ann is not None and self.ann.mapped and not _unsaved(self.ann):  # (not current, see above)
            self.ann = None  # a read-only map cannot change: read the file again (it may be newer by now)
        from_file = self.ann is None
        if from_file:
            try:
                self.ann, self.generation = self.read_file(gen, writable=writable)
            except FileNotFoundError:
                return self._rebuild(gen, "built", "no index file")
            except CorruptIndexError as exc:
                return self._rebuild(gen, "rebuilt", str(exc))
            if self._decides(writable) and self.ann.ntotal and \
                    choose_kind(self.kind_pref, self.ann.ntotal, self.ann.dim, self.budget) != self.ann.kind:
                return self._rebuild(gen, "rebuilt", f"index kind changed to {self.kind_pref}")
        if self.generation > gen:
            return self._rebuild(gen, "rebuilt", "index is ahead of the database")
        previous, action = self.generation, "loaded"
        if self.generation < gen:
            if not self._catch_up(gen):
                return self._rebuild(gen, "rebuilt", f"{self.ann.kind} cannot delete in place")
            action = "caught-up"
        if from_file:  # a file may hold other ids than it says; catching up in memory is exact (ids never reused)
            expected = self.store.count_vectors(self.space_id, self.modality)
            if self.ann.ntotal != expected:
                return self._rebuild(gen, "rebuilt", f"index holds {self.ann.ntotal} vectors, database {expected}")
        why = needs_rebuild(self.ann, self.kind_pref, self.ann.ntotal, self.budget) if self._decides(writable) else None
        if why:
            return self._rebuild(gen, "rebuilt", why)
        if writable and self._stale_tuning():
            self._tune(self._probes(), None)
            self.dirty = True
        return SyncReport(action, generation=gen, previous=previous, from_file=from_file)

    def _decides(self, writable: bool) -> bool:
        """Whether this sync may change the index's kind or retrain it. Under ``auto`` only a writer does:
        the choice depends on the machine's memory (or ``index_memory``), and a reader on another machine
        must use the file as the writer built it, not rebuild it in memory on every start."""
        return writable or self.kind_pref != "auto"

    def _catch_up(self, gen: int) -> bool:
        removed = self.store.tombstones(self.space_id, self.modality, since_gen=self.generation, until_gen=gen)
        if self.ann.kind == "ondisk":  # a new lists file in a work folder: the mapped one is never changed
            added = iter(self.store.iter_vectors(self.space_id, self.modality, since_gen=self.generation,
                                                 until_gen=gen))
            first = next(added, None)
            if first is not None or len(removed):  # (else: only the generation moves, the files stay)
                self.ann = ondisk.caught_up(self.ann, itertools.chain([first] if first is not None else [], added),
                                            removed, ondisk.work_folder(self.folder, self.name), self._stem(gen))
            self.generation, self.dirty = gen, True
            return True
        if not self.ann.remove(removed):
            return False
        for ids, vecs in self.store.iter_vectors(self.space_id, self.modality, since_gen=self.generation, until_gen=gen):
            self.ann.add(ids, vecs)
        self.generation, self.dirty = gen, True
        return True

    def _rebuild(self, gen: int, action: str, reason: str) -> SyncReport:
        """Build from the database in blocks: IVF/PQ trained on a sample, vectors added a block at a time;
        an approximate index then tuned, with the exact neighbours of its tuning queries found in the same pass."""
        target = self.kept_target()  # (before the old index goes)
        n = self.store.count_vectors(self.space_id, self.modality)
        dim = next(sp.dim for sp in self.store.spaces() if sp.id == self.space_id)
        kind = choose_kind(self.kind_pref, n, dim, self.budget)
        probes = self._probes() if kind != "flat" else []
        truth = {p.kind: TopK(p.vectors, K + 1) for p in probes}
        sample = lambda m: self.store.sample_vectors(self.space_id, self.modality, m)  # noqa: E731
        blocks = _feeding(self.store.iter_vectors(self.space_id, self.modality), truth.values())
        if kind == "ondisk":  # shards and lists in a work folder under ann/, moved into place on save
            self.ann = None  # (the old index's work folder, if any, goes with it)
            self.ann = ondisk.build_generation(dim, n, sample, blocks, ondisk.work_folder(self.folder, self.name),
                                               self._stem(gen))
        else:
            self.ann = AnnIndex.build_from(self.kind_pref, dim, n, sample, blocks, self.budget)
        if probes and self.ann.kind != "flat":
            self._tune(probes, truth, target)
        self.generation, self.dirty = gen, True
        return SyncReport(action, reason, gen)

    # ---- tuning ----------------------------------------------------------------------------------
    def _probes(self) -> list[Probe]:
        """Tuning queries: a sample of this index's own vectors (each leaves itself out), and text queries
        (the space's texts when this index holds another kind, and the prompts)."""
        ids = self.store.vector_ids(self.space_id, self.modality)
        rng = np.random.default_rng(0)
        picked = np.sort(rng.choice(ids, min(QUERIES, len(ids)), replace=False)) if len(ids) else ids
        found = self.store.vectors_for(picked.tolist(), self.space_id, self.modality)
        own = Probe(self.modality, _stacked([found[int(i)] for i in picked if int(i) in found]),
                    np.array([i for i in picked if int(i) in found], np.int64))
        prompts = self.prompts() if self.prompts is not None else None
        texts = [] if prompts is None else [np.asarray(prompts, np.float32)]
        if self.modality != "text":
            texts.insert(0, self.store.sample_vectors(self.space_id, "text", QUERIES))
            texts = [t for t in texts if len(t)]
            return [own] + ([Probe.outside("text", np.concatenate(texts))] if texts else [])
        extra = [t for t in texts if len(t)]
        if not extra:
            return [own]
        more = np.concatenate(extra)
        return [Probe("text", np.concatenate([own.vectors, more]) if len(own.vectors) else more,
                      np.concatenate([own.ids, np.full(len(more), -1, np.int64)]))]

    def kept_target(self) -> float:
        """The Recall@10 this index is tuned to: the one given, else the one it was tuned to (the loaded
        index's, else its file's record), else :data:`TARGET`."""
        if self.target is not None:
            return self.target
        tuned = self.ann.tuned if self.ann is not None else None
        if tuned is None:
            try:
                tuned = Tuned.from_record(_record(self.folder, self.name).get("tuning"))
            except (OSError, ValueError):  # no file, or an unreadable record: nothing was kept
                tuned = None
        return tuned.target if tuned is not None else TARGET

    def _tune(self, probes: list[Probe], truth: dict[str, TopK] | None, target: float | None = None) -> None:
        """Tune the search breadth to ``target`` (default :meth:`kept_target`; ``truth``: the probes' exact
        neighbours, else found now)."""
        assert self.ann is not None
        target = self.kept_target() if target is None else target
        if truth is None:
            truth = {p.kind: TopK(p.vectors, K + 1) for p in probes}
            for _ in _feeding(self.store.iter_vectors(self.space_id, self.modality), truth.values()):
                pass
        ann = self.ann

        def search(q: np.ndarray, k: int, params: SearchParams) -> tuple[np.ndarray, np.ndarray]:
            if ann.kind in RERANKED:
                # the pool a user's k=K query gets (tuning asks K + 1, to leave the query itself out)
                rows = reranked(self.store, self.space_id, ann, q, k, params, pool=pool_size(K, False, ann.ntotal),
                                modality=self.modality)
                ids, scores = np.full((len(q), k), -1, np.int64), np.full((len(q), k), -np.inf, np.float32)
                for r, row in enumerate(rows):
                    scores[r, : len(row)] = [s for s, _ in row]
                    ids[r, : len(row)] = [i for _, i in row]
                return scores, ids
            return ann.search(q, k, params)

        self.ann.tuned = tune(ann.kind, ann.breadth(), search, probes, {k: t.best() for k, t in truth.items()},
                              target=target, n=ann.ntotal)

    def _stale_tuning(self) -> bool:
        """Whether a writer should tune this index again: never tuned, given another target, or grown."""
        ann = self.ann
        if ann is None or ann.kind == "flat" or ann.ntotal == 0:
            return False
        t = ann.tuned
        return t is None or (self.target is not None and t.target != self.target) or \
            ann.ntotal > RETUNE_GROWTH * max(t.n, 1)

    # ---- files -----------------------------------------------------------------------------------
    def read_file(self, db_gen: int, *, writable: bool, verify: bool = False) -> tuple[AnnIndex, int]:
        """The current file as (index, generation). Raises FileNotFoundError, or CorruptIndexError with why.

        Checks what is cheap (the record, the file's size, the vector count); ``verify`` also the checksum.
        A file that vanished because a save replaced the pointer meanwhile is looked up again.
        """
        for _attempt in range(3):
            rec = self._pointer_record()
            try:
                return self._open(rec, db_gen, writable=writable, verify=verify), int(rec["generation"])
            except FileNotFoundError as exc:
                if self._pointer_record().get("file") == rec["file"]:  # not a save racing us: it is gone
                    gone = Path(exc.filename).name if exc.filename else rec["file"]
                    raise CorruptIndexError(f"index file damaged: {gone} is missing") from None
        raise CorruptIndexError("index file keeps changing while it is read")

    def _pointer_record(self) -> dict[str, Any]:
        try:
            rec = _record(self.folder, self.name)
            int(rec["generation"]), int(rec["dim"]), str(rec["kind"])
        except FileNotFoundError:
            raise
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise CorruptIndexError(f"index file damaged: its record is unreadable ({exc})") from None
        if rec.get("space_key") != self.space_key:
            raise CorruptIndexError("index file belongs to another space")
        return rec

    def _open(self, rec: dict[str, Any], db_gen: int, *, writable: bool, verify: bool) -> AnnIndex:
        path = self.folder / rec["file"]
        kind = str(rec["kind"])
        check_file(path, rec.get("bytes"), rec.get("sha256") if verify else None)
        if kind == "ondisk":
            lists = rec.get("lists")
            if not isinstance(lists, dict) or not isinstance(lists.get("file"), str) or "/" in lists["file"]:
                raise CorruptIndexError("index file damaged: its record names no lists file")
            check_file(self.folder / lists["file"], lists.get("bytes"), lists.get("sha256") if verify else None)
        mmap = not writable and int(rec["generation"]) == db_gen  # a file that must catch up is read, not mapped
        try:
            if kind == "ondisk":  # always mapped read-only: catching up writes a new lists file
                ann = ondisk.read_ondisk(path, int(rec["dim"]), trained_n=int(rec.get("trained_n", 0)))
                ann.ondisk.record = dict(rec["lists"])  # (checked above: a save at a later generation reuses it)
            else:
                ann = AnnIndex.read(path, kind, int(rec["dim"]), mmap=mmap, trained_n=int(rec.get("trained_n", 0)))
        except CorruptIndexError as exc:
            raise CorruptIndexError(f"index file damaged: {exc}") from None
        if ann.ntotal != rec.get("ntotal"):
            raise CorruptIndexError("index file damaged: vector count differs from its record")
        ann.tuned = Tuned.from_record(rec.get("tuning"))
        return ann

    def save(self) -> None:
        """Write this generation's file(s), point at them (the commit), collect older generations."""
        assert self.ann is not None
        self.folder.mkdir(parents=True, exist_ok=True)
        extra: dict[str, Any] = {}
        if self.ann.kind == "ondisk":
            path, extra["lists"] = self._save_ondisk()
        else:
            path = generation_file(self.folder, self.name, self.generation, SUFFIX)
            atomic_write_with(path, self.ann.write)
        write_json(self.pointer, {
            "file": path.name, "generation": self.generation, "space_key": self.space_key, "modality": self.modality,
            "kind": self.ann.kind, "dim": self.ann.dim, "ntotal": self.ann.ntotal, "trained_n": self.ann.trained_n,
            "bytes": path.stat().st_size, "sha256": file_sha256(path), **extra,
            **({"tuning": self.ann.tuned.to_record()} if self.ann.tuned is not None else {}),
        })
        collect_generations(self.folder, self.name, keep=[path.name, *([extra["lists"]["file"]] if extra else [])],
                            suffix=SUFFIX)
        self.dirty = False

    def _save_ondisk(self) -> tuple[Path, dict[str, Any]]:
        """The on-disk index's .faiss and the record of its .ivfdata: moved out of its work folder, or
        (only its generation or tuning moved) the files it was read from, their checksum not read again."""
        assert self.ann is not None and self.ann.ondisk is not None
        lists = self.ann.ondisk
        if _unsaved(self.ann):
            ondisk.publish(self.ann, self.folder, atomic_write_with)
            lists = self.ann.ondisk
        if lists.record is None:
            lists.record = {"file": lists.file.name, "bytes": lists.file.stat().st_size, "sha256": file_sha256(lists.file)}
        return lists.file.with_suffix(SUFFIX), lists.record

    def _stem(self, gen: int) -> str:
        """A new generation's file name without its suffix (``NAME.gGEN-TAG``)."""
        return generation_file(self.folder, self.name, gen, "").name

    def search(self, queries: np.ndarray, k: int, params: SearchParams | None = None,
               allowed: np.ndarray | None = None):
        """(scores, ids) of the best ``k`` per query; ``allowed``: only those ids (see :meth:`AnnIndex.search`)."""
        return self.placed().search(queries, k, params, allowed)

    @property
    def placement(self) -> Placed | None:
        """The searcher as placed by the last search, if any (see :meth:`placed`)."""
        return self._placed[2] if self._placed is not None else None

    def placed(self) -> Placed:
        """This index's searcher where :func:`~mmsearch.ann.placement.place` puts it, made again whenever the
        index changed (another index object, another generation, vectors added or removed in place, tuned
        again): a GPU or torch copy never serves vectors or a search breadth the index no longer has."""
        ann = self.ann
        assert ann is not None, "sync() first"
        key = (self.generation, ann.changes, ann.tuned)
        if self._placed is None or self._placed[0]() is not ann or self._placed[1] != key:
            self._placed = (weakref.ref(ann), key, place(ann, self.device))  # (weak: no old index kept alive)
        return self._placed[2]


def _feeding(blocks: Iterable[tuple[np.ndarray, np.ndarray]], into: Iterable[TopK]) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """The blocks, each also shown to the exact top-k trackers ``into`` on its way."""
    trackers = list(into)
    for ids, vecs in blocks:
        for t in trackers:
            t.add(ids, vecs)
        yield ids, vecs


def _unsaved(ann: AnnIndex) -> bool:
    """Whether an on-disk index's lists are still in their private work folder (not yet a generation)."""
    return ann.ondisk is not None and ann.ondisk.work is not None


def _stacked(rows: list[np.ndarray]) -> np.ndarray:
    return np.stack(rows).astype(np.float32) if rows else np.zeros((0, 0), np.float32)
