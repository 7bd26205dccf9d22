"""Planning a sync: walk the folders, then decide by content what each file needs.

1. ``unchanged``: same (size, mtime) as its row, and its content has a vector in this space.
2. Hash the rest on threads (read + sha256 release the GIL; no process start-up). Content the store
   already has a vector for (moved, renamed, copied, touched) is *linkable*: no decode, no model call.
3. The rest is *fresh*: decoded and embedded; a file with the bytes of a fresh one hashed before it in this
   run (a folder and its backup) is a *copy*, linked once that one is embedded instead of decoded again.
4. ``vanished``: rows under a walked root not seen now (and not under a folder that failed to read);
   with a watcher's changes, also the rows at or below paths that were deleted (:func:`gone_uris`).
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Iterable, Iterator, Sequence

from mmsearch.errors import UsageError
from mmsearch.ingest.decode import Loaded, load
from mmsearch.ingest.discover import Candidate, check_roots, display, walk
from mmsearch.store.store import Store
from mmsearch.util import batched, under_any

HASH_THREADS = 4  # readers/hashers of changed files (I/O bound)
LOOKUP = 2048  # paths looked up per query


@dataclass
class Plan:
    """What a walk found and what of it is already current."""

    roots: list[str]
    candidates: list[Candidate]
    walk_errors: list[tuple[str, str]] = field(default_factory=list)
    unchanged: int = 0
    todo: list[Candidate] = field(default_factory=list)  # new, changed or touched: to hash
    kept: list[tuple[str, int]] = field(default_factory=list)  # (root, entries) of roots found empty: kept


def walked(store: Store, roots: Sequence[str]) -> Plan:
    """Walk ``roots`` once (the store's own folder passed over): every candidate, every walk problem."""
    p = Plan(list(roots), [])
    p.candidates = list(walk(roots, lambda path, why: p.walk_errors.append((path, why)), skip=[str(store.root)]))
    return p


def current(store: Store, space_id: int | None, candidates: Sequence[Candidate],
            tower: str | None = None) -> tuple[int, list[Candidate]]:
    """(how many of ``candidates`` are current in the space, the rest to hash) — step 1 of the module doc.
    ``space_id`` None: a space not created yet, where nothing is current. ``tower`` ("image", "audio"):
    what of a video the space embeds; a video known to have none of it (a silent one in a sound space, a
    sound in a video container in an image space) is current without a vector."""
    if space_id is None:
        return 0, list(candidates)
    unchanged, todo = 0, []
    for part in batched(candidates, LOOKUP):
        known = store.lookup_sources([c.path for c in part])
        with_vec = store.contents_with_vectors({k.content_id for k in known.values()}, space_id)
        videos = {known[c.path].content_id for c in part if c.modality == "video" and c.path in known}
        if tower is not None and videos - with_vec:
            with_vec |= store.contents_lacking(videos - with_vec, tower)
        for c in part:
            k = known.get(c.path)
            if k and k.size == c.size and k.mtime_ns == c.mtime_ns and k.content_id in with_vec:
                unchanged += 1
            else:
                todo.append(c)
    return unchanged, todo


def hashed(store: Store, space_id: int | None, todo: Sequence[Candidate], batch: int,
           limits: dict[str, int] | None = None) -> Iterator[tuple[list[Loaded], list[Candidate], list[Loaded]]]:
    """Hash ``todo`` a batch at a time: yields (linkable items incl. read errors, fresh candidates, copies).

    *Copies* have the bytes of a fresh candidate yielded before them in this run (a folder and its backup,
    indexed for the first time): they are to be linked once that one is embedded, not decoded again."""
    first: set[str] = set()  # the contents of the fresh candidates so far
    with ThreadPoolExecutor(max_workers=HASH_THREADS) as hasher:
        for part in batched(todo, batch):
            chunk = list(hasher.map(lambda c: load(c.path, c.modality, None, limits, decode=False), part))
            known = store.contents_by_sha([x.sha256 for x in chunk if x.error is None], -1 if space_id is None else space_id)
            linkable = [x for x in chunk if x.error is not None or known.get(x.sha256, (0, False))[1]]
            fresh, copies = [], []
            for x in chunk:
                if x.error is None and not known.get(x.sha256, (0, False))[1]:
                    if x.sha256 in first:
                        copies.append(x)
                    else:
                        first.add(x.sha256)
                        fresh.append(Candidate(x.path, x.modality, x.size, x.mtime_ns))
            yield linkable, fresh, copies


def vanished(store: Store, p: Plan, failed_now: set[str]) -> list[str]:
    """Rows under a walked root not seen now; a recorded error of a path neither seen nor failing now is stale.

    A folder root in which nothing is found now, where the store holds files, keeps them (recorded in
    ``p.kept``): an empty mount point is what an unplugged disk or an unmounted share leaves behind, and
    removing its entries would lose them all. ``mmsearch remove ROOT`` forgets them on purpose."""
    seen = {c.path for c in p.candidates}
    protected = [path for path, _ in p.walk_errors] + [display(path) for path, _ in p.walk_errors]
    gone: list[str] = []
    for root in p.roots:
        if root in seen:
            continue  # a file root seen now: nothing at or below it has vanished
        below = store.uris_under(root)
        if below and not any(under_any(c, [root]) for c in seen) and not under_any(root, protected) \
                and not any(under_any(path, [root]) for path in protected):
            p.kept.append((root, len(below)))  # an empty folder where files were: an unmounted disk, most likely
            continue
        gone += [u for u in below if u not in seen and not under_any(u, protected)]
        gone += [u for u in store.error_uris_under(root)
                 if u not in seen and u not in failed_now and not under_any(u, protected)]
    return gone


def present_and_gone(paths: Sequence[str | os.PathLike]) -> tuple[list[str], list[str]]:
    """(absolute paths that exist, paths that were deleted). A missing path counts as deleted only when
    its folder is still there: one whose folder is gone too (a disk unplugged) removes nothing."""
    present: list[str | os.PathLike] = []
    gone: list[str] = []
    for p in paths:
        if isinstance(p, (str, bytes, os.PathLike)) and _missing(p):
            g = os.path.abspath(os.fsdecode(p))
            if os.path.isdir(os.path.dirname(g)):
                gone.append(g)
        else:
            present.append(p)
    return (check_roots(present) if present else []), list(dict.fromkeys(gone))


def _missing(path: str | bytes | os.PathLike) -> bool:
    """Whether a path is not there (a file that cannot be read for another reason, e.g. permissions,
    is there: the sync reports it, it is not a deletion)."""
    try:
        os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        return True
    except OSError:
        return False
    return False


def gone_uris(store: Store, gone: Sequence[str]) -> list[str]:
    """Every stored uri (sources and recorded errors) at or below the deleted paths ``gone``: looked up
    exactly in batches; a path that is not a stored file is searched below (a folder may well be named
    like a file: ``shoot.raw``, ``album.flac``)."""
    found = store.lookup_sources(gone)
    uris = list(found)
    for g in gone:
        if g not in found:
            uris += store.uris_under(g) + store.error_uris_under(g)
    return uris


def removal_uris(store: Store, targets: Iterable[str | os.PathLike] | str | os.PathLike) -> list[str]:
    """Every stored uri that forgetting ``targets`` (files, folders: all below, ``text:<id>``) removes."""
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
            uris += store.uris_under(os.path.abspath(t)) + store.error_uris_under(os.path.abspath(t))
    return uris
