"""An IVF-PQ index whose inverted lists live in a file on disk, built shard by shard and memory-mapped.

The road (FAISS's ``contrib/ondisk.py`` recipe, issue 14):

1. :func:`train` an empty ``IVF{nlist},PQ{m}x8`` on a sample (the same factory and sample size as the
   in-memory ``pq`` kind, polysemous training off) and serialise it to bytes;
2. :func:`build_shard` for each slice of the vectors: a pure function of (trained bytes, ids, vectors,
   path), so a Ray worker or any other process can run it;
3. :func:`merge_shards`: ``merge_ondisk`` concatenates every shard's lists into one
   ``OnDiskInvertedLists`` file (``.ivfdata``) beside a small index file (quantizer, codebooks, list
   offsets);
4. :func:`read_ondisk`: the index file read with ``IO_FLAG_ONDISK_SAME_DIR`` (the ``.ivfdata`` is looked
   up next to it, so the pair can be moved together); the lists are memory-mapped, so resident memory is
   the pages queries touch. It searches like ``pq``: approximate codes whose candidates are re-ranked
   exactly (:data:`mmsearch.ann.rerank.RERANKED`).

As an index kind of a store (``--index ondisk``, and what ``auto`` builds once even IVF-PQ's codes would
not fit the memory budget), :class:`~mmsearch.ann.space_index.SpaceIndex` keeps each generation as two
files, ``NAME.gGEN-TAG.faiss`` + ``NAME.gGEN-TAG.ivfdata``, the ``.faiss`` naming its own ``.ivfdata``
(``IO_FLAG_ONDISK_SAME_DIR`` finds it by basename beside it). A generation is made in a private work
folder under ``ann/`` (:func:`work_folder`, removed with the index that uses it) and moved into place on
save (:func:`publish`); published files are only ever mapped read-only, never changed.

**Catching up** (vectors added and tombstoned since a file's generation) writes a *new* lists file:
:func:`caught_up` encodes the added vectors into in-memory shards (the same trained quantizer and
codebooks), merges the old lists (mapped read-only) and the shards into a fresh ``OnDiskInvertedLists``
sized once, then removes the tombstoned ids from it (removal only shrinks lists in place). The old
generation is never touched, so readers that mapped it keep answering, and a reader that must catch up
does the same into its own work folder. The suggested copy-on-write design (copy the ``.ivfdata``,
open it writable, ``add_with_ids``) was tried and rejected: FAISS 1.15's ``OnDiskInvertedLists``
overwrites existing entries when a merged file grows (4000 entries, 3168 distinct ids after adding 1000
to 3000 merged ones). The merge costs what the copy would (one sequential read and write of the lists)
and decodes no vector.

FAISS's on-disk lists ``printf`` to stdout ("resizing …", "IO_FLAG_ONDISK_SAME_DIR: updating …"):
every call that may print runs under :func:`quiet`, so ``--json`` output stays clean.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
import weakref
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator

import numpy as np

from mmsearch.ann.faiss_index import AnnIndex, CorruptIndexError, train_size

KIND = "ondisk"
#: k-means iterations of the coarse quantizer (FAISS's default is 25): the lists of a 10M-vector index take
#: 4000+ centroids over ~1M training vectors, and past 10 iterations its assignment barely moves.
COARSE_ITERATIONS = 10
#: Vectors per shard when a store builds or catches up its on-disk index: one shard's float32 vectors are
#: in memory at once (200,000 × 512-d: 410 MB), the codes of a shard written before the next is read.
STORE_SHARD = 200_000


def train(dim: int, n: int, sample: Callable[[int], np.ndarray]) -> bytes:
    """An empty IVF-PQ for ``n`` vectors of ``dim``, trained on ``sample(m)`` vectors, as bytes."""
    import faiss

    ann = AnnIndex.empty("pq", dim, max(n, 1000))
    faiss.extract_index_ivf(ann.index).cp.niter = COARSE_ITERATIONS
    ann.index.train(np.ascontiguousarray(sample(train_size(ann)), dtype=np.float32))
    return faiss.serialize_index(ann.index).tobytes()


def _trained(trained: bytes):
    import faiss

    return faiss.deserialize_index(np.frombuffer(trained, dtype=np.uint8))


def build_shard(trained: bytes, ids: np.ndarray, vecs: np.ndarray, path: str | Path) -> int:
    """Add ``vecs`` under ``ids`` to a copy of the trained empty index and write it to ``path``.

    Pure: no state but its arguments and the file it writes, so it can run in a worker process.
    Returns the number of vectors written.
    """
    import faiss

    index = _trained(trained)
    index.add_with_ids(np.ascontiguousarray(vecs, dtype=np.float32), np.ascontiguousarray(ids, dtype=np.int64))
    tmp = f"{path}.tmp"
    faiss.write_index(index, tmp)
    os.replace(tmp, path)
    return int(index.ntotal)


def merge_shards(trained: bytes, shard_paths: Iterable[str | Path], index_path: str | Path,
                 ivfdata_path: str | Path) -> int:
    """Merge shard files into ``ivfdata_path`` (on-disk inverted lists) and write the index that points
    at it to ``index_path``. Shards are read memory-mapped: their total may exceed memory. Returns ntotal."""
    import faiss
    from faiss.contrib.ondisk import merge_ondisk

    index = _trained(trained)
    with quiet():
        merge_ondisk(index, [str(p) for p in shard_paths], str(ivfdata_path))
        faiss.write_index(index, str(index_path))
    return int(index.ntotal)


def build_ondisk(dim: int, n: int, sample: Callable[[int], np.ndarray],
                 blocks: Iterable[tuple[np.ndarray, np.ndarray]], folder: str | Path,
                 shard_size: int = 1_000_000, name: str = "index", keep_shards: bool = False,
                 trained: bytes | None = None) -> dict:
    """Train, build shards of about ``shard_size`` vectors from ``blocks`` (each block in memory at once,
    one shard's worth of codes at most) and merge them into ``folder/name.faiss`` + ``name.ivfdata``.

    Returns timings and paths: ``{"train_s", "shards_s", "merge_s", "index", "ivfdata", "ntotal"}``.
    """
    import time

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    trained = trained or train(dim, n, sample)  # a caller may pass one already trained (:func:`train`)
    t1 = time.perf_counter()
    paths = []
    for i, (ids, vecs) in enumerate(_shards(blocks, shard_size)):
        paths.append(folder / f"{name}.shard{i:04d}")
        build_shard(trained, ids, vecs, paths[-1])
    t2 = time.perf_counter()
    index, ivfdata = folder / f"{name}.faiss", folder / f"{name}.ivfdata"
    for stale in (index, ivfdata):  # OnDiskInvertedLists appends to an existing file
        stale.unlink(missing_ok=True)
    ntotal = merge_shards(trained, paths, index, ivfdata)
    t3 = time.perf_counter()
    if not keep_shards:
        for p in paths:
            p.unlink()
    return {"train_s": t1 - t0, "shards_s": t2 - t1, "merge_s": t3 - t2, "shards": len(paths),
            "index": index, "ivfdata": ivfdata, "ntotal": ntotal}


def _shards(blocks: Iterable[tuple[np.ndarray, np.ndarray]], shard_size: int):
    """Group blocks into runs of about ``shard_size`` vectors: yields (ids, vecs) per shard."""
    ids_acc: list[np.ndarray] = []
    vec_acc: list[np.ndarray] = []
    held = 0
    for ids, vecs in blocks:
        ids_acc.append(np.asarray(ids, np.int64))
        vec_acc.append(np.asarray(vecs))
        held += len(ids)
        if held >= shard_size:
            yield np.concatenate(ids_acc), np.concatenate(vec_acc)
            ids_acc, vec_acc, held = [], [], 0
    if held:
        yield np.concatenate(ids_acc), np.concatenate(vec_acc)


def read_ondisk(index_path: str | Path, dim: int, trained_n: int = 0) -> AnnIndex:
    """The merged index, its inverted lists memory-mapped read-only from the ``.ivfdata`` beside it."""
    import faiss

    path = Path(index_path)
    try:
        with quiet():
            index = faiss.read_index(str(path), faiss.IO_FLAG_ONDISK_SAME_DIR | faiss.IO_FLAG_READ_ONLY)
    except Exception as exc:
        if not path.exists():
            raise FileNotFoundError(str(path)) from None
        raise CorruptIndexError(f"cannot read index: {str(exc).splitlines()[0][:200]}") from exc
    if index.d != dim:
        raise CorruptIndexError(f"index has dim {index.d}, expected {dim}")
    ann = AnnIndex(index, KIND, dim, trained_n or int(index.ntotal))
    ann.mapped = True
    ann.ondisk = Lists(Path(faiss.downcast_InvertedLists(faiss.extract_index_ivf(index).invlists).filename))
    return ann


# ---- as a store's index kind: generations, work folders, catching up --------------------------------------
_QUIET = threading.Lock()  # fd 1 belongs to the whole process: one redirection at a time


@contextmanager
def quiet() -> Iterator[None]:
    """Run FAISS calls with the process's stdout (fd 1) pointed at /dev/null: its on-disk lists print
    progress there with ``printf``, which would land in the middle of ``--json`` output."""
    import ctypes
    import sys

    with _QUIET:
        try:
            sys.stdout.flush()
        except (OSError, ValueError):  # a closed stdout: nothing to keep apart
            pass
        try:
            saved = os.dup(1)
        except OSError:  # no fd 1 at all
            yield
            return
        null = os.open(os.devnull, os.O_WRONLY)
        try:
            os.dup2(null, 1)
            yield
        finally:
            ctypes.CDLL(None).fflush(None)  # C's buffered stdout goes to /dev/null, not to the restored fd
            os.dup2(saved, 1)
            os.close(saved)
            os.close(null)


@dataclass
class Lists:
    """Where an on-disk index's lists live: ``file`` (its ``.ivfdata``); ``work``: the private folder that
    holds it until :func:`publish` moves it beside the store's other index files (None once published)."""

    file: Path
    work: Path | None = None
    record: dict | None = None  # its pointer entry once published (name, bytes, sha256): hashed once


def work_folder(folder: Path, name: str) -> Path:
    """A new private folder under ``folder`` to make one generation in (a dot name ending ``.tmp``:
    ``doctor`` deletes one a crash left behind)."""
    folder.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f".{name}.work-{os.getpid()}-", suffix=".tmp", dir=folder))


