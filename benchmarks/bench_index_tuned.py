"""Index build, size, recall and single-query rate per index kind at 10k / 100k / 1M real embeddings, with
image→image and text→image recall reported apart. Baseline: exact search (the `flat` index) on the same
store and machine; every row prints its rate as a multiple of exact search's.

Why text→image apart: an index built from image vectors partitions (IVF) or links (HNSW) the image
distribution; a text query sits off it (CLIP's modality gap), so the lists or graph neighbourhoods it
lands in hold fewer of its true neighbours, and it needs a wider search for the same recall (RoarGraph,
VLDB 2024; OOD-DiskANN). Tuning an index on image queries alone overstates what text queries get.

Data: `builtin:shapes` (the project's own trained open_clip model, 64-d) over its procedural world, see
benchmarks/_shapes_vectors.py: the store holds image vectors of scenes of draw 0; queries are held-out
scenes of draw 1 (``image``), one caption of each of them through the text tower (``text``), and the 48
plain prompts "a red circle" … (``prompt``). Vectors are cached in benchmarks/_data/. ``--data wordnet``:
WordNet glosses through all-MiniLM-L6-v2 (384-d), text→text, see benchmarks/_wordnet_vectors.py.

Through the API: vectors go into a scratch store (Store.apply, as bench_query.py); each kind is built
and saved as a writer does after an ingest (`IndexSet(store, kind).sync(space, save=True)`: the build
time includes training, adding, any build-time tuning and the file write); a reader's
`Engine.open(path, index=kind)` then answers single `Engine.search(vector=q, k=10)` calls (generation
check, FAISS on the memory-mapped file, metadata join). The ``faiss`` column times the same index file
searched directly (one thread; for pq the codes alone, without the engine's exact re-rank), which
shows what the engine adds per query. Sweeps (``--nprobe``,
``--ef-search``) pass the parameter per call and print the first value at which each query kind reaches
``--target``. When the engine records build-time tuning (``Engine.stats().spaces[i].tuning``) it is
printed next to the measurement.

    python benchmarks/bench_index_tuned.py --sizes 10000,100000 [--kinds flat,ivf,hnsw,pq,auto]
        [--queries 100] [--nprobe 1,4,16,64,256] [--ef-search 16,32,64,128,256] [--target 0.95]
        [--data shapes|wordnet]
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
import _shapes_vectors as shapes  # noqa: E402
from _common import save  # noqa: E402

K = 10
TIE = 1e-3  # mmsearch.ann.tuning.TIE (set here too, so the script also measures versions without it)
IVF_KINDS = ("ivf", "pq")


def fill_store(root: Path, base: np.ndarray) -> tuple[int, float]:
    """A scratch store holding ``base`` as the image vectors of a `bench:vectors` space → (space id, seconds)."""
    from mmsearch.encoders.base import SpaceInfo
    from mmsearch.store.store import Store, Upsert

    n, dim = base.shape
    store = Store(root, create=True)
    sp = store.ensure_space(SpaceInfo(spec="bench:vectors", family="bench", weights="given", dim=dim,
                                      modalities=("image",)))
    t0 = time.perf_counter()
    for s in range(0, n, 5000):
        store.apply([Upsert(f"/bench/{i}.png", "file", 1, 1, f"{i:064x}", "image", vector=base[i])
                     for i in range(s, min(s + 5000, n))], sp.id)
    seconds = time.perf_counter() - t0
    store.close()
    return sp.id, seconds


def exact_truth(root: Path, space_id: int, queries: dict[str, np.ndarray]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Top-K (scores, content ids) per query by exact inner product over the vectors as stored (fp16 → float32)."""
    import faiss

    from mmsearch.store.store import Store

    store = Store(root, create=False)
    ids, stored = store.vectors(space_id, "image")
    store.close()
    flat = faiss.IndexFlatIP(stored.shape[1])
    flat.add(np.ascontiguousarray(stored, np.float32))
    out = {}
    for name, q in queries.items():
        scores, rows = flat.search(np.ascontiguousarray(q, np.float32), K)
        out[name] = (scores, ids[rows])
    return out


