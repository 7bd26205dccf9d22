"""Keep one FAISS index per (space, modality) in step with the database.

The index file records the store generation it reflects. On open: missing → build; damaged →
rebuild; behind → catch up from vectors added and tombstones written since; then the vector count
must equal the database's, or it is rebuilt. Readers do this in memory; writers also save.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from mmsearch.ann.faiss_index import AnnIndex, CorruptIndexError, SearchParams, choose_kind, needs_rebuild
from mmsearch.store.store import Store

ANN_DIR = "ann"


def index_path(root: Path, space_id: int, modality: str) -> Path:
    """Where the index of one modality of one space lives (its sidecar: the same name, ``.json``)."""
    return Path(root) / ANN_DIR / f"space{space_id}-{modality}.faiss"


def recorded_kind(root: Path, space_id: int, modality: str) -> str:
    """The kind an index file says it is, without loading it ("none" when there is no readable file)."""
    import json

    try:
        return str(json.loads(index_path(root, space_id, modality).with_suffix(".json").read_text())["kind"])
    except (OSError, ValueError, KeyError, TypeError):
        return "none"


@dataclass
class SyncReport:
    action: str  # "current", "loaded", "caught-up", "built", "rebuilt"
    reason: str = ""
    generation: int = 0
    previous: int = -1  # the generation the index reflected before catching up
    from_file: bool = False  # the index was read from its file in this sync (not already in memory)


class SpaceIndex:
    """The ANN index of one modality within one space."""

    def __init__(self, store: Store, space_id: int, space_key: str, modality: str, kind: str = "auto") -> None:
        self.store = store
        self.space_id = space_id
        self.space_key = space_key
        self.modality = modality
        self.kind_pref = kind
        self.path = index_path(store.root, space_id, modality)
        self.ann: AnnIndex | None = None
        self.generation = -1
        self.dirty = False

    def sync(self, *, save: bool, generation: int | None = None) -> SyncReport:
        """Bring the index up to the store's current generation. Returns what it had to do.

        ``generation``: the caller just read it; when the index already reflects it, no query runs.
        """
        if generation is not None and self.ann is not None and generation == self.generation:
            return SyncReport("current", generation=generation)
        with self.store.snapshot():
            gen = self.store.generation()
            report = self._sync_at(gen)
        if save and self.dirty:
            self.save()
        return report

    def _sync_at(self, gen: int) -> SyncReport:
        if self.ann is not None and self.generation == gen:
            return SyncReport("current", generation=gen)  # the common query path: one tiny read, no O(N) check
        if self.ann is None:
            try:
                ann, meta = AnnIndex.load(self.path)
            except FileNotFoundError:
                return self._rebuild(gen, "built", "no index file")
            except (CorruptIndexError, KeyError, ValueError) as exc:
                return self._rebuild(gen, "rebuilt", f"index file damaged: {exc}")
            if meta.get("space_key") != self.space_key:
                return self._rebuild(gen, "rebuilt", "index file belongs to another space")
            if choose_kind(self.kind_pref, ann.ntotal) != meta["kind"] and ann.ntotal:
                return self._rebuild(gen, "rebuilt", f"index kind changed to {self.kind_pref}")
            self.ann, self.generation = ann, int(meta["generation"])
            from_file = True
        else:
            from_file = False
        if self.generation > gen:
            return self._rebuild(gen, "rebuilt", "index is ahead of the database")
        action = "loaded"
        previous = self.generation
        if self.generation < gen:
            removed = self.store.tombstones(self.space_id, self.modality, since_gen=self.generation, until_gen=gen)
            if not self.ann.remove(removed):
                return self._rebuild(gen, "rebuilt", f"{self.ann.kind} cannot delete in place")
            ids, vecs = self.store.vectors(self.space_id, self.modality, since_gen=self.generation, until_gen=gen)
            self.ann.add(ids, vecs)
            self.generation = gen
            self.dirty = True
            action = "caught-up"
        if from_file:  # a file may hold other ids than it says; catching up in memory is exact (ids never reused)
            expected = self.store.count_vectors(self.space_id, self.modality)
            if self.ann.ntotal != expected:
                return self._rebuild(gen, "rebuilt", f"index holds {self.ann.ntotal} vectors, database {expected}")
        why = needs_rebuild(self.ann, self.kind_pref, self.ann.ntotal)
        if why:
            return self._rebuild(gen, "rebuilt", why)
        return SyncReport(action, generation=gen, previous=previous, from_file=from_file)

    def _rebuild(self, gen: int, action: str, reason: str) -> SyncReport:
        ids, vecs = self.store.vectors(self.space_id, self.modality)
        dim = vecs.shape[1]
        self.ann = AnnIndex.build(self.kind_pref, dim, ids, vecs)
        self.generation = gen
        self.dirty = True
        return SyncReport(action, reason, gen)

    def save(self) -> None:
        assert self.ann is not None
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.ann.save(self.path, {"generation": self.generation, "space_key": self.space_key, "modality": self.modality})
        self.dirty = False

    def search(self, queries, k: int, params: SearchParams | None = None):
        assert self.ann is not None, "sync() first"
        return self.ann.search(queries, k, params)


def repair_notice(index: SpaceIndex, rep: SyncReport, since: int | None) -> str | None:
    """A line for the user when a sync *repaired* something; None for routine catching up.

    ``since``: for a writer, the generation it started from. An index file missing or behind before
    that is a repair (after a crash, say); catching up with the writer's own changes is not.
    """
    where = f"index {index.space_id}/{index.modality}"
    store = index.store
    if rep.action == "rebuilt":
        return f"{where} rebuilt from the database: {rep.reason}"
    if rep.action == "built":
        before = index.ann.ntotal if since is None or index.ann is None else \
            store.count_vectors(index.space_id, index.modality, until_gen=since)
        return f"{where} file was missing: built from the database ({before} vectors)" if before else None
    if rep.action == "caught-up" and rep.from_file:
        target = rep.generation if since is None else since
        added, removed = store.changes(index.space_id, index.modality, rep.previous, target)
        if added or removed:  # the file missed changes made before this call (a crash, or a writer at work)
            return (f"{where} file was behind the database ({added} vectors added, {removed} removed since its "
                    f"generation {rep.previous}): caught up from the database")
    return None
