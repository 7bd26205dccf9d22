"""Where a search runs: FAISS on the CPU, exact search in torch on a GPU, or a FAISS GPU index.

One interface (:meth:`Placed.search`, the same ``(scores, ids)`` as :meth:`AnnIndex.search`), chosen
at run time per index by :func:`choose` and reported by ``stats`` (``search``) and ``doctor``:

* ``faiss-cpu``: the index itself (every kind; the only path on a machine without CUDA).
* ``torch``: exact search as one fp16 matmul and a top-k on the GPU (:class:`TorchExact`), for a
  flat index, whenever torch sees CUDA: the default install has it (no GPU FAISS needed). One query
  reads the whole fp16 matrix once, so it runs near the GPU's memory bandwidth.
* ``faiss-gpu``: the flat or IVF index copied to the GPU (:func:`~mmsearch.ann.faiss_index.to_gpu`)
  when the installed faiss is a GPU build and sees a GPU. GPU indexes **ignore** the IDSelector of a
  filtered search, so a filtered search over-fetches there and filters after (:class:`PostFiltered`),
  falling back to the CPU index with its selector when too few survive. HNSW and PQ stay on the CPU.

``search_device`` (setting, ``MMSEARCH_SEARCH_DEVICE``): ``cpu`` never leaves the CPU and never
imports torch; ``cuda`` puts every flat/IVF index on the GPU (an error where there is none); ``auto``
(default) does so only for an index of at least :data:`GPU_MIN` vectors, where one CPU query costs
tens of ms, and only after a check that needs no torch import (an NVIDIA driver and a CUDA build of
torch) says CUDA could work: a CPU machine's cold query stays as fast as before.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from mmsearch.ann.faiss_index import AnnIndex, SearchParams, gpu_available, to_gpu
from mmsearch.config import SEARCH_DEVICES
from mmsearch.errors import UsageError

GPU_MIN = 100_000  # vectors: below this a CPU search takes a few ms and moving the index costs more
OVERFETCH = 4  # a filtered GPU search asks for this many times k / (share kept) before filtering
GPU_MAX_K = 2048  # FAISS GPU indexes refuse a k or an nprobe above this (validateKSelect, validateNProbe)
QUERY_CHUNK = 256  # queries per torch matmul: nq × N scores must fit the GPU next to the matrix


# ---- what this machine has ----------------------------------------------------------------------------
def faiss_build() -> dict[str, Any]:
    """The active faiss: ``build`` (``faiss-gpu`` when compiled with GPU support, else ``faiss-cpu``),
    ``version``, ``gpus`` it sees, and the installed faiss distributions (two means one overwrote the other)."""
    import faiss

    compiled = "GPU" in faiss.get_compile_options()
    gpus = int(faiss.get_num_gpus()) if compiled and hasattr(faiss, "get_num_gpus") else 0
    return {"build": "faiss-gpu" if compiled else "faiss-cpu", "version": faiss.__version__, "gpus": gpus,
            "distributions": faiss_distributions()}


def faiss_label() -> str:
    """The active faiss build in words: "faiss-cpu 1.15.1", "faiss-gpu 1.15.1 (1 GPU)"."""
    b = faiss_build()
    return f"{b['build']} {b['version']}" + (f" ({b['gpus']} GPU)" if b["build"] == "faiss-gpu" else "")


def faiss_distributions() -> list[str]:
    """Installed distributions that ship the ``faiss`` package (faiss-cpu, faiss-gpu, faiss-gpu-cu12 …)."""
    from importlib import metadata

    found = set()
    for dist in metadata.distributions():
        name = (dist.metadata.get("Name") or "").lower()
        if name.startswith("faiss"):
            found.add(f"{name} {dist.version}")
    return sorted(found)


def cuda_usable() -> bool:
    """Whether torch can run on CUDA here; torch is imported only where a driver and a CUDA build exist."""
    from mmsearch.encoders.runtime import _nvidia_driver

    if not _nvidia_driver():
        return False
    import torch

    return bool(torch.cuda.is_available())


def check_device(value: str | None) -> str:
    value = value or "auto"
    if value not in SEARCH_DEVICES:
        raise UsageError(f"search_device {value!r}: expected one of {', '.join(SEARCH_DEVICES)}")
    return value


def choose(kind: str, n: int, wanted: str = "auto") -> str:
    """The path a search of an index of ``kind`` with ``n`` vectors takes (see the module's docstring)."""
    wanted = check_device(wanted)
    if wanted == "cpu" or kind in ("hnsw", "pq", "ondisk") or (wanted == "auto" and n < GPU_MIN):
        return "faiss-cpu"
    if gpu_available():
        return "faiss-gpu"
    if kind == "flat" and cuda_usable():
        return "torch"
    if wanted == "cuda" and not cuda_usable():
        raise UsageError("search_device cuda: no GPU is visible to torch or faiss here",
                         hint="set search_device to auto or cpu (MMSEARCH_SEARCH_DEVICE or the config file)")
    return "faiss-cpu"  # (an IVF index with CUDA but without a GPU build of faiss stays on the CPU)


# ---- the searchers --------------------------------------------------------------------------------------
class TorchExact:
    """Exact inner-product search of one index's vectors as a matmul and a top-k in torch.

    ``device``: ``cuda`` (fp16 matrix) or ``cpu`` (fp32; the same code, which is how it is tested
    on machines without a GPU). ``allowed`` ids are honoured with a mask.
    """

    def __init__(self, ids: np.ndarray, vecs: np.ndarray, device: str = "cuda") -> None:
        import torch

        self.device = device
        self.dtype = torch.float16 if device.startswith("cuda") else torch.float32
        self.ids = np.ascontiguousarray(ids, np.int64)
        self.x = torch.from_numpy(np.ascontiguousarray(vecs, np.float32)).to(device, self.dtype)

    @classmethod
    def of(cls, ann: AnnIndex, device: str = "cuda") -> "TorchExact":
        """From a flat index's own vectors (no read of the store)."""
        ids, vecs = flat_contents(ann)
        return cls(ids, vecs, device)

    def search(self, queries: np.ndarray, k: int, allowed: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        import torch

        nq = len(queries)
        n = len(self.ids)
        mask = None if allowed is None else np.isin(self.ids, np.asarray(allowed, np.int64))
        keep = n if mask is None else int(mask.sum())
        k = min(k, keep)
        if k <= 0:
            return np.zeros((nq, 0), np.float32), np.zeros((nq, 0), np.int64)
        out_s, out_r = [], []
        with torch.inference_mode():
            drop = None if mask is None else torch.from_numpy(~mask).to(self.device)
            for start in range(0, nq, QUERY_CHUNK):
                q = torch.from_numpy(np.ascontiguousarray(queries[start : start + QUERY_CHUNK], np.float32)).to(self.device)
                sims = q.to(self.dtype) @ self.x.T
                if drop is not None:
                    sims[:, drop] = float("-inf")
                _, rows = torch.topk(sims, k, dim=1)
                # the best k scored again in fp32: fp16 rounds a cosine near 1 to ~5e-4, which calibrated
                # scores, --min-score and duplicate collapsing would see
                exact = (self.x[rows].float() * q[:, None, :]).sum(-1)
                order = torch.argsort(exact, dim=1, descending=True)
                out_s.append(torch.gather(exact, 1, order).cpu().numpy())
                out_r.append(torch.gather(rows, 1, order).cpu().numpy())
        return np.concatenate(out_s).astype(np.float32), self.ids[np.concatenate(out_r)]


class PostFiltered:
    """An index that ignores IDSelectors (FAISS GPU indexes), filtered correctly: over-fetch, keep the
    allowed ids, and fall back to ``exact_fallback`` (the CPU index with its selector) when too few survive.

    ``honours_selector``: False for GPU indexes; a CPU index wrapped with it exercises the same path.
    """

    honours_selector = False

    def __init__(self, index: AnnIndex, fallback: AnnIndex) -> None:
        self.index, self.fallback = index, fallback

    def search(self, queries: np.ndarray, k: int, params: SearchParams | None = None,
               allowed: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        tuned = getattr(self.index, "tuned", None)
        nprobe = (params.nprobe if params is not None else None) or (tuned.value if tuned is not None else 0)
        if k > GPU_MAX_K or nprobe > GPU_MAX_K:  # beyond what a GPU index takes
            return self.fallback.search(queries, k, params, allowed)
        if allowed is None:
            return self.index.search(queries, k, params)
        total = max(self.index.ntotal, 1)
        share = max(min(len(allowed), total) / total, 1e-9)
        pool = int(min(total, max(k, np.ceil(k * OVERFETCH / share))))
        if pool > GPU_MAX_K:  # a narrow filter: the CPU index with its selector
            return self.fallback.search(queries, k, params, allowed)
        scores, ids = self.index.search(queries, pool, params)  # no selector: it would be ignored anyway
        keep = np.isin(ids, np.asarray(allowed, np.int64)) & (ids >= 0)
        if keep.sum(axis=1).min(initial=k) < min(k, len(allowed)):
            return self.fallback.search(queries, k, params, allowed)
        out_s = np.zeros((len(ids), k), np.float32)
        out_i = np.full((len(ids), k), -1, np.int64)
        for r in range(len(ids)):
            s, i = scores[r][keep[r]][:k], ids[r][keep[r]][:k]
            out_s[r, : len(s)], out_i[r, : len(i)] = s, i
        return out_s, out_i


@dataclass
class Placed:
    """An index's searcher where it was placed: ``path`` (faiss-cpu, torch, faiss-gpu) and ``device``."""

    path: str
    device: str
    searcher: Any

    def search(self, queries: np.ndarray, k: int, params: SearchParams | None = None,
               allowed: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        if self.path == "torch":
            return self.searcher.search(queries, k, allowed)
        return self.searcher.search(queries, k, params, allowed)

    def describe(self) -> str:
        return self.path if self.device == "cpu" else f"{self.path} on {self.device}"


def place(ann: AnnIndex, wanted: str = "auto") -> Placed:
    """Put an index where :func:`choose` says (a copy on the GPU; the CPU index kept for fallbacks)."""
    path = choose(ann.kind, ann.ntotal, wanted)
    if path == "torch":
        return Placed("torch", "cuda:0", TorchExact.of(ann, "cuda"))
    if path == "faiss-gpu":  # pragma: no cover - needs a GPU build of faiss
        return Placed("faiss-gpu", "cuda:0", PostFiltered(to_gpu(ann), ann))
    return Placed("faiss-cpu", "cpu", ann)


def flat_contents(ann: AnnIndex) -> tuple[np.ndarray, np.ndarray]:
    """(ids, vectors) of a flat index (``IndexIDMap2`` over ``IndexFlatIP``), read from FAISS's arrays."""
    import faiss

    if ann.kind != "flat":
        raise ValueError(f"not a flat index: {ann.kind}")
    inner = faiss.downcast_index(ann.index.index)
    vecs = faiss.rev_swig_ptr(inner.get_xb(), ann.ntotal * ann.dim).reshape(ann.ntotal, ann.dim).copy()
    return faiss.vector_to_array(ann.index.id_map).astype(np.int64), vecs
