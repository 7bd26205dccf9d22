"""Query latency and recall per index kind, through `Engine.search(vector=…)` (the API path users hit).

Data: clustered unit vectors (centres + noise) so IVF/HNSW recall means something (uniform random
vectors make ANN recall meaningless; see shared/ANCHORS.md). Recall@10 is against exact search.
Also times a text query end to end (tokenize + encode + search) with the given model.

    python benchmarks/bench_query.py [--n 100000] [--dim 512] [--queries 200]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import save  # noqa: E402


def clustered(n: int, dim: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(max(n // 50, 16), dim)).astype(np.float32)
    x = centres[rng.integers(0, len(centres), n)] + 0.35 * rng.normal(size=(n, dim)).astype(np.float32)
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def measure(base: np.ndarray, queries: np.ndarray, kinds: list[str], *, params: dict | None = None) -> dict:
    """Store ``base`` in a scratch store, then time Engine.search per index kind; recall@10 vs exact."""
    from mmsearch import Engine
    from mmsearch.encoders.base import SpaceInfo
    from mmsearch.store.store import Store, Upsert

    n, dim = base.shape
    tmp = Path(tempfile.mkdtemp(prefix="mmsearch-qbench-"))
    out: dict = {"n": n, "dim": dim, "queries": len(queries), "per_kind": {}}
    try:
        store = Store(tmp / "store", create=True)
        sp = store.ensure_space(SpaceInfo(spec="bench:vectors", family="bench", weights="given", dim=dim,
                                          modalities=("image",)))
        t0 = time.perf_counter()
        for s in range(0, n, 5000):
            store.apply([Upsert(f"/bench/{i}.jpg", "file", 1, 1, f"{i:064x}", "image", vector=base[i])
                         for i in range(s, min(s + 5000, n))], sp.id)
        write_s = time.perf_counter() - t0
        out["sqlite_write_rows_s"] = round(n / write_s)
        print(f"stored {n} x {dim} vectors in SQLite: {n / write_s:,.0f} rows/s")
        ids, stored = store.vectors(sp.id, "image")
        sims = queries @ stored.T
        truth = [set(ids[r]) for r in np.argsort(-sims, axis=1)[:, :10]]
        store.close()
        for kind in kinds:
            shutil.rmtree(tmp / "store" / "ann", ignore_errors=True)
            with Engine.open(tmp / "store", index=kind, create=False) as eng:
                t0 = time.perf_counter()
                eng.search(vector=queries[0], k=10)  # builds the index
                build_s = time.perf_counter() - t0
                lat, rec = [], []
                for q, t in zip(queries, truth):
                    t0 = time.perf_counter()
                    hits = eng.search(vector=q, k=10, **(params or {}))
                    lat.append(time.perf_counter() - t0)
                    rec.append(len({h.id for h in hits} & t) / 10)
                lat.sort()
                r = {
                    "build_s": round(build_s, 2),
                    "p50_ms": round(1000 * statistics.median(lat), 3),
                    "p95_ms": round(1000 * lat[int(0.95 * (len(lat) - 1))], 3),
                    "recall_at_10": round(float(np.mean(rec)), 4),
                }
                out["per_kind"][kind] = r
                print(f"{kind:5s} build {r['build_s']:7.2f}s  p50 {r['p50_ms']:7.3f} ms  p95 {r['p95_ms']:7.3f} ms  "
                      f"recall@10 {r['recall_at_10']:.3f}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--kinds", default="flat,ivf,hnsw")
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    x = clustered(args.n + args.queries, args.dim)
    res = measure(x[: args.n], x[args.n :], args.kinds.split(","))
    print(f"wrote {save('query', {'data': 'clustered gaussian (centres + noise)', **res})}")


if __name__ == "__main__":
    main()
