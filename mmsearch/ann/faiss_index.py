"""FAISS behind one narrow interface: build, add, remove, search, atomic save/load.

Kinds: ``flat`` (exact, ``IndexIDMap2`` over ``IndexFlatIP``), ``ivf`` (``IVF{nlist},Flat``),
``hnsw`` (``IDMap2`` over ``HNSW32``), ``pq`` (``IVF{nlist},PQ{m}``). Vectors are unit length, the
metric is inner product (= cosine). Search parameters are passed per call, never set on the shared
index, so concurrent queries cannot race on ``nprobe``/``efSearch``.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mmsearch.errors import UsageError

KINDS = ("auto", "flat", "ivf", "hnsw", "pq")
AUTO_FLAT_MAX = 50_000  # below this, exact search is fast enough on one core (~10 ms/query at 512-d)


class CorruptIndexError(Exception):
    """An index file is unreadable, truncated or does not match its checksum."""


@dataclass
class SearchParams:
    nprobe: int | None = None
    ef_search: int | None = None


PQ_MIN = 1000  # PQ codebooks need training data: below this many vectors a pq request gets exact search
RETRAIN_GROWTH = 4  # an IVF/PQ index is retrained once it holds this many times what it was trained on


def choose_kind(kind: str, n: int) -> str:
    """The index kind to build for ``n`` vectors when ``kind`` was asked for."""
    if kind not in KINDS:
        raise UsageError(f"--index {kind!r}: expected one of {', '.join(KINDS)}")
    if kind == "pq" and n < PQ_MIN:
        return "flat"
    if kind != "auto":
        return kind
    return "flat" if n <= AUTO_FLAT_MAX else "ivf"


def needs_rebuild(ann: "AnnIndex", wanted: str, n: int) -> str | None:
    """Why an index of ``n`` vectors should be rebuilt for the requested kind, or None."""
    kind = choose_kind(wanted, n)
    if n > 0 and ann.kind != kind:
        return f"{n} vectors: switching from {ann.kind} to {kind}"
    if ann.kind in ("ivf", "pq") and n >= PQ_MIN and n > RETRAIN_GROWTH * max(ann.trained_n, 1):
        return f"{n} vectors, trained on {ann.trained_n}: retraining"
    return None


def _nlist_for(n: int) -> int:
    # FAISS wants ≥ ~39 training points per list; 4·sqrt(n) lists is the usual starting point.
    return max(1, min(int(4 * math.sqrt(max(n, 1))), n // 39 if n >= 39 else 1, 65536))


class AnnIndex:
    """One FAISS index of unit vectors keyed by int64 ids."""

    def __init__(self, index: Any, kind: str, dim: int, trained_n: int = 0) -> None:
        self.index = index
        self.kind = kind
        self.dim = dim
        self.trained_n = trained_n  # vectors an IVF/PQ index was trained on (its lists fit that size)

    # ---- construction ---------------------------------------------------------------------------
    @classmethod
    def build(cls, kind: str, dim: int, ids: np.ndarray, vecs: np.ndarray) -> "AnnIndex":
        import faiss

        kind = choose_kind(kind, len(ids))
        if kind == "flat":
            index = faiss.IndexIDMap2(faiss.IndexFlatIP(dim))
        elif kind == "hnsw":
            hnsw = faiss.IndexHNSWFlat(dim, 32, faiss.METRIC_INNER_PRODUCT)
            hnsw.hnsw.efConstruction = 80
            index = faiss.IndexIDMap2(hnsw)
        elif kind in ("ivf", "pq"):
            nlist = _nlist_for(len(ids))
            if kind == "pq":
                m = next(m for m in (64, 32, 16, 8, 4, 2, 1) if (dim % m == 0 and m <= max(dim // 2, 1)))
                # k-means wants ≥ 39 points per centroid: 8-bit codes (256 centroids) from 9,984 vectors
                nbits = 8 if len(ids) >= 256 * 39 else 4
                factory = f"IVF{nlist},PQ{m}x{nbits}"
            else:
                factory = f"IVF{nlist},Flat"
            index = faiss.index_factory(dim, factory, faiss.METRIC_INNER_PRODUCT)
        else:  # pragma: no cover - choose_kind validated
            raise UsageError(f"unknown index kind {kind}")
        ann = cls(index, kind, dim)
        ann.add(ids, vecs)  # an IVF built empty is trained on its first add
        return ann

    @property
    def ntotal(self) -> int:
        return int(self.index.ntotal)

    def add(self, ids: np.ndarray, vecs: np.ndarray) -> None:
        if len(ids) == 0:
            return
        if not self.index.is_trained:  # IVF/PQ: trained on the first vectors it gets
            self.index.train(_f32(vecs))
            self.trained_n = len(ids)
        self.index.add_with_ids(_f32(vecs), np.ascontiguousarray(ids, dtype=np.int64))

    def remove(self, ids: np.ndarray) -> bool:
        """Remove ids; False when this kind cannot remove (HNSW): the caller rebuilds instead."""
        import faiss

        if len(ids) == 0:
            return True
        if self.kind == "hnsw":
            return False
        self.index.remove_ids(faiss.IDSelectorBatch(np.ascontiguousarray(ids, dtype=np.int64)))
        return True

    def search(self, queries: np.ndarray, k: int, params: SearchParams | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(scores, ids), each (nq, ≤k); FAISS's -1 padding is cut off per row by the caller via ids < 0."""
        import faiss

        if self.ntotal == 0 or k <= 0:
            nq = len(queries)
            return np.zeros((nq, 0), np.float32), np.zeros((nq, 0), np.int64)
        k = min(k, self.ntotal)
        p = params or SearchParams()
        sp = None
        if self.kind in ("ivf", "pq"):
            nlist = faiss.extract_index_ivf(self.index).nlist
            sp = faiss.SearchParametersIVF(nprobe=int(p.nprobe or min(nlist, max(8, nlist // 8))))
        elif self.kind == "hnsw":
            sp = faiss.SearchParametersHNSW(efSearch=int(max(p.ef_search or 64, k)))
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

    # ---- persistence ----------------------------------------------------------------------------
    def to_bytes(self) -> bytes:
        import faiss

        return faiss.serialize_index(self.index).tobytes()

    @classmethod
    def from_bytes(cls, data: bytes, kind: str, dim: int) -> "AnnIndex":
        import faiss

        try:
            index = faiss.deserialize_index(np.frombuffer(data, dtype=np.uint8))
        except Exception as exc:  # faiss raises RuntimeError on truncated/garbage data
            raise CorruptIndexError(f"cannot read index: {str(exc).splitlines()[0][:200]}") from exc
        if index.d != dim:
            raise CorruptIndexError(f"index has dim {index.d}, expected {dim}")
        return cls(index, kind, dim)

    def save(self, path: Path, meta: dict[str, Any]) -> None:
        """Write ``path`` and its ``.json`` sidecar atomically (sidecar last, with the checksum)."""
        from mmsearch.store.store import atomic_write_bytes

        data = self.to_bytes()
        atomic_write_bytes(path, data)
        sidecar = dict(meta, kind=self.kind, dim=self.dim, ntotal=self.ntotal, trained_n=self.trained_n,
                       sha256=hashlib.sha256(data).hexdigest(), bytes=len(data))
        atomic_write_bytes(path.with_suffix(".json"), (json.dumps(sidecar, indent=1) + "\n").encode())

    @classmethod
    def load(cls, path: Path, *, attempts: int = 4) -> tuple["AnnIndex", dict[str, Any]]:
        """Load and verify against the sidecar's checksum.

        A writer replaces the file and then its sidecar, so a reader in between sees a mismatch
        that clears when read again: only a mismatch that persists is damage.
        """
        import time

        sidecar = path.with_suffix(".json")
        for attempt in range(attempts):
            try:
                meta = json.loads(sidecar.read_bytes())
                data = path.read_bytes()
            except FileNotFoundError:
                raise
            except (OSError, ValueError) as exc:
                raise CorruptIndexError(f"cannot read {sidecar.name}: {exc}") from exc
            if len(data) == meta.get("bytes") and hashlib.sha256(data).hexdigest() == meta.get("sha256"):
                break
            time.sleep(0.05 * (attempt + 1))
        else:
            raise CorruptIndexError("checksum mismatch (truncated or modified)")
        ann = cls.from_bytes(data, meta["kind"], int(meta["dim"]))
        ann.trained_n = int(meta.get("trained_n", 0))
        if ann.ntotal != meta.get("ntotal"):
            raise CorruptIndexError("vector count differs from its record")
        return ann, meta


def gpu_available() -> bool:
    try:
        import faiss

        return hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0
    except Exception:  # pragma: no cover
        return False


def to_gpu(ann: AnnIndex) -> AnnIndex:
    """Move a flat/IVF index to GPU 0 when GPU FAISS is installed; otherwise return it unchanged."""
    if not gpu_available() or ann.kind == "hnsw":
        return ann
    import faiss  # pragma: no cover - needs faiss-gpu

    res = faiss.StandardGpuResources()  # pragma: no cover
    return AnnIndex(faiss.index_cpu_to_gpu(res, 0, ann.index), ann.kind, ann.dim)  # pragma: no cover


def _f32(x: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(x, dtype=np.float32)
