"""FAISS behind one narrow interface: build (trained on a sample, filled in blocks), add, remove, search,
write to a file and read it back memory-mapped.

Kinds: ``flat`` (exact, ``IndexIDMap2`` over ``IndexFlatIP``), ``ivf`` (``IVF{nlist},Flat``),
``hnsw`` (``IDMap2`` over ``HNSW32``), ``pq`` (``IVF{nlist},PQ{m}``), ``ondisk`` (the
same IVF-PQ with its lists in a memory-mapped file, built and read by :mod:`mmsearch.ann.ondisk`; searched
here like ``pq``; :class:`~mmsearch.ann.space_index.SpaceIndex` keeps its two files per generation). Vectors are unit length, the
metric is inner product (= cosine). Search parameters are passed per call, never set on the shared
index, so concurrent queries cannot race on ``nprobe``/``efSearch``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable

import numpy as np

from mmsearch.config import INDEX_KINDS as KINDS
from mmsearch.errors import UsageError
from mmsearch.store.files import file_sha256

if TYPE_CHECKING:
    from mmsearch.ann.tuning import Tuned

AUTO_FLAT_MAX = 50_000  # below this, exact search is fast enough on one core (~10 ms/query at 512-d)
#: ``auto`` on a store whose full vectors (float32, as IVF-Flat holds them) would take more than this share
#: of the machine's memory builds IVF-PQ (codes in memory, candidates re-ranked from the database) instead,
#: and once even those codes (and their int64 ids) would not fit, the on-disk IVF-PQ (codes memory-mapped).
MEMORY_SHARE = 0.25
ID_BYTES = 8  # an int64 id beside each code in an inverted list


class CorruptIndexError(Exception):
    """An index file is unreadable, truncated or does not match its checksum."""


@dataclass(frozen=True)
class SearchParams:
    nprobe: int | None = None
    ef_search: int | None = None


MAX_EF = 16_384  # the widest filtered HNSW search (a narrower filter gets an exact scan of its set instead)
PQ_MIN = 1000  # PQ codebooks need training data: below this many vectors a pq request gets exact search
RETRAIN_GROWTH = 4  # an IVF/PQ index is retrained once it holds this many times what it was trained on


def memory_budget() -> int:
    """Bytes an index's full vectors may take by default: :data:`MEMORY_SHARE` of physical memory."""
    import os

    try:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") * MEMORY_SHARE)
    except (ValueError, OSError, AttributeError):  # not on this platform
        return 4 << 30


def choose_kind(kind: str, n: int, dim: int = 0, budget: int | None = None) -> str:
    """The index kind to build for ``n`` vectors of ``dim`` when ``kind`` was asked for.

    ``auto``: exact (flat) up to :data:`AUTO_FLAT_MAX`; IVF-Flat above, while its float32 vectors fit
    ``budget`` bytes (default :func:`memory_budget`); IVF-PQ with exact re-ranking beyond that, while its
    codes and ids fit (:func:`pq_bytes`); the on-disk IVF-PQ (lists memory-mapped) beyond that.
    """
    if kind not in KINDS:
        raise UsageError(f"--index {kind!r}: expected one of {', '.join(KINDS)}")
    if kind in ("pq", "ondisk") and n < PQ_MIN:
        return "flat"
    if kind != "auto":
        return kind
    if n <= AUTO_FLAT_MAX:
        return "flat"
    budget = memory_budget() if budget is None else budget
    if n * dim * 4 <= budget:
        return "ivf"
    return "pq" if pq_bytes(n, dim) <= budget else "ondisk"


def pq_bytes(n: int, dim: int) -> int:
    """Bytes the lists of an in-memory IVF-PQ of ``n`` vectors hold: a code and an id per vector."""
    return n * (_pq_m(dim) + ID_BYTES)  # (8-bit codes: one byte per sub-quantizer)


#: ``auto`` moves between ``pq`` and ``ondisk`` only once the PQ codes are this share past the budget
#: (either way): a store that hovers at the line is not rebuilt (and retrained) on every write.
KIND_SLACK = 0.1


def needs_rebuild(ann: "AnnIndex", wanted: str, n: int, budget: int | None = None) -> str | None:
    """Why an index of ``n`` vectors should be rebuilt for the requested kind, or None."""
    kind = choose_kind(wanted, n, ann.dim, budget)
    if wanted == "auto" and {ann.kind, kind} == {"pq", "ondisk"}:
        share = pq_bytes(n, ann.dim) / max(memory_budget() if budget is None else budget, 1)
        if abs(share - 1) <= KIND_SLACK:
            kind = ann.kind  # near the line: keep what there is
    if n > 0 and ann.kind != kind:
        return f"{n} vectors: switching from {ann.kind} to {kind}"
    if ann.kind in ("ivf", "pq", "ondisk") and n >= PQ_MIN and n > RETRAIN_GROWTH * max(ann.trained_n, 1):
        return f"{n} vectors, trained on {ann.trained_n}: retraining"
    return None


