"""Keep a store in sync with folders while it runs (``mmsearch watch``, ``mmsearch serve --watch``).

The loop: sync every root once (as ``index`` does), then wait for file system events (``watchfiles``,
debounced: a batch is the changes of one quiet window, and changes that arrive while a batch is being
synced wait in the watcher's set and form the next one, so a burst of 10k files costs a few syncs).
Each batch goes through the same sync as ``index`` (:func:`mmsearch.ingest.sync.sync_paths` with
``gone_ok``): the changed paths, deleted ones included, in one write, so a move (a delete and an add
in one batch) links the content instead of dropping and re-embedding it.

A watched root that goes away (a disk unplugged, a folder moved off) removes nothing: its events
are ignored until it is back (it exists again and, if it was on a mounted disk, that disk is
mounted again); then it is synced again in full. Stop with the ``stop`` event: a sync in progress is
cut short between batches (what it committed is kept).
"""

from __future__ import annotations

import os
import stat
import threading
import time
from collections import Counter
from typing import Callable, Iterable, Sequence

from mmsearch.errors import IndexInterrupted, MmsearchError, StoreLockedError, UsageError
from mmsearch.ingest.decode import BadInput
from mmsearch.ingest.discover import classify, sniffed, unsupported_image
from mmsearch.store.store import Store
from mmsearch.types import IndexReport, WatchReport, WatchSync
from mmsearch.util import is_under

#: ``sync(paths, progress, gone_ok)``: one write under the store's writer lock, as ``index`` (the engine's);
#: ``gone_ok``: paths that no longer exist are deletions (a batch of changes), else a usage error (full syncs).
Sync = Callable[[Sequence[str], Callable[[int, int], None], bool], IndexReport]
OnSync = Callable[[WatchSync], None]

DEBOUNCE_MS = 1600  # the longest a batch gathers changes
STEP_MS = 50  # a batch is complete after this long without a new change
POLL_SECONDS = 1.0  # how often roots are checked (gone, back) when nothing happens
KEEP_ERRORS = 1000
EXTRA_HINT = "install the watch extra: pip install 'mmsearch[watch]'"


