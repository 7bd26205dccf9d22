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
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Iterable

import numpy as np

from mmsearch.ann.faiss_index import AnnIndex, CorruptIndexError, train_size

KIND = "ondisk"
#: k-means iterations of the coarse quantizer (FAISS's default is 25): the lists of a 10M-vector index take
#: 4000+ centroids over ~1M training vectors, and past 10 iterations its assignment barely moves.
COARSE_ITERATIONS = 10


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
    """The merged index, its inverted lists memory-mapped from the ``.ivfdata`` beside it (read-only use)."""
    import faiss

    path = Path(index_path)
    try:
        index = faiss.read_index(str(path), faiss.IO_FLAG_ONDISK_SAME_DIR)
    except Exception as exc:
        if not path.exists():
            raise FileNotFoundError(str(path)) from None
        raise CorruptIndexError(f"cannot read index: {str(exc).splitlines()[0][:200]}") from exc
    if index.d != dim:
        raise CorruptIndexError(f"index has dim {index.d}, expected {dim}")
    ann = AnnIndex(index, KIND, dim, trained_n or int(index.ntotal))
    ann.mapped = True
    return ann