def _files(folder: Path, pattern: str) -> int:
    return sum(p.stat().st_size for p in folder.glob(pattern) if p.is_file())


def sizes(root: Path) -> dict:
    """Bytes on disk: the index files under ann/ and the database (its vectors are fp16 blobs)."""
    return {"index_bytes": _files(root / "ann", "*.faiss"),
            "db_bytes": sum(p.stat().st_size for p in root.rglob("*") if p.is_file() and "ann" not in p.parts)}


def run_queries(eng, queries: dict[str, np.ndarray], truth: dict[str, tuple[np.ndarray, np.ndarray]],
                params: dict) -> dict:
    """Single queries through Engine.search: recall@K per query kind by ids alone (``recall_<kind>``) and
    with ties within mmsearch.ann.tuning.TIE of the K-th true score counted (``ties_<kind>``, the
    tuner's and ann-benchmarks' definition), latency over all of them."""
    lat, out = [], {}
    for name, qs in queries.items():
        rec, tied = [], []
        for q, t_scores, t in zip(qs, *truth[name]):
            t0 = time.perf_counter()
            hits = eng.search(vector=q, k=K, **params)
            lat.append(time.perf_counter() - t0)
            want = set(t.tolist())
            rec.append(len({h.id for h in hits} & want) / K)
            tied.append(min(K, sum(h.id in want or h.score >= t_scores[-1] - TIE for h in hits)) / K)
        out[f"recall_{name}"] = round(float(np.mean(rec)), 4)
        out[f"ties_{name}"] = round(float(np.mean(tied)), 4)
    lat.sort()
    out.update(p50_ms=round(1000 * statistics.median(lat), 3), p95_ms=round(1000 * lat[int(0.95 * (len(lat) - 1))], 3),
               qps=round(len(lat) / sum(lat), 1))
    return out


def faiss_qps(root: Path, kind: str, dim: int, queries: np.ndarray, params: dict) -> float | None:
    """Single queries straight on the index file (one thread): the index's own rate, without the engine."""
    from mmsearch.ann.faiss_index import AnnIndex, SearchParams

    files = sorted((root / "ann").glob("*.faiss"), key=lambda p: p.stat().st_mtime)
    if not files:
        return None
    ann = AnnIndex.read(files[-1], kind, dim, mmap=False)
    sp = SearchParams(nprobe=params.get("nprobe"), ef_search=params.get("ef_search"))
    try:
        for q in queries[:20]:
            ann.search(q[None], K, sp)
        t0 = time.perf_counter()
        for q in queries:
            ann.search(q[None], K, sp)
    except Exception as exc:  # an internal seam of another mmsearch version: the column is left out
        print(f"  (faiss column skipped: {exc})")
        return None
    return round(len(queries) / (time.perf_counter() - t0), 1)


def tuning_of(eng) -> dict | None:
    """The engine's record of build-time tuning, when it keeps one (absent before that feature)."""
    space = eng.stats().spaces[0]
    return getattr(space, "tuning", None) or None


def sweep_points(built: str, args) -> list[dict]:
    """The search parameters to measure: the defaults, then the sweep that fits the built kind."""
    points: list[dict] = [{}]
    if built in IVF_KINDS:
        points += [{"nprobe": v} for v in args.nprobe]
    elif built == "hnsw":
        points += [{"ef_search": v} for v in args.ef_search]
    return points


def tuner_prompts(embed_texts) -> np.ndarray | None:
    """The generic text queries an engine tunes a space's indexes with (its background prompts and tuning
    queries through the space's text tower), where this version of mmsearch tunes at build; else None."""
    import inspect

    from mmsearch.ann.indexes import IndexSet
    from mmsearch.query import calibrate

    texts = list(getattr(calibrate, "BACKGROUND_PROMPTS", ())) + list(getattr(calibrate, "TUNING_QUERIES", ()))
    if "prompts" not in inspect.signature(IndexSet).parameters or not texts:
        return None
    return np.asarray(embed_texts(texts), np.float32)


