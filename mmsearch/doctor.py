"""``mmsearch doctor``: check a store and repair what can be repaired.

Checks, in order (each becomes one :class:`~mmsearch.types.DoctorCheck`):

``lock``      a lock record left by a writer that is gone (stale), or a writer at work now
``database``  SQLite ``integrity_check`` and ``foreign_key_check`` (broken links are deleted: the
              files they belonged to are indexed again on the next run)
``contents``  contents no file or text points at any more (dropped, their vectors tombstoned)
``files``     files the store lists that are gone from disk (dropped, but only where their folder
              still exists: an unmounted disk must never empty a store)
``errors``    recorded errors of files that are gone (dropped)
``vectors``   per model: items that have no vector in it (a note: index them with that model)
``index``     per model and modality: the FAISS file is missing, damaged, of another model, ahead
              of or behind the database, or holds other ids than the database (rebuilt or caught up)
``leftovers`` temp files of an interrupted write, index files of no model (deleted)
``manifest``  ``manifest.json`` missing or out of date (rewritten)

The database is the truth: it is never rebuilt from an index. Repairs run under the writer lock.
"""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path
from typing import Callable

import numpy as np
from sqlalchemy import func, select, text

from mmsearch.ann.faiss_index import AnnIndex, CorruptIndexError
from mmsearch.ann.sync import ANN_DIR, SpaceIndex, index_path
from mmsearch.errors import StoreError, StoreLockedError
from mmsearch.store.safety import DAMAGED_HINT
from mmsearch.store.schema import Content, ErrorRecord, Source, Space, Vector
from mmsearch.store.store import LOCK_NAME, MANIFEST, Store
from mmsearch.types import DoctorCheck, DoctorReport

_SHOW = 3  # paths named in a finding before "and N more"
_FK_TABLES = ("sources", "vectors")  # rows whose parent is gone: safe to delete, re-created by the next index run


def check_store(store: Store, *, repair: bool) -> DoctorReport:
    """Run every check; with ``repair``, fix what can be fixed (under the writer lock)."""
    report = DoctorReport(str(store.root), repair)
    holder = _lock_holder(store)
    if not repair:
        report.checks.append(_lock_check(holder, repairing=False))
        _run_checks(store, report, repair=False)
        return report
    try:
        with store.writer_lock("doctor"):
            report.checks.append(_lock_check(holder, repairing=True))
            _run_checks(store, report, repair=True)
    except StoreLockedError as exc:
        what = str(exc).removesuffix(f" ({exc.hint})") if exc.hint else str(exc)
        raise StoreLockedError(f"cannot repair while another process writes: {what}",
                               hint="wait for it, or check without repairing: `mmsearch doctor --no-repair`") from None
    return report


# ---- lock ---------------------------------------------------------------------------------------------
def _lock_holder(store: Store) -> dict | None:
    path = store.root / (LOCK_NAME + ".json")
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return {"pid": None, "host": None, "what": "?", "since": None, "unreadable": True}


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _lock_check(holder: dict | None, *, repairing: bool) -> DoctorCheck:
    if holder is None:
        return DoctorCheck("lock", "ok", "no writer")
    who = f"pid {holder.get('pid')} on {holder.get('host')} ({holder.get('what')})"
    if repairing:  # we hold the lock, so whoever wrote the record is gone; taking the lock replaced it
        return DoctorCheck("lock", "repaired", f"stale lock record of {who}, a writer that did not finish: cleared")
    if holder.get("host") == socket.gethostname() and isinstance(holder.get("pid"), int):
        if _pid_alive(holder["pid"]):
            since = time.ctime(holder["since"]) if holder.get("since") else "?"
            return DoctorCheck("lock", "note", f"{who} is writing since {since}: what follows may show work in progress")
        return DoctorCheck("lock", "note", f"stale lock record of {who}, a writer that did not finish "
                                           "(harmless: the next writer replaces it)")
    return DoctorCheck("lock", "note", f"lock record of {who}: cannot tell from here whether it still runs")


