"""The set of indexes of one store: loads them, catches them up after writes, syncs what a call touches.

Also what ``doctor`` asks of the index layer: each index file against the database, and files in
``ann/`` that no index points at.
"""

from __future__ import annotations

import shutil
from typing import Callable, Iterable, Sequence

import numpy as np

from mmsearch.ann.faiss_index import KINDS, CorruptIndexError
from mmsearch.ann.placement import choose
from mmsearch.errors import StoreLockedError, UsageError
from mmsearch.ann.faiss_index import index_ids
from mmsearch.ann.space_index import ANN_DIR, SpaceIndex, SyncReport, index_name, read_record
from mmsearch.ann.tuning import Tuned
from mmsearch.store.checks import some
from mmsearch.store.files import temp_files
from mmsearch.store.lock import writer_lock
from mmsearch.store.schema import MOMENT, Space, item_kinds
from mmsearch.store.store import Store
from mmsearch.types import DoctorCheck


def modalities(space: Space) -> list[str]:
    """The kinds a space indexes (:func:`~mmsearch.store.schema.item_kinds`: its model's, videos, moments)."""
    return item_kinds(space)


class IndexSet:
    """Every (space, modality) index of one store, loaded on first use. ``kind``: the preferred index kind;
    ``budget``, ``target``: see :class:`SpaceIndex`; ``prompts(space)``: a space's generic text queries
    (embedded by its text tower, no model loaded for them) to tune its indexes with, or None."""

    def __init__(self, store: Store, kind: str = "auto", *, budget: int | None = None, target: float | None = None,
                 prompts: Callable[[Space], np.ndarray | None] | None = None, device: str = "auto") -> None:
        self.store = store
        self.kind = kind
        self.budget, self.target, self.prompts, self.device = budget, target, prompts, device
        self._open: dict[tuple[int, str], SpaceIndex] = {}

    def get(self, space: Space, modality: str) -> SpaceIndex:
        key = (space.id, modality)
        if key not in self._open:
            self._open[key] = self.make(space, modality, self.kind)
        return self._open[key]

    def make(self, space: Space, modality: str, kind: str) -> SpaceIndex:
        """A fresh (not yet loaded) index of one space and modality, with this set's policy."""
        prompts = self.prompts
        return SpaceIndex(self.store, space.id, space.key, modality, kind, budget=self.budget, target=self.target,
                          prompts=None if prompts is None else (lambda: prompts(space)), device=self.device)

    def clear(self) -> None:
        """Forget loaded indexes (their files may have been rebuilt): the next use reads them again."""
        self._open.clear()

    def kind_of(self, space: Space, modality: str) -> str:
        """The kind of an index: the loaded one's, else what its file records ("none" without a file)."""
        idx = self._open.get((space.id, modality))
        if idx is not None and idx.ann is not None:
            return idx.ann.kind
        rec = read_record(self.store.root, space.id, modality)
        return str(rec.get("kind", "none")) if rec else "none"

    def tuning_of(self, space: Space, modality: str) -> dict | None:
        """What tuning chose and measured for an index (see :class:`~mmsearch.ann.tuning.Tuned`), from the
        loaded index or its file's record; None for an exact index or one never tuned."""
        idx = self._open.get((space.id, modality))
        if idx is not None and idx.ann is not None:
            return idx.ann.tuned.to_record() if idx.ann.tuned is not None else None
        rec = read_record(self.store.root, space.id, modality)
        tuned = Tuned.from_record(rec.get("tuning")) if rec else None
        return tuned.to_record() if tuned is not None else None

    def bytes_of(self, space: Space, modality: str) -> int:
        """Bytes of an index's current files as its pointer records them (with an on-disk index's lists)."""
        rec = read_record(self.store.root, space.id, modality) or {}
        lists = rec.get("lists")
        return int(rec.get("bytes") or 0) + (int(lists.get("bytes") or 0) if isinstance(lists, dict) else 0)

    def search_path(self, space: Space, modality: str) -> str:
        """Where a search of this index runs (``faiss-cpu``, ``torch on cuda:0``, ``faiss-gpu on cuda:0``):
        the placed one's, else what :func:`~mmsearch.ann.placement.choose` would pick for its file."""
        idx = self._open.get((space.id, modality))
        if idx is not None and idx.placement is not None:
            return idx.placement.describe()
        rec = read_record(self.store.root, space.id, modality)
        if not rec:
            return "none"
        try:
            path = choose(str(rec.get("kind", "flat")), int(rec.get("ntotal", 0)), self.device)
        except UsageError as exc:  # search_device cuda without a GPU: say so, queries will say it too
            return f"none ({exc})"
        return path if path == "faiss-cpu" else f"{path} on cuda:0"

    # ---- keeping them current ----------------------------------------------------------------------
    def sync(self, space: Space, mods: Sequence[str] | None = None, *, save: bool, generation: int | None = None,
             since: int | None = None) -> list[str]:
        """Bring a space's indexes (or those of ``mods``) up to date; returns notices of what was repaired."""
        notices = []
        for modality in mods or modalities(space):
            if modality in ("video", MOMENT) and not self._holds_videos(space, modality):
                continue  # a space with no videos keeps no (empty) video indexes
            idx = self.get(space, modality)
            notice = repair_notice(idx, idx.sync(save=save, generation=generation), since)
            if notice:
                notices.append(notice)
            if not save and idx.dirty and self.store.db_path is None:
                self._keep(idx)
        return notices

    def _keep(self, idx: SpaceIndex) -> None:
        """Save what a reader caught up or built, on a store whose truth is on a database server: its folder
        is this machine's cache of indexes, which another machine's writer never updates, so each query
        process would otherwise catch up from the same old file. Only when no writer holds this folder
        (a writer here saves its own); a busy lock or a read-only folder leaves the index in memory only."""
        try:
            with writer_lock(self.store.root, "saving caught-up indexes"):
                idx.save()
        except (StoreLockedError, OSError):
            pass

    def shown_kinds(self, space: Space) -> list[str]:
        """The kinds ``stats`` lists for a space: its model's, and videos' and moments' once it holds videos."""
        return [m for m in modalities(space) if m not in ("video", MOMENT) or self._holds_videos(space, m)]

    def _holds_videos(self, space: Space, modality: str) -> bool:
        loaded = self._open.get((space.id, modality))
        return (loaded is not None and loaded.ann is not None) or read_record(self.store.root, space.id, modality) \
            is not None or self.store.has_vectors(space.id, "video")

    def sync_written(self, spaces: Sequence[Space], before: int) -> list[str]:
        """After a write (to ``spaces``; none: a removal): their indexes, and those of every other space that
        lost vectors (a vanished or changed file drops its content's vectors in every model)."""
        notices: list[str] = []
        for space in spaces:
            notices += self.sync(space, save=True, since=before)
        written = {sp.id for sp in spaces}
        for other in self.store.spaces():
            if other.id in written:
                continue
            if not spaces or any(self.store.changes(other.id, m, before)[1] for m in modalities(other)):
                notices += self.sync(other, save=True, since=before)
        return notices

    def check_faiss(self, repair: bool) -> list[DoctorCheck]:
        """Which faiss build is active; two faiss distributions installed means one overwrote the other."""
        from mmsearch.ann.placement import faiss_build

        b = faiss_build()
        where = f"{b['gpus']} GPU{'s' if b['gpus'] != 1 else ''} seen" if b["build"] == "faiss-gpu" else "CPU only"
        line = f"{b['build']} {b['version']} active ({where}); search_device {self.device}"
        if len(b["distributions"]) > 1:
            return [DoctorCheck("faiss", "problem", f"{line}; several faiss packages are installed "
                                f"({', '.join(b['distributions'])}): they share one `faiss` folder, so the last "
                                "installed overwrote the other. Keep one: `pip uninstall -y faiss-cpu faiss-gpu` then "
                                "`pip install faiss-cpu` (or `faiss-gpu==1.15.1`)")]
        return [DoctorCheck("faiss", "ok", line)]

    # ---- doctor ----------------------------------------------------------------------------------------
    def check(self, repair: bool) -> list[DoctorCheck]:
        """Each index file against the database (rebuilt or caught up when repairing), then strays."""
        with self.store.snapshot():
            db_gen = self.store.generation()
            spaces = self.store.spaces()
        out = [self._check_one(sp, m, db_gen, repair) for sp in spaces for m in modalities(sp)]
        self.clear()  # files may have been rebuilt
        return out + self._check_leftovers(spaces, repair)

    def _check_one(self, space: Space, modality: str, db_gen: int, repair: bool) -> DoctorCheck:
        name = f"index {space.id}/{modality}"
        with self.store.snapshot():
            db_ids = self.store.vector_ids(space.id, modality)
        rec = read_record(self.store.root, space.id, modality)
        kind = str(rec.get("kind", "auto")) if rec else "auto"
        idx = self.make(space, modality, kind if kind in KINDS else "auto")
        problem, behind = _index_problem(idx, db_gen, db_ids, rec is not None or idx.pointer.exists())
        if problem is None:
            lists = rec.get("lists") if rec else None  # an on-disk index's .ivfdata: its size is worth a line
            held = f" (lists {lists['file']}, {lists['bytes'] / 1e6:.1f} MB mapped)" if isinstance(lists, dict) else ""
            return DoctorCheck(name, "ok", f"{len(db_ids)} vectors, matches the database{held}" if len(db_ids) or rec
                               else "no vectors, no index file")

        def fix() -> str:
            rep = _repair(idx, behind, db_ids)
            if rep.action == "caught-up":
                return f"caught up from the database to generation {rep.generation}"
            return f"rebuilt from the database ({idx.ann.ntotal} vectors)"

        return DoctorCheck.fixed(name, repair, problem, fix)

    def _check_leftovers(self, spaces: Iterable[Space], repair: bool) -> list[DoctorCheck]:
        """Temp files of an interrupted save, generations no pointer names, index files of no model."""
        folder = self.store.root / ANN_DIR
        if not folder.is_dir():
            return []
        current = {}
        for sp in spaces:
            for m in modalities(sp):
                rec = read_record(self.store.root, sp.id, m)
                lists = rec.get("lists") if rec else None  # an on-disk index's second file
                current[index_name(sp.id, m)] = {rec.get("file"), lists.get("file") if isinstance(lists, dict) else None} \
                    if rec else set()
        found = temp_files(folder)
        for p in sorted(folder.iterdir()):
            if p.name.startswith(".") or p in found:
                continue
            base = p.name.split(".", 1)[0]
            if base not in current or (p.suffix != ".json" and p.name not in current[base]):
                found.append(p)
        if not found:
            return [DoctorCheck("index files", "ok", "no temporary, stale or stray index files")]
        detail = f"{len(found)} index files nothing uses (interrupted saves, old generations, models gone): " \
                 f"{some([p.name for p in found])}"
        if not repair:  # harmless: nothing reads them
            return [DoctorCheck("index files", "note", detail)]
        for p in found:
            if p.is_dir():  # an on-disk index's work folder a crash left behind
                shutil.rmtree(p, ignore_errors=True)
            else:
                p.unlink(missing_ok=True)
        return [DoctorCheck("index files", "repaired", detail + ": deleted")]