def build_index(root: Path, kind: str, prompts: np.ndarray | None) -> float:
    """Build and save the index as a writer does after an ingest (bench_cold_query.py does the same) → seconds.

    ``prompts``: the text queries the engine would hand its build-time tuner for this space (a real
    store keeps them in its calibration record; this scratch store has none, so they are passed here).
    """
    from mmsearch.ann.indexes import IndexSet
    from mmsearch.store.store import Store

    shutil.rmtree(root / "ann", ignore_errors=True)
    store = Store(root, create=False)
    try:
        extra = {} if prompts is None else {"prompts": lambda space: prompts}
        t0 = time.perf_counter()
        IndexSet(store, kind, **extra).sync(store.spaces()[0], save=True)
        return time.perf_counter() - t0
    finally:
        store.close()


def measure_kind(root: Path, kind: str, dim: int, queries: dict, truth: dict, args) -> dict:
    """Build one kind, then measure every sweep point through a reader's Engine (index file memory-mapped)."""
    from mmsearch import Engine

    build_s = build_index(root, kind, args.prompts)
    pooled = np.concatenate(list(queries.values()))
    with Engine.open(root, index=kind, create=False) as eng:
        eng.search(vector=pooled[0], k=K)  # loads the index file
        built = eng.stats().spaces[0].index.get("image", kind)
        tuned = tuning_of(eng)
        rows = []
        for params in sweep_points(built, args):
            row = {"params": params, **run_queries(eng, queries, truth, params)}
            fp = dict(params)
            if not params and tuned and "image" in tuned:  # the engine's default is then the tuned value
                fp = {tuned["image"]["param"]: tuned["image"]["value"]}
            row["faiss_qps"] = faiss_qps(root, built, dim, pooled, fp)
            rows.append(row)
        return {"built": built, "build_s": round(build_s, 2), **sizes(root), "tuning": tuned, "rows": rows}


def first_reaching(rows: list[dict], qkind: str, target: float, measure: str = "recall") -> dict | None:
    """The first swept parameter value at which ``qkind`` reaches ``target`` recall (None: never);
    ``measure``: "recall" (ids alone) or "ties"."""
    for row in rows[1:]:
        if row[f"{measure}_{qkind}"] >= target:
            return row["params"]
    return None


def base_vectors(n: int, args) -> np.ndarray:
    if args.data == "wordnet":
        import _wordnet_vectors as wordnet

        return wordnet.base_vectors(n)
    return shapes.image_vectors(n, workers=args.workers)


def dataset(args) -> tuple[dict[str, np.ndarray], dict]:
    """The query sets of ``--data`` and what to record about the data."""
    if args.data == "wordnet":
        import _wordnet_vectors as wordnet

        qs = wordnet.query_sets(args.queries)
        args.prompts = tuner_prompts(wordnet.embed_texts)
        return qs, {"data": "WordNet 3.0 glosses (store); queries: held-out glosses and /usr/share/dict words",
                    "model": wordnet.MODEL}
    qs = shapes.query_sets(1000, workers=args.workers)
    args.prompts = tuner_prompts(lambda texts: shapes.encoder().embed_texts(texts))
    queries = {"image": qs["image"][: args.queries], "text": qs["text"][: args.queries], "prompt": qs["prompt"]}
    return queries, {"data": f"{shapes.MODEL} image vectors of shapes-world scenes (draw {shapes.BASE_SEED}); "
                             f"queries: held-out scenes (draw {shapes.QUERY_SEED}), one caption each and the 48 "
                             "colour-shape prompts via the text tower", "model": shapes.model_info()}