# ---- the checks -----------------------------------------------------------------------------------------
def _run_checks(store: Store, report: DoctorReport, *, repair: bool) -> None:
    checks: list[tuple[str, Callable[[Store, bool], list[DoctorCheck]]]] = [
        ("database", _check_database),
        ("contents", _check_orphans),
        ("files", _check_files),
        ("errors", _check_errors),
        ("vectors", _check_vectors),
        ("index", _check_indexes),
        ("leftovers", _check_leftovers),
        ("manifest", _check_manifest),
    ]
    for name, fn in checks:
        try:
            report.checks.extend(fn(store, repair))
        except Exception as exc:  # one failing check must not hide the others
            report.checks.append(DoctorCheck(name, "problem", f"check failed: {str(exc).splitlines()[0][:300]}"))
        if name == "database" and any(c.name == "database" and c.status == "problem" for c in report.checks):
            # Nothing read from a damaged database can be trusted: repairing caches from it would spread the damage.
            report.checks.append(DoctorCheck("other checks", "note", "skipped: the database is damaged"))
            return


def _fixed(name: str, repair: bool, problem: str, do: Callable[[], str]) -> DoctorCheck:
    """A problem, repaired when asked to; a failed repair stays a problem with the reason."""
    if not repair:
        return DoctorCheck(name, "problem", problem)
    try:
        return DoctorCheck(name, "repaired", f"{problem}: {do()}")
    except Exception as exc:
        return DoctorCheck(name, "problem", f"{problem}; repair failed: {str(exc).splitlines()[0][:300]}")


def _some(paths: list[str]) -> str:
    shown = ", ".join(paths[:_SHOW])
    return shown + (f" and {len(paths) - _SHOW} more" if len(paths) > _SHOW else "")


def _check_database(store: Store, repair: bool) -> list[DoctorCheck]:
    out = []
    try:
        with store.read() as s:
            res = [r[0] for r in s.execute(text("PRAGMA integrity_check"))]
            fk = [tuple(r) for r in s.execute(text("PRAGMA foreign_key_check"))]
    except StoreError as exc:  # so damaged that the check itself cannot run
        res, fk = [str(exc.__cause__.orig if hasattr(exc.__cause__, "orig") else exc)], []
    if res != ["ok"]:
        found = "; ".join(" ".join(r.split()) for r in res[:3])[:500]
        out.append(DoctorCheck("database", "problem", f"SQLite integrity check failed: {found}. The database cannot be "
                                                      f"repaired in place: {DAMAGED_HINT}"))
        return out
    out.append(DoctorCheck("database", "ok", "SQLite integrity check passed"))
    if not fk:
        out.append(DoctorCheck("foreign-keys", "ok", "every row points at an existing row"))
        return out
    tables = sorted({r[0] for r in fk})
    problem = f"{len(fk)} rows point at rows that do not exist (in {', '.join(tables)})"
    if any(t not in _FK_TABLES for t in tables):
        out.append(DoctorCheck("foreign-keys", "problem", problem))
        return out

    def fix() -> str:
        with store.write() as (s, _gen):
            for table in tables:
                rowids = [r[1] for r in fk if r[0] == table]
                for i in range(0, len(rowids), 500):
                    part = rowids[i : i + 500]
                    s.execute(text(f"DELETE FROM {table} WHERE rowid IN ({','.join(str(int(x)) for x in part)})"))
        return "deleted (files they belonged to are indexed again on the next run)"

    out.append(_fixed("foreign-keys", repair, problem, fix))
    return out


def _check_orphans(store: Store, repair: bool) -> list[DoctorCheck]:
    with store.read() as s:
        orphans = list(s.scalars(select(Content.id).where(~select(Source.id).where(Source.content_id == Content.id).exists())))
    if not orphans:
        return [DoctorCheck("contents", "ok", "every item is pointed at by a file or an added text")]

    def fix() -> str:
        with store.write() as (s, gen):
            n = Store._gc(s, set(orphans), gen)
        return f"dropped {n}"

    return [_fixed("contents", repair, f"{len(orphans)} items no file or text points at", fix)]


