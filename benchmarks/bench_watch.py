"""`mmsearch watch` (Engine.watch): a burst of new files, a folder move, and one new file's latency.

With the built-in `builtin:shapes` model (offline, fast) on 64×64 PNG scenes of its shapes world
(distinct images, a few KB each), written once to a staging folder outside the watched root:

  1. burst: Engine.watch runs in a thread on a folder; N files are copied into it one by one
     (as fast as they go, or ``--rate`` files/s). Measured:
     seconds from the first copy until every file is in the store (polled from a second engine, as a
     reader sees it), how many syncs (``changes`` events) that took, peak RSS (this process during the
     burst, VmHWM reset at its start; ``ru_maxrss`` of the process and of the decode workers), and the same N
     files indexed by a plain ``Engine.index`` into a fresh store (ratio watch / index);
  2. move: the folder renamed inside the watched root: seconds until the store lists the N files
     under the new name and none under the old, the sync's ``moved``/``indexed`` counts and the
     vector count before and after (a move costs no model call);
  3. latency: one new file written into the watched folder, seconds until it is in the store
     (median of ``--latency-runs``).

    python benchmarks/bench_watch.py [--n 10000] [--rate FILES_PER_S] [--workers N] [--debounce 1600] [--latency-runs 5]
"""

from __future__ import annotations

import argparse
import io
import os
import resource
import shutil
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import save  # noqa: E402

MODEL = "builtin:shapes"
DEADLINE = 1800.0  # seconds any single wait may take before the run is declared stuck


def png_bytes(seed: int, index: int) -> bytes:
    from mmsearch.world.shapes import generate_one

    buf = io.BytesIO()
    generate_one(seed, index).image.save(buf, format="PNG")
    return buf.getvalue()


def make_pngs(folder: Path, n: int, seed: int) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for i in range(n):
        p = folder / f"scene_{i:05d}.png"
        p.write_bytes(png_bytes(seed, i))
        out.append(p)
    return out


def wait_for(cond, what: str, interval: float, timeout: float = DEADLINE):
    end = time.monotonic() + timeout
    while True:
        got = cond()
        if got:
            return got
        if time.monotonic() > end:
            raise SystemExit(f"timed out waiting for {what}")
        time.sleep(interval)


def status_mb(key: str) -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024
    return 0.0


def maxrss_mb(who: int) -> float:
    return resource.getrusage(who).ru_maxrss / 1024  # KiB on Linux


class Rss:
    """Resident memory of this process per phase: at its start and its peak (the kernel's high-water
    mark VmHWM, reset at the start of each phase through /proc/self/clear_refs; where that reset is
    not allowed the peak is the process's since it began, and ``peak_since_start`` says so)."""

    def __init__(self) -> None:
        self.figures_of: dict[str, dict] = {}
        self.open: dict[str, tuple[float, bool]] = {}

    def begin(self, phase: str) -> None:
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
            reset = True
        except OSError:
            reset = False
        self.open[phase] = (status_mb("VmRSS"), reset)

    def end(self, phase: str) -> dict:
        start, reset = self.open.pop(phase)
        peak = status_mb("VmHWM")
        self.figures_of[phase] = {"rss_at_start_mb": round(start, 1), "rss_peak_mb": round(peak, 1),
                                  "rss_growth_mb": round(peak - start, 1), "peak_since_start": reset}
        return self.figures_of[phase]


class Watcher:
    """Engine.watch in a thread on its own engine; events collected as they arrive."""

    def __init__(self, store: Path, root: Path, workers: int | None, debounce: int | None) -> None:
        from mmsearch import Engine

        self.engine = Engine.open(store, model=MODEL, workers=workers)
        self.events: list = []
        self.stop = threading.Event()
        self.result: dict = {}
        kw = {} if debounce is None else {"debounce_ms": debounce}
        self.thread = threading.Thread(target=self._run, args=(root, kw), daemon=True)
        self.thread.start()
        wait_for(lambda: self.of("start") or self.result, "the watch's initial sync", 0.05)
        if "error" in self.result:
            raise self.result["error"]

    def _run(self, root: Path, kw: dict) -> None:
        try:
            self.result["report"] = self.engine.watch([root], on_sync=self.events.append, stop_event=self.stop, **kw)
        except BaseException as exc:
            self.result["error"] = exc

    def of(self, kind: str) -> list:
        return [e for e in list(self.events) if e.kind == kind]

    def finish(self):
        self.stop.set()
        self.thread.join(timeout=120)
        self.engine.close()
        if "error" in self.result:
            raise self.result["error"]
        return self.result["report"]