class Root:
    """A watched root and how to tell it is there: it exists and, when it sat on a mounted file
    system other than the one at ``/`` when the watch began, that mount is still a mount."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.mount = _mount_of(os.path.realpath(path))
        self.present = True
        self.device = _device(path)

    def here(self) -> bool:
        return os.path.exists(self.path) and (self.mount is None or os.path.ismount(self.mount))

    def remounted(self) -> bool:
        """Whether another file system is at this path now (a disk mounted on the empty folder the watch
        began on, or swapped): no event tells, so it is polled."""
        now = _device(self.path)
        changed = now is not None and self.device is not None and now != self.device
        self.device = now if now is not None else self.device
        return changed


def _device(path: str) -> int | None:
    try:
        return os.stat(path).st_dev
    except OSError:
        return None


def _mount_of(path: str) -> str | None:
    """The nearest mount point at or above ``path``; None for the root file system."""
    while not os.path.ismount(path):
        parent = os.path.dirname(path)
        if parent == path:
            return None
        path = parent
    return None if os.path.dirname(path) == path else path


def watch_roots(store: Store, roots: Sequence[str], sync: Sync, *, on_sync: OnSync | None = None,
                stop: threading.Event | None = None, debounce_ms: int = DEBOUNCE_MS, step_ms: int = STEP_MS,
                poll_seconds: float = POLL_SECONDS) -> WatchReport:
    """Sync ``roots`` (absolute, existing) into ``store`` through ``sync`` until ``stop`` is set (or
    Ctrl-C); returns what the session did."""
    try:
        import watchfiles  # noqa: F401  (the optional extra: said before anything is synced)
    except ImportError:
        raise UsageError(f"watching folders needs the package 'watchfiles': {EXTRA_HINT}") from None
    return _Session(store, roots, sync, on_sync, stop or threading.Event(), debounce_ms, step_ms, poll_seconds).run()


class _Session:
    def __init__(self, store: Store, roots: Sequence[str], sync: Sync, on_sync: OnSync | None,
                 stop: threading.Event, debounce_ms: int, step_ms: int, poll_seconds: float) -> None:
        self.store, self.sync, self.on_sync, self.stop = store, sync, on_sync, stop
        self.roots = [Root(r) for r in roots]
        self.debounce_ms, self.step_ms, self.poll = int(debounce_ms), int(step_ms), float(poll_seconds)
        self.report = WatchReport(roots=list(roots))
        self.pending: dict[str, set[str]] = {}  # path -> kinds of change seen (added, modified, deleted)
        self.due = {r.path: "start" for r in self.roots}  # roots to sync in full (at the start, back again)
        self.skip = str(store.root)
        self.polling = False  # the OS watch could not be set up: poll the folders instead
        self.waiting = False  # another writer holds the store (told once per wait)
        self.failing = ""  # the error the last sync failed with (told once until a sync succeeds)

    # ---- the loop ----------------------------------------------------------------------------------
    def run(self) -> WatchReport:
        t0 = time.monotonic()
        try:
            while not self.stop.is_set():
                watching = [r.path for r in self.roots if r.present]
                if watching:
                    self._watch(watching)
                else:
                    self.stop.wait(self.poll)
                self._roots_changed()
        except KeyboardInterrupt:  # Ctrl-C without a stop event: the end of the session, as a stop is
            pass
        self.report.vanished = [r.path for r in self.roots if not r.present]
        self.report.seconds = time.monotonic() - t0
        return self.report

    def _watch(self, paths: list[str]) -> None:
        """Apply batches of changes under ``paths`` until a root comes or goes, or the stop."""
        import watchfiles

        events = watchfiles.watch(*paths, watch_filter=self._relevant, debounce=self.debounce_ms, step=self.step_ms,
                                  stop_event=self.stop, yield_on_timeout=True, rust_timeout=max(int(self.poll * 1000), 1),
                                  force_polling=self.polling or None, poll_delay_ms=max(int(self.poll * 1000), 1))
        while True:
            try:  # only the watch itself: a sync that fails is told and retried in _run, never taken for this
                changes = next(events)
            except StopIteration:
                return
            except (OSError, RuntimeError) as exc:  # a root went as the watch began, or too many watches
                if all(r.here() for r in self.roots if r.present) and not self.polling:
                    self.polling = True
                    self._notice(f"cannot watch with the operating system ({exc}): polling the folders instead")
                self._resync_the_rest()
                self.stop.wait(self.poll)
                return
            for change, path in changes:
                self.pending.setdefault(path, set()).add(change.name)
            if self._roots_changed():
                return  # watch the roots that are here now
            if any(p in self.due for p in paths):  # now that the watch is set up: no change is missed
                self._full_syncs(paths)
            if self.pending:
                self._changes()
            if self.stop.is_set():
                return

    def _relevant(self, _change: object, path: str) -> bool:
        """Events worth a sync: not in the store's own folder, no hidden entry below a watched root."""
        if is_under(path, self.skip):
            return False
        for r in self.roots:
            if is_under(path, r.path):
                return not any(part.startswith(".") for part in path[len(r.path):].split(os.sep))
        return True

    def _roots_changed(self) -> bool:
        """Note roots that went (their pending changes dropped) or came back (synced in full)."""
        moved = False
        for r in self.roots:
            here = r.here()
            if here and r.present and r.remounted():  # a disk mounted where the watch saw an empty folder
                moved = True
                self.report.returned += 1
                self.due[r.path] = "returned"
                r.mount = _mount_of(os.path.realpath(r.path))  # from now on gone when this file system goes
                continue
            if here == r.present:
                continue
            moved, r.present = True, here
            r.device = _device(r.path)  # what is there now (a disk back is not also a disk mounted anew)
            if not here:
                self.pending = {p: c for p, c in self.pending.items() if not is_under(p, r.path)}
                self._tell(WatchSync("vanished", (r.path,)))
            elif self.due.get(r.path) != "start":  # never synced yet: its start sync is still due
                self.report.returned += 1
                self.due[r.path] = "returned"
        if moved:
            self._resync_the_rest()
        return moved

    def _resync_the_rest(self) -> None:
        """The watch restarts (over the roots present now): what changed under the other roots between the
        old watch's end and the new one's start was seen by neither, so they are synced in full again."""
        for r in self.roots:
            if r.present and r.path not in self.due:
                self.due[r.path] = "resync"

    # ---- syncs -------------------------------------------------------------------------------------
    def _full_syncs(self, watched: list[str]) -> None:
        """The full syncs due of watched roots (changes pending below them are in those syncs)."""
        for kind in ("start", "returned", "resync"):
            roots = [p for p in watched if self.due.get(p) == kind]
            if roots:
                self._full(kind, roots)
                for p in roots:
                    del self.due[p]
                self.pending = {p: c for p, c in self.pending.items() if not any(is_under(p, r) for r in roots)}

    def _full(self, kind: str, roots: list[str]) -> None:
        rep = self._run(roots)
        while rep is None and not self.stop.is_set() and all(os.path.exists(r) for r in roots):
            rep = self._run(roots)  # another writer held the store: try again
        if rep is None:
            return  # a root went as it began: synced in full when it is back
        full = self.report.full
        for name in ("scanned", "indexed", "reused", "unchanged", "removed", "failed", "gpu_decoded"):
            setattr(full, name, getattr(full, name) + getattr(rep, name))
        full.seconds += rep.seconds
        full.spaces = list(dict.fromkeys(full.spaces + rep.spaces))
        full.space = full.space or rep.space
        full.interrupted |= rep.interrupted
        self._tell(WatchSync(kind, tuple(roots), failed=rep.failed, indexed=rep.indexed, reused=rep.reused,
                             unchanged=rep.unchanged, removed=rep.removed, seconds=rep.seconds,
                             errors=tuple(rep.errors), interrupted=rep.interrupted))

    def _changes(self) -> None:
        """Apply the pending changes in one sync, and tell what they were."""
        files, folders, gone = self._batch()
        if not (files or folders or gone):
            return
        paths = files + folders + gone
        before = snapshot(self.store, files, folders + gone)
        rep = self._run(paths, changes=True)
        if rep is None:
            return
        after = snapshot(self.store, files, folders + gone)
        added, changed, moved, removed = compare(before, after)
        r = self.report
        r.syncs += 1
        r.added, r.changed, r.moved, r.removed = r.added + added, r.changed + changed, r.moved + moved, r.removed + removed
        r.failed += rep.failed
        roots = tuple(x.path for x in self.roots if any(is_under(p, x.path) for p in paths))
        self._tell(WatchSync("changes", roots, paths=len(paths), added=added, changed=changed, moved=moved,
                             removed=removed, failed=rep.failed, indexed=rep.indexed, reused=rep.reused,
                             unchanged=rep.unchanged, seconds=rep.seconds, errors=tuple(rep.errors),
                             interrupted=rep.interrupted))

    def _run(self, paths: list[str], changes: bool = False) -> IndexReport | None:
        """One sync (of ``changes``, or full); None when another writer holds the store (a batch of
        changes is kept and tried again) or a root went as a full sync began (it is noticed as gone)."""
        try:
            rep = self.sync(paths, self._progress, changes)
        except UsageError:  # a path went between the look and the sync (a root going away)
            if changes:  # looked at again with the next batch (as gone, or under a root that went)
                for p in paths:
                    self.pending.setdefault(p, set()).add("retry")
            self.stop.wait(min(self.poll, 0.2))
            return None
        except StoreLockedError as exc:
            if changes:  # wait for the other writer: these paths are synced again with the next batch
                for p in paths:
                    self.pending.setdefault(p, set()).add("retry")
            if not self.waiting:
                self.waiting = True
                self._tell(WatchSync("waiting", tuple(r.path for r in self.roots), notice=str(exc)))
            self.stop.wait(self.poll)
            return None
        except IndexInterrupted as exc:
            rep = exc.report
            self.report.interrupted = True
            self.stop.set()
        except MmsearchError:  # the model or the store cannot be used at all: the watch ends, saying why
            raise
        except Exception as exc:  # disk full, a decode worker killed, a driver error: keep the changes, try again
            if changes:
                for p in paths:
                    self.pending.setdefault(p, set()).add("retry")
            why = f"{type(exc).__name__}: {(str(exc).splitlines() or [''])[0][:300]}"
            if why != self.failing:  # told once until a sync succeeds
                self.failing = why
                self._notice(f"a sync failed ({why}); its changes are kept and tried again")
            self.stop.wait(self.poll)
            return None
        self.waiting, self.failing = False, ""
        self.report.errors = (self.report.errors + list(rep.errors))[-KEEP_ERRORS:]
        for n in rep.notices:
            self._notice(n)
        return rep

    def _progress(self, _done: int, _total: int) -> None:
        if self.stop.is_set():  # cut the sync short between batches (sync_paths keeps what it committed)
            raise KeyboardInterrupt

    def _batch(self) -> tuple[list[str], list[str], list[str]]:
        """The pending changes as (files, folders to walk, deleted paths): each path as it is now,
        nothing below a path already named, only what ``index`` would index (or report)."""
        pending, self.pending = self.pending, {}
        state: dict[str, str] = {}
        for path, kinds in pending.items():
            root = next((r for r in self.roots if is_under(path, r.path)), None)
            if root is None or not root.present:
                continue
            what = _state(path, kinds)
            if path == root.path and what != "file":
                continue  # a root's own coming and going is _roots_changed's (a root is never "gone")
            if what is not None:
                state[path] = what
        kept = {p: w for p, w in state.items() if not _below_any(p, state)}
        files = sorted(p for p, w in kept.items() if w == "file")
        return files, sorted(p for p, w in kept.items() if w == "folder"), sorted(p for p, w in kept.items() if w == "gone")

    def _tell(self, event: WatchSync) -> None:
        if self.on_sync is not None:
            self.on_sync(event)

    def _notice(self, note: str) -> None:
        if note not in self.report.notices:
            self.report.notices.append(note)


