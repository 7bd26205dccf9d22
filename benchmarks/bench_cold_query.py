"""Cold query on a flat store of 10k / 100k / 1M vectors: a fresh process opens the store and answers.

Each run is a new Python process (``Engine.open`` + ``search(vector=…)``, no model), timed from the
parent (interpreter start, imports, index load, search, result join), and reports how many bytes it
read through ``read()`` (``/proc/self/io`` rchar): a memory-mapped index is paged in by the search, not
read and hashed before it. ``--cold`` drops the store's files from the page cache before each run
(``posix_fadvise(DONTNEED)``), so the first touch comes from disk. For comparison the same child also
loads the file the way mmsearch did before per-generation files (read it all, sha256, deserialize).

    python benchmarks/bench_cold_query.py [--sizes 10000,100000,1000000] [--dim 512] [--runs 3]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import save  # noqa: E402

CHILD = r"""
import json, sys, time
t0 = time.perf_counter()
import numpy as np
mode, store, dim = sys.argv[1], sys.argv[2], int(sys.argv[3])
q = np.ones(dim, np.float32) / np.sqrt(dim)
if mode == "mmsearch":
    from mmsearch import Engine
    with Engine.open(store, create=False, index="flat") as eng:
        hits = eng.search(vector=q, type="image", k=10)
        notices = eng.notices
    n = len(hits)
else:  # the load before per-generation files: read all, hash all, deserialize, then search
    import hashlib, faiss
    from mmsearch.ann.space_index import read_record
    rec = read_record(store, 1, "image")
    data = (__import__("pathlib").Path(store) / "ann" / rec["file"]).read_bytes()
    assert hashlib.sha256(data).hexdigest() == rec["sha256"]
    index = faiss.deserialize_index(np.frombuffer(data, dtype=np.uint8))
    n = len(index.search(q[None], 10)[1][0]); notices = []
io = dict(line.split(": ") for line in open("/proc/self/io").read().splitlines())
print(json.dumps({"inner_s": time.perf_counter() - t0, "rchar": int(io["rchar"]), "hits": n, "notices": notices}))
"""


def evict(folder: Path) -> None:
    """Drop a folder's files from the page cache (clean pages; no root needed)."""
    for p in folder.rglob("*"):
        if p.is_file():
            fd = os.open(p, os.O_RDONLY)
            try:
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(fd)


def build(root: Path, n: int, dim: int) -> dict:
    from mmsearch.ann.indexes import IndexSet
    from mmsearch.encoders.base import SpaceInfo
    from mmsearch.store.store import Store, Upsert

    store = Store(root, create=True)
    sp = store.ensure_space(SpaceInfo(spec="bench:vectors", family="bench", weights="given", dim=dim,
                                      modalities=("image",)))
    rng = np.random.default_rng(0)
    t0 = time.perf_counter()
    for s in range(0, n, 20_000):
        x = rng.normal(size=(min(20_000, n - s), dim)).astype(np.float32)
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        store.apply([Upsert(f"/bench/{s + i}.jpg", "file", 1, 1, f"{s + i:064x}", "image", vector=v)
                     for i, v in enumerate(x)], sp.id)
    write_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    IndexSet(store, "flat").sync(sp, save=True)  # a writer builds (in blocks) and saves the index file
    build_s = time.perf_counter() - t0
    store.close()
    ann = next((root / "ann").glob("*.faiss"))
    return {"sqlite_write_s": round(write_s, 1), "index_build_s": round(build_s, 1), "index_bytes": ann.stat().st_size}


def run_child(mode: str, root: Path, dim: int, cold: bool) -> dict:
    if cold:
        evict(root)
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", CHILD, mode, str(root), str(dim)], check=True,
                         capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    res = json.loads(out.stdout)
    res["wall_s"] = time.perf_counter() - t0
    assert res["hits"] == 10 and not res["notices"], res
    return res


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="10000,100000,1000000")
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    rows = []
    for n in map(int, args.sizes.split(",")):
        tmp = Path(tempfile.mkdtemp(prefix="mmsearch-cold-"))
        try:
            info = build(tmp / "store", n, args.dim)
            row = {"n": n, "dim": args.dim, **info}
            for mode in ("mmsearch", "full-read"):
                for cache in ("cold", "warm"):
                    runs = [run_child(mode, tmp / "store", args.dim, cache == "cold") for _ in range(args.runs)]
                    row[f"{mode}_{cache}_wall_s"] = round(statistics.median(r["wall_s"] for r in runs), 3)
                    row[f"{mode}_{cache}_read_mb"] = round(statistics.median(r["rchar"] for r in runs) / 1e6, 1)
            rows.append(row)
            print(json.dumps(row), flush=True)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    print(f"wrote {save('cold-query', {'runs': args.runs, 'rows': rows})}")


if __name__ == "__main__":
    main()