def _ivf_factory(kind: str, dim: int, n: int) -> str:
    nlist = _nlist_for(n)
    if kind == "ivf":
        return f"IVF{nlist},Flat"
    m = _pq_m(dim)
    nbits = 8 if n >= 256 * 39 else 4  # k-means wants ≥ 39 points per centroid: 8-bit codes from 9,984 vectors
    return f"IVF{nlist},PQ{m}x{nbits}"


def _pq_m(dim: int) -> int:
    """Sub-quantizers of the PQ codes: the most of 64, 32, … that divide ``dim`` in pieces of ≥ 2."""
    return next(m for m in (64, 32, 16, 8, 4, 2, 1) if (dim % m == 0 and m <= max(dim // 2, 1)))


def train_size(ann: "AnnIndex") -> int:
    """How many vectors to train an IVF/PQ index on: enough per list and per PQ centroid, not the whole set."""
    import faiss

    nlist = faiss.extract_index_ivf(ann.index).nlist
    return max(64 * nlist, 256 * 64, 20_000)


def _nlist_for(n: int) -> int:
    # FAISS wants ≥ ~39 training points per list; 4·sqrt(n) lists is the usual starting point.
    return max(1, min(int(4 * math.sqrt(max(n, 1))), n // 39 if n >= 39 else 1, 65536))


class AnnIndex:
    """One FAISS index of unit vectors keyed by int64 ids."""

    def __init__(self, index: Any, kind: str, dim: int, trained_n: int = 0, tuned: "Tuned | None" = None) -> None:
        self.index = index
        self.kind = kind
        self.dim = dim
        self.trained_n = trained_n  # vectors an IVF/PQ index was made for (its lists fit that size)
        self.mapped = False  # read-only memory map of a file: search only (reload writable to change)
        self.ondisk: Any = None  # an on-disk index's lists file (:class:`mmsearch.ann.ondisk.Lists`)
        self.tuned = tuned  # the search breadth tuned to a recall target at build (mmsearch.ann.tuning)
        self.changes = 0  # adds and removals so far: a copy placed elsewhere is stale once this moves

    # ---- construction ---------------------------------------------------------------------------
    @classmethod
    def empty(cls, kind: str, dim: int, n: int, budget: int | None = None) -> "AnnIndex":
        """An empty index of the kind ``kind`` resolves to for ``n`` vectors (IVF/PQ still to be trained)."""
        import faiss

        kind = choose_kind(kind, n, dim, budget)
        if kind == "ondisk":  # its lists are files: made by SpaceIndex through mmsearch.ann.ondisk
            raise ValueError("an on-disk index is built by mmsearch.ann.ondisk.build_generation, not in memory")
        if kind == "flat":
            index = faiss.IndexIDMap2(faiss.IndexFlatIP(dim))
        elif kind == "hnsw":
            hnsw = faiss.IndexHNSWFlat(dim, 32, faiss.METRIC_INNER_PRODUCT)
            hnsw.hnsw.efConstruction = 80
            index = faiss.IndexIDMap2(hnsw)
        else:  # ivf, pq
            index = faiss.index_factory(dim, _ivf_factory(kind, dim, n), faiss.METRIC_INNER_PRODUCT)
            if kind == "pq":  # the factory turns on polysemous training (8-bit codes), which only a Hamming-
                # thresholded search uses (never here): 10,000 vectors train in 5 s instead of 47 s, same results
                faiss.downcast_index(index).do_polysemous_training = False
        return cls(index, kind, dim, trained_n=n if kind in ("ivf", "pq") else 0)

    @classmethod
    def build(cls, kind: str, dim: int, ids: np.ndarray, vecs: np.ndarray) -> "AnnIndex":
        """An index of these vectors, held in memory at once (small sets; see :meth:`build_from`)."""
        return cls.build_from(kind, dim, len(ids), lambda n: vecs[:n], [(ids, vecs)])

    @classmethod
    def build_from(cls, kind: str, dim: int, n: int, sample: Callable[[int], np.ndarray],
                   blocks: Iterable[tuple[np.ndarray, np.ndarray]], budget: int | None = None) -> "AnnIndex":
        """An index of ``n`` vectors that arrive in ``blocks`` of (ids, vectors): memory stays one block.

        ``sample(m)`` gives up to ``m`` representative vectors; IVF/PQ are trained on them first.
        """
        ann = cls.empty(kind, dim, n, budget)
        if ann.kind == "ivf":
            train_on_gpu(ann.index)
        if not ann.index.is_trained and n:
            ann.index.train(_f32(sample(train_size(ann))))
        for ids, vecs in blocks:
            ann.add(ids, vecs)
        return ann

    @property
    def ntotal(self) -> int:
        return int(self.index.ntotal)

    def add(self, ids: np.ndarray, vecs: np.ndarray) -> None:
        if len(ids) == 0:
            return
        if not self.index.is_trained:  # an IVF/PQ made empty and never trained: fit to what it first gets
            self.index.train(_f32(vecs))
            self.trained_n = len(ids)
        self.index.add_with_ids(_f32(vecs), np.ascontiguousarray(ids, dtype=np.int64))
        self.changes += 1

    def remove(self, ids: np.ndarray) -> bool:
        """Remove ids; False when this kind cannot remove (HNSW): the caller rebuilds instead."""
        import faiss

        if len(ids) == 0:
            return True
        if self.kind == "hnsw":
            return False
        self.index.remove_ids(faiss.IDSelectorBatch(np.ascontiguousarray(ids, dtype=np.int64)))
        self.changes += 1
        return True

    def search(self, queries: np.ndarray, k: int, params: SearchParams | None = None,
               allowed: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(scores, ids), each (nq, ≤k); FAISS's -1 padding is cut off per row by the caller via ids < 0.

        ``allowed``: only these ids may come back (a pre-filter: an ``IDSelectorBatch`` passed in the
        per-call search parameters). IVF visits and HNSW's breadth grow by how much the filter keeps
        out (``nprobe / fraction``, ``efSearch / fraction``, within the index), so about as many allowed
        vectors are seen as an unfiltered search sees; the caller checks that enough came back.
        """
        import faiss

        if self.ntotal == 0 or k <= 0 or (allowed is not None and len(allowed) == 0):
            nq = len(queries)
            return np.zeros((nq, 0), np.float32), np.zeros((nq, 0), np.int64)
        k = min(k, self.ntotal)
        p = params or SearchParams()
        sel = None if allowed is None else faiss.IDSelectorBatch(np.ascontiguousarray(allowed, dtype=np.int64))
        widen = 1.0 if allowed is None else self.ntotal / max(min(len(allowed), self.ntotal), 1)
        if self.kind in ("ivf", "pq", "ondisk"):
            nlist = _nlist(self.index)
            nprobe = p.nprobe or self._tuned("nprobe") or min(nlist, max(8, nlist // 8))
            sp = faiss.SearchParametersIVF(nprobe=int(min(nlist, math.ceil(nprobe * widen))))
        elif self.kind == "hnsw":
            ef = max(p.ef_search or self._tuned("ef_search") or 64, k)
            sp = faiss.SearchParametersHNSW(efSearch=int(max(ef, min(math.ceil(ef * widen), self.ntotal, MAX_EF))))
        else:
            sp = faiss.SearchParameters() if sel is not None else None
        if sel is not None:
            sp.sel = sel  # kept alive by ``sel`` for the call
        # A handful of queries is faster on one thread: OpenMP fan-out costs more than it saves, and on a
        # busy machine its spinning workers turn a 0.03 ms flat search into 8 ms (measured on 2 cores).
        # The setting is per calling thread, so concurrent callers do not race on it.
        threads = faiss.omp_get_max_threads()
        small = len(queries) < 16
        if small:
            faiss.omp_set_num_threads(1)
        try:
            scores, ids = self.index.search(_f32(queries), k, params=sp)
        finally:
            if small:
                faiss.omp_set_num_threads(threads)
        return scores, ids

    def with_index(self, index: Any) -> "AnnIndex":
        """This index's description (kind, dim, trained size, tuning) over another FAISS index (a GPU copy)."""
        other = AnnIndex(index, self.kind, self.dim, self.trained_n, self.tuned)
        return other

    def _tuned(self, param: str) -> int | None:
        return self.tuned.value if self.tuned is not None and self.tuned.param == param else None

    def breadth(self) -> int:
        """How many IVF lists there are, or how many vectors an HNSW graph holds: the widest search."""
        import faiss

        return int(faiss.extract_index_ivf(self.index).nlist) if self.kind in ("ivf", "pq", "ondisk") else self.ntotal

    # ---- files --------------------------------------------------------------------------------
    def write(self, path: Path) -> None:
        """Write the index to ``path`` (the caller makes it atomic: a temp name, then a rename)."""
        import errno

        import faiss

        try:
            faiss.write_index(self.index, str(path))
        except RuntimeError as exc:  # FAISS reports a failed fwrite as text only
            reason = str(exc).splitlines()[0][:200]
            raise OSError(errno.ENOSPC if "No space left" in reason else errno.EIO, reason) from exc

    @classmethod
    def read(cls, path: Path, kind: str, dim: int, *, mmap: bool, trained_n: int = 0) -> "AnnIndex":
        """Read an index file. ``mmap``: map it read-only instead of reading it (a cold query then touches
        only the pages it searches; the index cannot be changed); else a private, writable copy."""
        import faiss

        flags = (faiss.IO_FLAG_MMAP_IFC | faiss.IO_FLAG_READ_ONLY) if mmap else 0
        if mmap and kind == "flat":
            _prefetch(path)  # an exact search touches every page: let the kernel stream them in meanwhile
        try:
            index = faiss.read_index(str(path), flags)
        except Exception as exc:
            if isinstance(exc, FileNotFoundError) or not path.exists():
                raise FileNotFoundError(str(path)) from None
            raise CorruptIndexError(f"cannot read index: {str(exc).splitlines()[0][:200]}") from exc
        ann = cls._checked(index, kind, dim, trained_n)
        ann.mapped = mmap
        return ann

    @classmethod
    def _checked(cls, index: Any, kind: str, dim: int, trained_n: int) -> "AnnIndex":
        if index.d != dim:
            raise CorruptIndexError(f"index has dim {index.d}, expected {dim}")
        return cls(index, kind, dim, trained_n)

def _prefetch(path: Path) -> None:
    """Ask the kernel to read a file ahead, sequentially and in the background (no copy into this process)."""
    import os

    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_WILLNEED)
    except (OSError, AttributeError):  # not on this platform
        pass
    finally:
        os.close(fd)


def gpu_available() -> bool:
    """Whether the installed faiss is a GPU build and sees a GPU (faiss-cpu: never; no import of torch)."""
    try:
        import faiss

        return "GPU" in faiss.get_compile_options() and faiss.get_num_gpus() > 0
    except Exception:  # pragma: no cover - a broken faiss install: the CPU path reports it
        return False


def to_gpu(ann: AnnIndex) -> AnnIndex:
    """A copy of a flat/IVF index on GPU 0 when GPU FAISS is installed (every attribute kept, see
    :meth:`AnnIndex.with_index`); otherwise, and for HNSW/PQ, the index unchanged."""
    if not gpu_available() or ann.kind in ("hnsw", "pq", "ondisk"):
        return ann
    import faiss  # pragma: no cover - needs faiss-gpu

    res = faiss.StandardGpuResources()  # pragma: no cover
    return ann.with_index(faiss.index_cpu_to_gpu(res, 0, ann.index))  # pragma: no cover


def train_on_gpu(index: Any) -> None:
    """Let an IVF index's k-means run on the GPUs when GPU FAISS sees any (the lists stay on the CPU)."""
    if not gpu_available():
        return
    import faiss  # pragma: no cover - needs faiss-gpu

    ivf = faiss.extract_index_ivf(index)  # pragma: no cover
    ivf.clustering_index = faiss.index_cpu_to_all_gpus(faiss.IndexFlatL2(ivf.d))  # pragma: no cover


def _nlist(index: Any) -> int:
    """The list count of an IVF index, CPU or GPU (``extract_index_ivf`` knows only CPU indexes)."""
    import faiss

    try:
        return int(faiss.extract_index_ivf(index).nlist)
    except (RuntimeError, TypeError, AttributeError):  # pragma: no cover - a GpuIndexIVF
        return int(getattr(index, "nlist", 0) or index.getNumLists())


def _f32(x: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(x, dtype=np.float32)


def check_file(path: Path, size: Any, sha256: str | None) -> None:
    """The cheap check of an index file (its size against the record), and its checksum when given.
    Raises FileNotFoundError (with the path) or CorruptIndexError naming the file."""
    got = path.stat().st_size  # FileNotFoundError: SpaceIndex.read_file looks the pointer up again
    if got != size:
        raise CorruptIndexError(f"index file damaged: {path.name} has {got} bytes, its record says {size}")
    if sha256 is not None and file_sha256(path) != sha256:
        raise CorruptIndexError(f"index file damaged: {path.name} checksum mismatch (modified)")


def index_ids(ann: AnnIndex) -> np.ndarray:
    """Every id an index holds (for checking it against the database)."""
    import faiss

    index = ann.index
    if hasattr(index, "id_map"):  # IndexIDMap2 over flat or HNSW
        return faiss.vector_to_array(index.id_map).astype(np.int64)
    ivf = faiss.extract_index_ivf(index)
    lists = ivf.invlists
    parts = [faiss.rev_swig_ptr(lists.get_ids(i), lists.list_size(i)).copy() for i in range(ivf.nlist)
             if lists.list_size(i)]
    return np.concatenate(parts).astype(np.int64) if parts else np.zeros(0, np.int64)