def _check_files(store: Store, repair: bool) -> list[DoctorCheck]:
    with store.read() as s:
        uris = list(s.scalars(select(Source.uri).where(Source.kind == "file")))
    gone, unmounted = [], {}
    for uri in uris:
        if os.path.exists(uri):
            continue
        parent = os.path.dirname(uri)
        if os.path.isdir(parent):
            gone.append(uri)
        else:
            top = parent
            while not os.path.isdir(os.path.dirname(top)) and os.path.dirname(top) != top:
                top = os.path.dirname(top)
            unmounted[top] = unmounted.get(top, 0) + 1
    out = []
    if not gone and not unmounted:
        out.append(DoctorCheck("files", "ok", f"all {len(uris)} files the store lists exist"))
    for folder, n in sorted(unmounted.items()):
        out.append(DoctorCheck("files", "note", f"folder {folder} is missing (unmounted disk?): its {n} files are kept; "
                                                f"`mmsearch remove {folder}` forgets them"))
    if gone:
        def fix() -> str:
            res = store.apply([], None, remove_uris=gone)
            return f"dropped {res.removed_sources} from the store"

        out.append(_fixed("files", repair, f"{len(gone)} files the store lists are gone from disk: {_some(gone)}", fix))
    return out


def _check_errors(store: Store, repair: bool) -> list[DoctorCheck]:
    with store.read() as s:
        uris = list(s.scalars(select(ErrorRecord.uri)))
    stale = [u for u in uris if not os.path.lexists(u) and os.path.isdir(os.path.dirname(u))]
    if not stale:
        return [DoctorCheck("errors", "ok", f"{len(uris)} recorded errors, all of existing paths")]
    detail = f"{len(stale)} recorded errors are of paths that are gone: {_some(stale)}"
    if not repair:
        return [DoctorCheck("errors", "note", detail)]
    store.apply([], None, remove_uris=stale)
    return [DoctorCheck("errors", "repaired", detail + ": cleared")]


def _check_vectors(store: Store, repair: bool) -> list[DoctorCheck]:
    out = []
    with store.read() as s:
        spaces = list(s.scalars(select(Space).order_by(Space.id)))
        for sp in spaces:
            mods = sp.modalities.split(",")
            missing = s.execute(
                select(func.count()).select_from(Content).where(
                    Content.modality.in_(mods),
                    ~select(Vector.content_id).where(Vector.content_id == Content.id, Vector.space_id == sp.id).exists(),
                )
            ).scalar_one()
            if missing:
                out.append(DoctorCheck(f"vectors {sp.id}", "note", f"{missing} items have no vector for model {sp.spec} "
                                                                   f"(`mmsearch index … --model {sp.spec}` adds them)"))
            else:
                out.append(DoctorCheck(f"vectors {sp.id}", "ok", f"every item has a vector for model {sp.spec}"))
    if not spaces:
        out.append(DoctorCheck("vectors", "ok", "no models yet (empty store)"))
    return out


def _index_ids(ann: AnnIndex) -> np.ndarray:
    import faiss

    index = ann.index
    if hasattr(index, "id_map"):  # IndexIDMap2 over flat or HNSW
        return faiss.vector_to_array(index.id_map).astype(np.int64)
    ivf = faiss.extract_index_ivf(index)
    lists = ivf.invlists
    parts = [faiss.rev_swig_ptr(lists.get_ids(i), lists.list_size(i)).copy() for i in range(ivf.nlist) if lists.list_size(i)]
    return np.concatenate(parts).astype(np.int64) if parts else np.zeros(0, np.int64)


def _db_ids(store: Store, space_id: int, modality: str) -> np.ndarray:
    with store.read() as s:
        return np.fromiter(
            s.scalars(select(Vector.content_id).where(Vector.space_id == space_id, Vector.modality == modality)), np.int64
        )


def _check_indexes(store: Store, repair: bool) -> list[DoctorCheck]:
    out = []
    with store.snapshot():
        db_gen = store.generation()
        spaces = store.spaces()
    for sp in spaces:
        for modality in sp.modalities.split(","):
            out.append(_check_index(store, sp, modality, db_gen, repair))
    return out


