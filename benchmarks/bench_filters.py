"""Filtered search (pre-filters applied before the vector search) per index kind and selectivity.

Through `Engine.search(vector=…, where=[…])`, the API path users hit. Data: clustered unit vectors
(see bench_query.py), each content given a distinct ``width`` (a seeded random permutation of
0..n-1), so ``width<K`` keeps exactly K contents, a random sample. For each selectivity (3 items,
0.01 %, 0.1 %, 1 %, 10 %, 50 %, 100 % through a filter that keeps everything, and no filter) and each
index kind: single-query latency p50/p99, recall@10 against the exact filtered answer (brute force
in numpy over the kept stored vectors), and whether every query got min(10, kept) hits. Also times
the SQL pre-filter alone (`Store.filtered_ids`), the part every kind pays.

    python benchmarks/bench_filters.py [--n 100000] [--dim 512] [--queries 100] [--kinds flat,ivf,hnsw,pq]
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
from bench_query import clustered  # noqa: E402

K = 10
FRACTIONS = (("0.01%", 1e-4), ("0.1%", 1e-3), ("1%", 1e-2), ("10%", 0.1), ("50%", 0.5))


def selectivities(n: int) -> list[tuple[str, int, list[str]]]:
    """(label, kept, where terms): 3 items, the fractions of ``n``, all through a filter, no filter."""
    out = [("3 items", 3, ["width<3"])]
    out += [(label, max(1, round(n * f)), [f"width<{max(1, round(n * f))}"]) for label, f in FRACTIONS]
    out += [("100% (filter)", n, [f"width<{n}"]), ("no filter", n, [])]
    return out


def fill(store_path: Path, base: np.ndarray, seed: int = 1):
    """A scratch store with ``base`` as image contents, content i with width perm[i]; returns
    (store, space id, widths) for the truths (the store stays open for the caller)."""
    from mmsearch.encoders.base import SpaceInfo
    from mmsearch.store.store import Store, Upsert

    n, dim = base.shape
    widths = np.random.default_rng(seed).permutation(n)
    store = Store(store_path, create=True)
    sp = store.ensure_space(SpaceInfo(spec="bench:vectors", family="bench", weights="given", dim=dim,
                                      modalities=("image",)))
    t0 = time.perf_counter()
    for s in range(0, n, 5000):
        store.apply([Upsert(f"/bench/{i}.jpg", "file", 1, 1, f"{i:064x}", "image", width=int(widths[i]), height=1,
                            vector=base[i]) for i in range(s, min(s + 5000, n))], sp.id)
    print(f"stored {n} x {dim} vectors in SQLite: {n / (time.perf_counter() - t0):,.0f} rows/s")
    return store, sp.id


def truths(store, space_id: int, queries: np.ndarray, levels) -> tuple[dict, dict]:
    """Exact filtered top-10 id sets per level (numpy over the stored vectors, kept by their stored
    width), and the SQL pre-filter's median time per level."""
    from mmsearch.query.filters import Filters

    ids, vecs = store.vectors(space_id, "image")
    meta = store.content_meta([int(i) for i in ids])
    width = np.array([meta[int(i)].width for i in ids])
    sims = queries @ vecs.T
    truth, sql_ms = {}, {}
    for label, kept, where in levels:
        mask = width < kept
        assert int(mask.sum()) == kept, (label, int(mask.sum()), kept)
        sub, sub_ids = sims[:, mask], ids[mask]
        top = np.argsort(-sub, axis=1, kind="stable")[:, :K]
        truth[label] = [set(int(x) for x in sub_ids[row]) for row in top]
        conds = Filters.make(where).conds
        if conds:
            store.filtered_ids(conds, space_id, "image")  # warm-up (statement compiled, pages cached)
            times = []
            for _ in range(5):
                t0 = time.perf_counter()
                got = store.filtered_ids(conds, space_id, "image")
                times.append(time.perf_counter() - t0)
            assert len(got) == kept, (label, len(got), kept)
            sql_ms[label] = round(1000 * statistics.median(times), 3)
    return truth, sql_ms


def one_kind(store_path: Path, kind: str, queries: np.ndarray, levels, truth: dict) -> dict:
    """Build the index of ``kind``, then per level: latency of each query, recall@10, hits returned."""
    from mmsearch import Engine

    shutil.rmtree(store_path / "ann", ignore_errors=True)
    out: dict = {}
    with Engine.open(store_path, index=kind, create=False) as eng:
        t0 = time.perf_counter()
        eng.search(vector=queries[0], k=K)  # builds the index
        out["build_s"] = round(time.perf_counter() - t0, 2)
        for label, kept, where in levels:
            want = min(K, kept)
            for q in queries[:3]:  # warm-up
                eng.search(vector=q, k=K, where=where)
            lat, rec, short = [], [], 0
            for q, t in zip(queries, truth[label]):
                t0 = time.perf_counter()
                hits = eng.search(vector=q, k=K, where=where)
                lat.append(time.perf_counter() - t0)
                short += len(hits) != want
                rec.append(len({h.id for h in hits} & t) / want)
            lat.sort()
            out[label] = {
                "kept": kept,
                "p50_ms": round(1000 * statistics.median(lat), 3),
                "p99_ms": round(1000 * lat[min(len(lat) - 1, int(0.99 * len(lat)))], 3),
                "recall_at_10": round(float(np.mean(rec)), 4),
                "recall_min": round(float(np.min(rec)), 4),
                "wrong_hit_count": short,
            }
    return out


def measure(base: np.ndarray, queries: np.ndarray, kinds: list[str]) -> dict:
    n, dim = base.shape
    levels = selectivities(n)
    tmp = Path(tempfile.mkdtemp(prefix="mmsearch-fbench-"))
    res: dict = {"n": n, "dim": dim, "queries": len(queries), "k": K,
                 "levels": {label: {"kept": kept, "where": where} for label, kept, where in levels}, "per_kind": {}}
    try:
        store, space_id = fill(tmp / "store", base)
        truth, res["sql_prefilter_ms"] = truths(store, space_id, queries, levels)
        store.close()
        for kind in kinds:
            res["per_kind"][kind] = one_kind(tmp / "store", kind, queries, levels, truth)
            print(f"{kind}: built in {res['per_kind'][kind]['build_s']} s", flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    table(res, levels, kinds)
    return res


def table(res: dict, levels, kinds: list[str]) -> None:
    print(f"\nn={res['n']} dim={res['dim']} queries={res['queries']} k={K}; "
          "p50/p99 ms, recall@10, queries with a wrong hit count")
    print(f"{'selectivity':14s} {'kept':>7s} {'sql ms':>7s} " + " ".join(f"{k:>26s}" for k in kinds))
    for label, kept, _ in levels:
        cells = []
        for kind in kinds:
            r = res["per_kind"][kind][label]
            cells.append(f"{r['p50_ms']:7.2f}/{r['p99_ms']:7.2f} {r['recall_at_10']:5.3f} {r['wrong_hit_count']:3d}")
        sql = res["sql_prefilter_ms"].get(label)
        print(f"{label:14s} {kept:7d} {'-' if sql is None else f'{sql:.2f}':>7s} " + " ".join(f"{c:>26s}" for c in cells))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--queries", type=int, default=100)
    ap.add_argument("--kinds", default="flat,ivf,hnsw,pq")
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    x = clustered(args.n + args.queries, args.dim)
    res = measure(x[: args.n], x[args.n :], args.kinds.split(","))
    print(f"wrote {save('filters', {'data': 'clustered gaussian (centres + noise); width = random permutation', **res})}")


if __name__ == "__main__":
    main()