def _owned(ann: AnnIndex, work: Path) -> AnnIndex:
    """``ann`` whose lists are in ``work``: the folder goes when the index does (unless published first)."""
    ann.ondisk.work = work
    weakref.finalize(ann, shutil.rmtree, str(work), True)
    return ann


def build_generation(dim: int, n: int, sample: Callable[[int], np.ndarray],
                     blocks: Iterable[tuple[np.ndarray, np.ndarray]], work: Path, stem: str,
                     shard_size: int = STORE_SHARD) -> AnnIndex:
    """Train and build the lists of ``blocks`` in ``work`` as ``stem.faiss`` + ``stem.ivfdata``; the index
    read back mapped (its work folder removed with it, unless :func:`publish` moves the files out)."""
    try:
        built = build_ondisk(dim, n, sample, blocks, work, shard_size=shard_size, name=stem)
        return _owned(read_ondisk(built["index"], dim, trained_n=n), work)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise


def trained_of(index) -> bytes:
    """The trained empty index (quantizer and codebooks, no lists) of a filled IVF-PQ, as bytes."""
    import faiss

    empty = faiss.deserialize_index(faiss.serialize_index(index), faiss.IO_FLAG_SKIP_IVF_DATA)
    ivf = faiss.extract_index_ivf(empty)
    lists = faiss.ArrayInvertedLists(ivf.nlist, ivf.code_size)
    ivf.replace_invlists(lists, True)
    lists.this.disown()  # the index owns it now
    empty.ntotal = ivf.ntotal = 0
    return faiss.serialize_index(empty).tobytes()