def _state(path: str, kinds: set[str]) -> str | None:
    """How a changed path is synced now: ``file``, ``folder`` (walked: new, or made again), ``gone``;
    None: nothing to do (a folder whose own attributes changed: its entries bring their own events,
    or a file ``index`` passes over)."""
    try:
        st = os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        return "gone"
    except OSError:
        return "file"  # the walk reports why it cannot be read
    if stat.S_ISDIR(st.st_mode):
        return "folder" if kinds & {"added", "deleted", "retry"} else None
    return "file" if _indexable(path) else None


def _indexable(path: str) -> bool:
    """What a folder walk yields or reports (:mod:`mmsearch.ingest.discover`): known kinds, image
    formats it reports as unsupported, sounds by their first bytes."""
    if classify(path) or unsupported_image(path):
        return True
    try:
        return sniffed(path) is not None
    except BadInput:
        return True  # a read problem: reported as a folder walk reports it


def _below_any(path: str, others: Iterable[str]) -> bool:
    """``path`` lies strictly below another of ``others`` (a set or dict: ancestors looked up)."""
    parent = os.path.dirname(path)
    while parent and parent != path:
        if parent in others:
            return True
        path, parent = parent, os.path.dirname(parent)
    return False


def snapshot(store: Store, files: Sequence[str], folders: Sequence[str]) -> dict[str, int]:
    """uri → content id of the sources at ``files`` and at or below ``folders`` (paths that are, were or
    may be folders)."""
    rows = {u: s.content_id for u, s in store.lookup_sources(list(files) + list(folders)).items()}
    below = [u for f in folders if f not in rows for u in store.uris_under(f)]
    rows.update((u, s.content_id) for u, s in store.lookup_sources(below).items())
    return rows


def compare(before: dict[str, int], after: dict[str, int]) -> tuple[int, int, int, int]:
    """(added, changed, moved, removed) between two snapshots: a new path holding the content of a path
    that went is a move (each removed path pairs with one new path)."""
    new = sorted(u for u in after if u not in before)
    went = [u for u in before if u not in after]
    changed = sum(1 for u in after if u in before and after[u] != before[u])
    left = Counter(before[u] for u in went)
    moved = 0
    for u in new:
        if left[after[u]] > 0:
            left[after[u]] -= 1
            moved += 1
    return len(new) - moved, changed, moved, len(went) - moved