def files_in(reader) -> int:
    return reader.stats().sources.get("file", 0)


def vectors(reader) -> int:
    return sum(sp.vectors for sp in reader.stats().spaces)


def burst(w: Watcher, reader, files: list[Path], dest: Path, rss: Rss, rate: float | None) -> dict:
    n, base = len(files), files_in(reader)
    rss.begin("watch_burst")
    t0 = time.perf_counter()
    for i, f in enumerate(files):
        if rate:  # a slower source (a camera card, a network copy): file i not before i / rate seconds
            time.sleep(max(0.0, t0 + i / rate - time.perf_counter()))
        shutil.copyfile(f, dest / f.name)
    copied = time.perf_counter() - t0
    wait_for(lambda: files_in(reader) >= base + n, f"{n} files in the store", 0.1)
    total = time.perf_counter() - t0
    time.sleep(2.5)  # the last event lands just after its commit (indexes brought up to date); a trailing batch too
    mem = rss.end("watch_burst")
    after = w.of("changes")
    return {
        "copy_s": round(copied, 2), "all_searchable_s": round(total, 2),
        "after_last_copy_s": round(total - copied, 2), "files_s": round(n / total, 1),
        "syncs": len(after), "errors": reader.stats().errors, **mem,
        "batches": [{"paths": e.paths, "added": e.added, "indexed": e.indexed, "failed": e.failed,
                     "seconds": round(e.seconds, 2)} for e in after],
    }


def move(w: Watcher, reader, old: Path, new: Path, n: int) -> dict:
    vec_before, before = vectors(reader), len(w.of("changes"))
    t0 = time.perf_counter()
    os.rename(old, new)
    wait_for(lambda: len(reader.store.uris_under(str(new))) == n and not reader.store.uris_under(str(old)),
             "the moved paths in the store", 0.02)
    seen = time.perf_counter() - t0
    wait_for(lambda: len(w.of("changes")) > before, "the move's sync event", 0.02)
    evs = w.of("changes")[before:]
    return {"seconds": round(seen, 3), "syncs": len(evs), "moved": sum(e.moved for e in evs),
            "indexed": sum(e.indexed for e in evs), "added": sum(e.added for e in evs),
            "removed": sum(e.removed for e in evs), "vectors_before": vec_before, "vectors_after": vectors(reader),
            "sync_seconds": round(sum(e.seconds for e in evs), 3)}


def latency(w: Watcher, reader, folder: Path, runs: int, seed: int) -> dict:
    blobs = [png_bytes(seed, i) for i in range(runs)]
    times = []
    for i, blob in enumerate(blobs):
        path, events = folder / f"new_{i:02d}.png", len(w.of("changes"))
        t0 = time.perf_counter()
        path.write_bytes(blob)
        wait_for(lambda: reader.store.lookup_sources([str(path)]), "the new file in the store", 0.01)
        times.append(time.perf_counter() - t0)
        wait_for(lambda: len(w.of("changes")) > events, "its sync event", 0.01)
        time.sleep(0.3)
    return {"median_s": round(statistics.median(times), 3), "min_s": round(min(times), 3),
            "max_s": round(max(times), 3), "runs": runs, "all_s": [round(t, 3) for t in times]}