def _check_index(store: Store, sp: Space, modality: str, db_gen: int, repair: bool) -> DoctorCheck:
    name = f"index {sp.id}/{modality}"
    path = index_path(store.root, sp.id, modality)
    with store.snapshot():
        expected = store.count_vectors(sp.id, modality)
        db_ids = _db_ids(store, sp.id, modality)
    kind = "auto"
    problem = ""
    behind = False
    if not path.exists() and not path.with_suffix(".json").exists():
        if expected == 0:
            return DoctorCheck(name, "ok", "no vectors, no index file")
        problem = f"index file missing ({expected} vectors in the database)"
    else:
        try:
            ann, meta = AnnIndex.load(path)
            kind = str(meta.get("kind", "auto"))
            file_gen = int(meta["generation"])
        except FileNotFoundError as exc:
            problem = f"index file incomplete ({Path(exc.filename or path).name} missing)"
        except (CorruptIndexError, KeyError, ValueError) as exc:
            problem = f"index file damaged: {exc}"
        else:
            if meta.get("space_key") != sp.key:
                problem = "index file belongs to another model"
            elif file_gen > db_gen:
                problem = f"index file is ahead of the database (generation {file_gen} > {db_gen})"
            else:
                added, removed = store.changes(sp.id, modality, file_gen)
                if added or removed:
                    behind = True
                    problem = (f"index file is behind the database (generation {file_gen}; {added} vectors added, "
                               f"{removed} removed since)")
                else:
                    have = _index_ids(ann)
                    extra = np.setdiff1d(have, db_ids).size
                    lacking = np.setdiff1d(db_ids, have).size
                    if extra or lacking or len(have) != len(db_ids):
                        problem = (f"index disagrees with the database: {lacking} vectors missing from it, "
                                   f"{extra} it should not hold")
    if not problem:
        return DoctorCheck(name, "ok", f"{expected} vectors, matches the database")

    def fix() -> str:
        if not behind:
            for p in (path, path.with_suffix(".json")):
                p.unlink(missing_ok=True)
        idx = SpaceIndex(store, sp.id, sp.key, modality, kind if kind in ("flat", "ivf", "hnsw", "pq") else "auto")
        rep = idx.sync(save=True)
        if not np.array_equal(np.sort(_index_ids(idx.ann)), np.sort(_db_ids(store, sp.id, modality))):
            for p in (path, path.with_suffix(".json")):
                p.unlink(missing_ok=True)
            idx = SpaceIndex(store, sp.id, sp.key, modality, idx.kind_pref)
            rep = idx.sync(save=True)
        if rep.action == "caught-up":
            return f"caught up from the database to generation {rep.generation}"
        return f"rebuilt from the database ({idx.ann.ntotal} vectors)"

    return _fixed(name, repair, problem, fix)


def _check_leftovers(store: Store, repair: bool) -> list[DoctorCheck]:
    ann_dir = store.root / ANN_DIR
    temps = sorted(store.root.glob(".*.tmp")) + (sorted(ann_dir.glob(".*.tmp")) if ann_dir.is_dir() else [])
    known = {index_path(store.root, sp.id, m).stem for sp in store.spaces() for m in sp.modalities.split(",")}
    strays = [p for p in (sorted(ann_dir.iterdir()) if ann_dir.is_dir() else [])
              if p.suffix in (".faiss", ".json") and not p.name.startswith(".") and p.stem not in known]
    found = temps + strays
    if not found:
        return [DoctorCheck("leftovers", "ok", "no temporary or stray files")]
    detail = f"{len(temps)} temporary files of an interrupted write, {len(strays)} index files of no model: " \
             f"{_some([p.name for p in found])}"
    if not repair:  # harmless: nothing reads them
        return [DoctorCheck("leftovers", "note", detail)]
    for p in found:
        p.unlink(missing_ok=True)
    return [DoctorCheck("leftovers", "repaired", detail + ": deleted")]


def _check_manifest(store: Store, repair: bool) -> list[DoctorCheck]:
    path = store.root / MANIFEST
    try:
        data = json.loads(path.read_text())
        keys = [s["key"] for s in data["spaces"]]
        current = data.get("generation") == store.generation() and keys == [sp.key for sp in store.spaces()]
        detail = "" if current else "manifest.json is out of date"
    except FileNotFoundError:
        current, detail = False, "manifest.json is missing"
    except (OSError, ValueError, KeyError, TypeError):
        current, detail = False, "manifest.json is unreadable"
    if current:
        return [DoctorCheck("manifest", "ok", "manifest.json matches the database")]
    if not repair:  # informational only: nothing reads it to work
        return [DoctorCheck("manifest", "note", detail)]
    store.write_manifest()
    return [DoctorCheck("manifest", "repaired", detail + ": rewritten")]
