"""What ``doctor`` asks of the store: each check finds, and with ``repair`` fixes, one kind of problem.

The database is the truth: it is never rebuilt from an index. Every method returns
:class:`~mmsearch.types.DoctorCheck` findings; the caller holds the writer lock when repairing.
"""

from __future__ import annotations

import json
import os
from typing import TYPE_CHECKING

from mmsearch.store.files import MANIFEST, temp_files
from mmsearch.store.safety import DAMAGED_HINT
from mmsearch.types import DoctorCheck

if TYPE_CHECKING:
    from mmsearch.store.store import Store

SHOW = 3  # paths named in a finding before "and N more"
_FK_TABLES = ("sources", "vectors")  # rows whose parent is gone: safe to delete, re-created by the next index run


def some(names: list[str]) -> str:
    shown = ", ".join(names[:SHOW])
    return shown + (f" and {len(names) - SHOW} more" if len(names) > SHOW else "")


class Checks:
    """Doctor's checks of :class:`mmsearch.store.store.Store`."""

    def check_database(self: "Store", repair: bool) -> list[DoctorCheck]:
        """SQLite integrity and foreign keys (rows whose parent is gone are deleted)."""
        if self.db_path is None:  # a server keeps its own files sound; its foreign keys are always enforced
            return [DoctorCheck("database", "ok", f"{self.database} answers (PostgreSQL: integrity is the server's)")]
        res, fk = self.db.integrity()
        if res != ["ok"]:
            found = "; ".join(" ".join(r.split()) for r in res[:3])[:500]
            return [DoctorCheck("database", "problem", f"SQLite integrity check failed: {found}. The database cannot "
                                                       f"be repaired in place: {DAMAGED_HINT}")]
        out = [DoctorCheck("database", "ok", "SQLite integrity check passed")]
        if not fk:
            return out + [DoctorCheck("foreign-keys", "ok", "every row points at an existing row")]
        tables = sorted({r[0] for r in fk})
        problem = f"{len(fk)} rows point at rows that do not exist (in {', '.join(tables)})"
        if any(t not in _FK_TABLES for t in tables):
            return out + [DoctorCheck("foreign-keys", "problem", problem)]

        def fix() -> str:
            for table in tables:
                self.delete_rows(table, [r[1] for r in fk if r[0] == table])
            return "deleted (files they belonged to are indexed again on the next run)"

        return out + [DoctorCheck.fixed("foreign-keys", repair, problem, fix)]

    def check_contents(self: "Store", repair: bool) -> list[DoctorCheck]:
        orphans = self.orphan_contents()
        if not orphans:
            return [DoctorCheck("contents", "ok", "every item is pointed at by a file or an added text")]
        return [DoctorCheck.fixed("contents", repair, f"{len(orphans)} items no file or text points at",
                                  lambda: f"dropped {self.drop_contents(orphans)}")]

    def check_segments(self: "Store", repair: bool) -> list[DoctorCheck]:
        """Windows of sounds whose sound has no vector in that model (nothing searches them; a hit's
        window comes from them): dropped when repairing."""
        stray = self.stray_segments()
        if not stray:
            return [DoctorCheck("segments", "ok", "every segment (sound window, video frame) belongs to an item with a vector in its model")]
        return [DoctorCheck.fixed("segments", repair, f"{len(stray)} segments (sound windows, video frames) of no stored vector",
                                  lambda: f"dropped {self.drop_segments(stray)}")]

    def check_files(self: "Store", repair: bool) -> list[DoctorCheck]:
        """Files the store lists that are gone, dropped only where their folder still exists (an
        unmounted disk must never empty a store)."""
        uris = self.file_uris()
        gone, unmounted = [], {}
        for uri in uris:
            if os.path.exists(uri):
                continue
            parent = os.path.dirname(uri)
            if os.path.isdir(parent):
                gone.append(uri)
                continue
            top = parent
            while not os.path.isdir(os.path.dirname(top)) and os.path.dirname(top) != top:
                top = os.path.dirname(top)
            unmounted[top] = unmounted.get(top, 0) + 1
        out = [] if gone or unmounted else [DoctorCheck("files", "ok", f"all {len(uris)} files the store lists exist")]
        for folder, n in sorted(unmounted.items()):
            out.append(DoctorCheck("files", "note", f"folder {folder} is missing (unmounted disk?): its {n} files are "
                                                    f"kept; `mmsearch remove {folder}` forgets them"))
        if gone:
            out.append(DoctorCheck.fixed(
                "files", repair, f"{len(gone)} files the store lists are gone from disk: {some(gone)}",
                lambda: f"dropped {self.apply([], None, remove_uris=gone).removed_sources} from the store"))
        return out

    def check_errors(self: "Store", repair: bool) -> list[DoctorCheck]:
        uris = self.error_uris()
        stale = [u for u in uris if not os.path.lexists(u) and os.path.isdir(os.path.dirname(u))]
        if not stale:
            return [DoctorCheck("errors", "ok", f"{len(uris)} recorded errors, all of existing paths")]
        detail = f"{len(stale)} recorded errors are of paths that are gone: {some(stale)}"
        if not repair:
            return [DoctorCheck("errors", "note", detail)]
        self.apply([], None, remove_uris=stale)
        return [DoctorCheck("errors", "repaired", detail + ": cleared")]

    def check_vectors(self: "Store", repair: bool) -> list[DoctorCheck]:
        """Per model: items that have no vector in it (a note: index them with that model)."""
        spaces = self.spaces()
        if not spaces:
            return [DoctorCheck("vectors", "ok", "no models yet (empty store)")]
        out = []
        for sp in spaces:
            missing = self.missing_vectors(sp)
            if missing:
                out.append(DoctorCheck(f"vectors {sp.id}", "note", f"{missing} items have no vector for model "
                                       f"{sp.spec} (`mmsearch index … --model {sp.spec}` adds them)"))
            else:
                out.append(DoctorCheck(f"vectors {sp.id}", "ok", f"every item has a vector for model {sp.spec}"))
        return out

    def check_leftovers(self: "Store", repair: bool) -> list[DoctorCheck]:
        """Temp files of an interrupted write beside the database."""
        temps = temp_files(self.root)
        if not temps:
            return [DoctorCheck("leftovers", "ok", "no temporary files")]
        detail = f"{len(temps)} temporary files of an interrupted write: {some([p.name for p in temps])}"
        if not repair:  # harmless: nothing reads them
            return [DoctorCheck("leftovers", "note", detail)]
        for p in temps:
            p.unlink(missing_ok=True)
        return [DoctorCheck("leftovers", "repaired", detail + ": deleted")]

    def check_manifest(self: "Store", repair: bool) -> list[DoctorCheck]:
        path = self.root / MANIFEST
        try:
            data = json.loads(path.read_text())
            keys = [s["key"] for s in data["spaces"]]
            current = data.get("generation") == self.generation() and keys == [sp.key for sp in self.spaces()]
            detail = "" if current else "manifest.json is out of date"
        except FileNotFoundError:
            current, detail = False, "manifest.json is missing"
        except (OSError, ValueError, KeyError, TypeError):
            current, detail = False, "manifest.json is unreadable"
        if current:
            return [DoctorCheck("manifest", "ok", "manifest.json matches the database")]
        if not repair:  # informational only: nothing reads it to work
            return [DoctorCheck("manifest", "note", detail)]
        self.write_manifest()
        return [DoctorCheck("manifest", "repaired", detail + ": rewritten")]