def plain_index(store: Path, folder: Path, n: int, workers: int | None, rss: Rss) -> dict:
    from mmsearch import Engine

    with Engine.open(store, model=MODEL, workers=workers) as eng:
        eng.encoder(MODEL)  # loaded before the clock, as the watcher's was by its initial sync
        rss.begin("index")
        t0 = time.perf_counter()
        rep = eng.index([folder])
        wall = time.perf_counter() - t0
        mem = rss.end("index")
    assert rep.indexed == n and rep.failed == 0, rep
    return {"seconds": round(wall, 2), "files_s": round(n / wall, 1), **mem}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=10000, help="files in the burst (default 10,000)")
    ap.add_argument("--workers", type=int, default=None, help="decode workers (default: the engine's)")
    ap.add_argument("--debounce", type=int, default=None, help="watch debounce in ms (default: the engine's, 1600)")
    ap.add_argument("--rate", type=float, default=None, help="copy at most this many files/s (default: as fast as it goes)")
    ap.add_argument("--latency-runs", type=int, default=5)
    ap.add_argument("--seed", type=int, default=4242)
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from mmsearch import Engine

    tmp = Path(tempfile.mkdtemp(prefix="mmsearch-bench-watch-"))
    rss = Rss()
    try:
        t0 = time.perf_counter()
        files = make_pngs(tmp / "staging", args.n, args.seed)
        avg_kb = sum(f.stat().st_size for f in files) / len(files) / 1024
        print(f"generated {args.n} shapes PNGs 64x64, avg {avg_kb:.1f} KB, in {time.perf_counter() - t0:.1f}s")

        root = tmp / "watched"
        (root / "burst").mkdir(parents=True)
        rss.begin("watch_start")  # the model loads here (torch imported), before the burst
        w = Watcher(tmp / "store-watch", root, args.workers, args.debounce)
        reader = Engine.open(tmp / "store-watch", create=False)
        start = rss.end("watch_start")
        b = burst(w, reader, files, root / "burst", rss, args.rate)
        b["maxrss_self_mb"] = round(maxrss_mb(resource.RUSAGE_SELF), 1)
        b["maxrss_workers_mb"] = round(maxrss_mb(resource.RUSAGE_CHILDREN), 1)
        print(f"burst: {args.n} files copied in {b['copy_s']}s, all searchable after {b['all_searchable_s']}s "
              f"({b['after_last_copy_s']}s after the last copy, "
              f"{b['files_s']} files/s) in {b['syncs']} syncs, "
              f"errors {b['errors']}")
        print("  batches: " + ", ".join(f"{x['paths']} paths/{x['seconds']}s" for x in b["batches"]))
        print(f"  RSS: {start['rss_at_start_mb']} MB before the watch (peak {start['rss_peak_mb']} MB while it "
              f"started), {b['rss_at_start_mb']} MB with the model loaded, peak {b['rss_peak_mb']} MB during the burst (+{b['rss_growth_mb']} MB); ru_maxrss self {b['maxrss_self_mb']} MB, decode workers {b['maxrss_workers_mb']} MB")

        m = move(w, reader, root / "burst", root / "moved", args.n)
        print(f"move: folder of {args.n} renamed, store shows the new paths after {m['seconds']}s "
              f"({m['syncs']} sync, moved {m['moved']}, indexed {m['indexed']}, vectors {m['vectors_before']} -> "
              f"{m['vectors_after']})")

        lat = latency(w, reader, root / "moved", args.latency_runs, args.seed + 1)
        print(f"one new file: searchable after median {lat['median_s']}s (min {lat['min_s']}, max {lat['max_s']}, "
              f"{lat['runs']} runs)")
        report = w.finish()
        reader.close()

        idx = plain_index(tmp / "store-index", tmp / "staging", args.n, args.workers, rss)
        ratio = b["all_searchable_s"] / idx["seconds"]
        print(f"plain Engine.index of the same {args.n} files: {idx['seconds']}s ({idx['files_s']} files/s, "
              f"RSS +{idx['rss_growth_mb']} MB during it); watch/index = {ratio:.2f}")
        path = save("watch", {
            "model": MODEL, "n_files": args.n, "image": "64x64 PNG (shapes world)", "avg_kb": round(avg_kb, 2),
            "workers": args.workers, "debounce_ms": args.debounce or 1600, "copy_rate_files_s": args.rate,
            "watch_start": start, "burst": b, "move": m, "single_file_latency": lat,
            "index": idx,
            "watch_over_index": round(ratio, 2),
            "watch_report": {"syncs": report.syncs, "added": report.added, "moved": report.moved,
                             "failed": report.failed, "seconds": round(report.seconds, 1)},
        })
        print(f"wrote {path}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