def caught_up(ann: AnnIndex, added: Iterable[tuple[np.ndarray, np.ndarray]], removed: np.ndarray, work: Path,
              stem: str, shard_size: int = STORE_SHARD) -> AnnIndex:
    """A new on-disk index in ``work`` (``stem.faiss`` + ``stem.ivfdata``): ``ann``'s lists with the
    ``added`` blocks and without the ``removed`` ids. ``ann`` and its files are left as they were."""
    import faiss

    try:
        trained = trained_of(ann.index)
        shards = []
        for i, (ids, vecs) in enumerate(_shards(added, shard_size)):
            shards.append(work / f"{stem}.shard{i:04d}")
            build_shard(trained, ids, vecs, shards[-1])
        index = _trained(trained)
        ivf = faiss.extract_index_ivf(index)
        opened = [faiss.read_index(str(p), faiss.IO_FLAG_MMAP) for p in shards]  # kept alive for the merge
        sources = faiss.InvertedListsPtrVector()
        for lists in [faiss.extract_index_ivf(ann.index).invlists] + [faiss.extract_index_ivf(o).invlists
                                                                    for o in opened]:
            sources.push_back(lists)
        with quiet():
            out = faiss.OnDiskInvertedLists(ivf.nlist, ivf.code_size, str(work / f"{stem}.ivfdata"))
            ntotal = out.merge_from_multiple(sources.data(), sources.size(), False)
            index.ntotal = ivf.ntotal = ntotal
            ivf.replace_invlists(out, True)
            out.this.disown()
            if len(removed):
                index.remove_ids(faiss.IDSelectorBatch(np.ascontiguousarray(removed, dtype=np.int64)))
            faiss.write_index(index, str(work / f"{stem}.faiss"))
        del index, ivf, out, sources, opened
        for p in shards:
            p.unlink()
        new = read_ondisk(work / f"{stem}.faiss", ann.dim, trained_n=ann.trained_n)
        new.tuned = ann.tuned
        return _owned(new, work)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise


def publish(ann: AnnIndex, folder: Path, write_index: Callable[[Path, Callable[[Path], None]], None]) -> tuple[Path, Path]:
    """Move a generation made in a work folder beside the store's index files: the ``.ivfdata`` first
    (fsynced, renamed), then the ``.faiss`` naming it (``write_index(path, write)``: the caller's atomic
    write). Nothing points at them yet: the caller's pointer is the commit. Returns (faiss, ivfdata)."""
    import faiss

    lists = ann.ondisk
    assert lists is not None and lists.work is not None, "only a generation still in its work folder"
    final = folder / lists.file.name
    with open(lists.file, "rb") as f:
        os.fsync(f.fileno())
    os.replace(lists.file, final)
    faiss.downcast_InvertedLists(faiss.extract_index_ivf(ann.index).invlists).filename = str(final)
    index_path = final.with_suffix(".faiss")
    write_index(index_path, ann.write)
    shutil.rmtree(lists.work, ignore_errors=True)
    ann.ondisk = Lists(final)
    return index_path, final