def run_size(n: int, args, queries: dict) -> dict:
    base = base_vectors(n, args)
    tmp = Path(tempfile.mkdtemp(prefix="mmsearch-annbench-", dir=args.tmp))
    root = tmp / "store"
    try:
        space_id, fill_s = fill_store(root, base)
        print(f"\nN = {n:,} x {base.shape[1]}: stored in SQLite at {n / fill_s:,.0f} rows/s", flush=True)
        truth = exact_truth(root, space_id, queries)
        out = {"n": n, "dim": int(base.shape[1]), "sqlite_rows_s": round(n / fill_s), "per_kind": {}}
        for kind in args.kinds:
            res = measure_kind(root, kind, base.shape[1], queries, truth, args)
            out["per_kind"][kind] = res
            print_kind(kind, n, res, out["per_kind"].get("flat"), list(queries), args.target)
        return out
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def print_kind(kind: str, n: int, res: dict, flat: dict | None, qkinds: list[str], target: float) -> None:
    exact_qps = flat["rows"][0]["qps"] if flat else None
    exact_fq = flat["rows"][0]["faiss_qps"] if flat else None
    print(f"{kind} (built {res['built']}): build {res['build_s']:.1f}s, index {res['index_bytes'] / n:.0f} B/vector, "
          f"database {res['db_bytes'] / n:.0f} B/vector", flush=True)
    for row in res["rows"]:
        label = ",".join(f"{k}={v}" for k, v in row["params"].items()) or "default"
        ratio = f"{row['qps'] / exact_qps:6.1f}x" if exact_qps else "    -  "
        fratio = f"{row['faiss_qps'] / exact_fq:7.1f}x" if exact_fq and row["faiss_qps"] else "     -  "
        recalls = "  ".join(f"R@10 {q} {row[f'recall_{q}']:.3f} (ties {row[f'ties_{q}']:.3f})" for q in qkinds)
        print(f"  {label:14s} p50 {row['p50_ms']:7.3f} ms  p95 {row['p95_ms']:7.3f} ms  {row['qps']:8.0f} q/s {ratio}"
              f"  faiss {row['faiss_qps'] or 0:9.0f} q/s {fratio}  {recalls}", flush=True)
    if len(res["rows"]) > 1:
        for measure in ("recall", "ties"):
            reach = {q: first_reaching(res["rows"], q, target, measure) for q in qkinds}
            print(f"  first reaching R@10 ({'ids alone' if measure == 'recall' else 'ties counted'}) >= {target}: "
                  + ", ".join(f"{q}: {v or 'never'}" for q, v in reach.items()))
            res["first_reaching" + ("" if measure == "recall" else "_ties")] = reach
    if res["tuning"]:
        print(f"  engine tuning: {res['tuning']}")


def _ints(text: str) -> list[int]:
    return [int(v) for v in text.split(",") if v.strip()]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", choices=("shapes", "wordnet"), default="shapes")
    ap.add_argument("--sizes", type=_ints, default=[10_000, 100_000])
    ap.add_argument("--kinds", default="flat,ivf,hnsw,pq,auto")
    ap.add_argument("--queries", type=int, default=100, help="image and text queries each (plus the 48 prompts)")
    ap.add_argument("--nprobe", type=_ints, default=[1, 4, 16, 64, 256], help="sweep ('' for none)")
    ap.add_argument("--ef-search", type=_ints, default=[16, 32, 64, 128, 256], help="sweep ('' for none)")
    ap.add_argument("--target", type=float, default=0.95)
    ap.add_argument("--workers", type=int, default=2, help="processes drawing scenes when the cache lacks them")
    ap.add_argument("--tmp", default=None, help="folder for the scratch store (default: the system's)")
    args = ap.parse_args()
    args.kinds = ["flat"] + [k for k in args.kinds.split(",") if k and k != "flat"]  # the baseline comes first
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    queries, about = dataset(args)
    results = [run_size(n, args, queries) for n in args.sizes]
    payload = {**about, "tuner_prompts": 0 if args.prompts is None else len(args.prompts), "k": K, "target": args.target, "queries": {k: len(v) for k, v in queries.items()},
               "sizes": results}
    print(f"wrote {save('index-tuned', payload)}")


if __name__ == "__main__":
    main()
