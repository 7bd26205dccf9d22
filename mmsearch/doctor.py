"""``mmsearch doctor``: run each layer's own checks, in order, and report. Holds no check of its own.

``lock``        a lock record left by a writer that is gone (stale), or a writer at work now (store.lock)
``database``    SQLite ``integrity_check`` and ``foreign_key_check``; broken links are deleted: the files
                they belonged to are indexed again on the next run (Store.check_database)
``contents``    contents no file or text points at any more: dropped, their vectors tombstoned
``files``       files the store lists that are gone from disk: dropped, but only where their folder still
                exists (an unmounted disk must never empty a store)
``errors``      recorded errors of files that are gone: dropped
``vectors``     per model: items that have no vector in it (a note: index them with that model)
``index``       per model and modality: the FAISS file is missing, damaged, of another model, ahead of or
                behind the database, or holds other ids than the database: rebuilt or caught up (IndexSet.check)
``faiss``       which faiss build is active (CPU or GPU, GPUs seen); two faiss packages installed over each other
``index files`` temp files of an interrupted save, on-disk index work folders a crash left, old generations
                (their ``.ivfdata`` too), index files of no model: deleted
``leftovers``   temp files beside the database: deleted
``manifest``    ``manifest.json`` missing or out of date: rewritten

The database is the truth: it is never rebuilt from an index. Repairs run under the writer lock.
"""

from __future__ import annotations

from typing import Callable

from mmsearch.ann.indexes import IndexSet
from mmsearch.errors import StoreLockedError
from mmsearch.store.lock import check_holder, read_holder
from mmsearch.store.store import Store
from mmsearch.types import DoctorCheck, DoctorReport

Check = Callable[[bool], list[DoctorCheck]]


def _checks(store: Store, indexes: IndexSet) -> list[tuple[str, Check]]:
    return [("database", store.check_database), ("contents", store.check_contents), ("files", store.check_files),
            ("errors", store.check_errors), ("vectors", store.check_vectors), ("segments", store.check_segments),
            ("index", indexes.check), ("faiss", indexes.check_faiss),
            ("leftovers", store.check_leftovers), ("manifest", store.check_manifest)]


def check_store(store: Store, indexes: IndexSet, *, repair: bool) -> DoctorReport:
    """Run every check; with ``repair``, fix what can be fixed (under the writer lock)."""
    report = DoctorReport(str(store.root), repair)
    holder = read_holder(store.root)
    if not repair:
        report.checks.append(check_holder(holder, repairing=False))
        _run(_checks(store, indexes), report, repair=False)
        return report
    try:
        with store.writer_lock("doctor"):
            report.checks.append(check_holder(holder, repairing=True))
            _run(_checks(store, indexes), report, repair=True)
    except StoreLockedError as exc:
        what = str(exc).removesuffix(f" ({exc.hint})") if exc.hint else str(exc)
        raise StoreLockedError(f"cannot repair while another process writes: {what}",
                               hint="wait for it, or check without repairing: `mmsearch doctor --no-repair`") from None
    return report


def _run(checks: list[tuple[str, Check]], report: DoctorReport, *, repair: bool) -> None:
    for name, check in checks:
        try:
            report.checks.extend(check(repair))
        except Exception as exc:  # one failing check must not hide the others
            report.checks.append(DoctorCheck(name, "problem", f"check failed: {str(exc).splitlines()[0][:300]}"))
        if name == "database" and any(c.name == "database" and c.status == "problem" for c in report.checks):
            # Nothing read from a damaged database can be trusted: repairing caches from it would spread the damage.
            report.checks.append(DoctorCheck("other checks", "note", "skipped: the database is damaged"))
            return
