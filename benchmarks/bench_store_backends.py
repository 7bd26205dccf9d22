"""The store's truth on SQLite vs PostgreSQL: write rate, read-back rate (what an index build reads), point
reads (what an exact re-rank reads) and bytes per vector on disk.

Rows go through the product's own write path (``Store.apply``: batches of 256 files, one transaction each,
as ``mmsearch index`` commits them; on PostgreSQL a batch is COPYed in, :mod:`mmsearch.store.bulk`, and the
run is repeated through the plain INSERT statements, ``postgresql-statements``, for comparison), 512-d fp16 vectors (a ViT-B/32 space), one file path per content.
PostgreSQL is a throwaway local cluster (``initdb``/``pg_ctl``, Unix socket, ``fsync=off`` as the tests run
it: durable settings write slower), started by the test kit; SQLite is the store folder's own file (WAL,
``synchronous=NORMAL``, as shipped).

    python benchmarks/bench_store_backends.py --n 100000
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _common import save  # noqa: E402

from mmsearch.encoders.base import SpaceInfo  # noqa: E402
from mmsearch.store.store import Store  # noqa: E402
from mmsearch.store.write import Upsert  # noqa: E402

BATCH = 256
DIM = 512


def _batches(n: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    for start in range(0, n, BATCH):
        m = min(BATCH, n - start)
        vecs = rng.standard_normal((m, DIM)).astype(np.float32)
        vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
        yield [Upsert(uri=f"/photos/{i // 1000:05d}/img_{i:09d}.jpg", kind="file", size=2_000_000 + i,
                      mtime_ns=1_700_000_000_000_000_000 + i, sha256=f"{i:064x}", modality="image", width=4000,
                      height=3000, vector=vecs[j]) for j, i in enumerate(range(start, start + m))]


def _db_bytes(store: Store) -> int:
    if store.db_path is not None:
        return sum(p.stat().st_size for p in store.root.glob("mmsearch.sqlite3*"))
    with store.db.read() as s:
        return int(s.connection().exec_driver_sql("SELECT pg_database_size(current_database())").scalar_one())


def run(store: Store, n: int) -> dict:
    space = store.ensure_space(SpaceInfo("bench", "bench", "0", DIM, ("image", "text")))
    t0 = time.perf_counter()
    for batch in _batches(n):
        store.apply(batch, space.id)
    write_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    got = sum(len(ids) for ids, _ in store.iter_vectors(space.id, "image"))
    read_s = time.perf_counter() - t0
    assert got == n, (got, n)
    rng = np.random.default_rng(1)
    times = []
    for _ in range(50):  # an exact re-rank's read: 100 vectors by id
        ids = [int(i) for i in rng.integers(1, n + 1, 100)]
        t = time.perf_counter()
        store.vectors_for(ids, space.id)
        times.append(time.perf_counter() - t)
    return {"n": n, "write_rows_per_s": n / write_s, "read_vectors_per_s": n / read_s,
            "rerank_read_100_p50_ms": float(np.median(times) * 1e3), "db_bytes": _db_bytes(store),
            "bytes_per_vector": _db_bytes(store) / n}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=100_000)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-store-"))
    results = {}
    with _closing(Store(tmp / "lite", create=True)) as lite:
        results["sqlite"] = run(lite, args.n)
    try:
        from tests.kit import Postgres

        server = Postgres()
    except (ImportError, RuntimeError, OSError) as exc:
        print(f"PostgreSQL skipped: {exc}")
        server = None
    if server is not None:
        try:
            with _closing(Store(tmp / "pg", create=True, db=server.database())) as pg:
                results["postgresql"] = run(pg, args.n)
            from mmsearch.store import bulk

            copy_from = bulk.MIN_ROWS
            bulk.MIN_ROWS = 1 << 62  # the same rows through the plain INSERT statements, for comparison
            try:
                with _closing(Store(tmp / "pg-statements", create=True, db=server.database())) as pg:
                    results["postgresql-statements"] = run(pg, args.n)
            finally:
                bulk.MIN_ROWS = copy_from
        finally:
            server.stop()
    for name, r in results.items():
        print(f"{name:>10}: write {r['write_rows_per_s']:8.0f} rows/s   read back {r['read_vectors_per_s']:8.0f} vectors/s   "
              f"100 by id p50 {r['rerank_read_100_p50_ms']:6.2f} ms   {r['bytes_per_vector']:6.0f} bytes/vector "
              f"({r['db_bytes'] / 1e6:.0f} MB)")
    print("saved", save("store_backends", {"n": args.n, "dim": DIM, "batch": BATCH, "results": results,
                                            "load_average": os.getloadavg()}))


class _closing:
    def __init__(self, store: Store) -> None:
        self.store = store

    def __enter__(self) -> Store:
        return self.store

    def __exit__(self, *exc) -> None:
        self.store.close()


if __name__ == "__main__":
    main()