def _index_problem(idx: SpaceIndex, db_gen: int, db_ids: np.ndarray, has_file: bool) -> tuple[str | None, bool]:
    """(what is wrong with an index file, whether it is only behind), by the index's own load logic."""
    if not has_file:
        return (None, False) if len(db_ids) == 0 else (f"index file missing ({len(db_ids)} vectors in the database)", False)
    try:
        ann, file_gen = idx.read_file(db_gen, writable=False, verify=True)
    except FileNotFoundError:
        return f"index file missing ({len(db_ids)} vectors in the database)", False
    except CorruptIndexError as exc:
        return str(exc), False
    if file_gen > db_gen:
        return f"index file is ahead of the database (generation {file_gen} > {db_gen})", False
    added, removed = idx.store.changes(idx.space_id, idx.modality, file_gen)
    if added or removed:
        return (f"index file is behind the database (generation {file_gen}; {added} vectors added, "
                f"{removed} removed since)"), True
    have = index_ids(ann)
    extra, lacking = np.setdiff1d(have, db_ids).size, np.setdiff1d(db_ids, have).size
    if extra or lacking or len(have) != len(db_ids):
        return f"index disagrees with the database: {lacking} vectors missing from it, {extra} it should not hold", False
    return None, False


def _repair(idx: SpaceIndex, behind: bool, db_ids: np.ndarray) -> SyncReport:
    idx.target = idx.kept_target()  # read before the record goes: a rebuilt index keeps its target
    if not behind:
        idx.pointer.unlink(missing_ok=True)  # damaged or wrong: build afresh
    rep = idx.sync(save=True)
    if not np.array_equal(np.sort(index_ids(idx.ann)), np.sort(idx.store.vector_ids(idx.space_id, idx.modality))):
        idx.pointer.unlink(missing_ok=True)
        fresh = SpaceIndex(idx.store, idx.space_id, idx.space_key, idx.modality, idx.kind_pref, budget=idx.budget,
                           target=idx.target, prompts=idx.prompts, device=idx.device)
        rep = fresh.sync(save=True)
        idx.ann = fresh.ann
    return rep


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
