"""Loopback load on `mmsearch serve` while `mmsearch index` writes into the same store.

A real server (uvicorn, one process, the token on) over a store of the bundled shapes indexed with
``builtin:shapes``; N asyncio clients (httpx) send a mix of requests for DURATION seconds: text
searches, thumbnails, image-upload searches, originals and stats. Meanwhile `mmsearch index` runs
again and again in another process, each run adding a batch of new images to the store (so the
server's indexes are caught up under load). Reports p50/p99 latency per kind and overall, and every
error (target: none); writes benchmarks/results/server-load-DATE.json with the machine.

    python benchmarks/bench_server_load.py [--clients 8] [--duration 60] [--batch 40]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from _common import save  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
TOKEN = "load-benchmark-token-0123456789"
MIX = (("search", 0.5), ("thumb", 0.25), ("image", 0.1), ("file", 0.1), ("stats", 0.05))


def mmsearch(*args: str, **kw) -> subprocess.Popen:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    return subprocess.Popen([sys.executable, "-m", "mmsearch", *args], env=env, **kw)


def new_images(folder: Path, n: int, seed: int) -> None:
    """``n`` new PNGs (random coloured blobs: new content, so each is encoded)."""
    from PIL import Image, ImageDraw

    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        im = Image.new("RGB", (96, 96), tuple(rng.randrange(256) for _ in range(3)))
        d = ImageDraw.Draw(im)
        for _ in range(3):
            x, y = rng.randrange(70), rng.randrange(70)
            d.ellipse((x, y, x + rng.randrange(10, 40), y + rng.randrange(10, 40)),
                      fill=tuple(rng.randrange(256) for _ in range(3)))
        im.save(folder / f"new_{seed}_{i:04d}.png")


def pct(values: list[float], q: float) -> float:
    v = sorted(values)
    return round(1000 * v[min(len(v) - 1, int(q * (len(v) - 1) + 0.5))], 2) if v else float("nan")


async def client(http, base: str, ids: list[int], upload: bytes, until: float, seed: int,
                 log: list[tuple[str, float, int | str]]) -> None:
    rng = random.Random(seed)
    words = ["a red circle", "a small blue star", "green square", "a yellow triangle", "purple cross"]
    kinds, weights = zip(*MIX)
    while time.monotonic() < until:
        kind = rng.choices(kinds, weights)[0]
        t0 = time.perf_counter()
        try:
            if kind == "search":
                r = await http.get(f"{base}/api/search", params={"q": rng.choice(words), "k": 20})
            elif kind == "thumb":
                r = await http.get(f"{base}/api/thumb/{rng.choice(ids)}", params={"size": rng.choice([128, 256])})
            elif kind == "image":
                r = await http.post(f"{base}/api/search/image", params={"k": 10},
                                    files={"file": ("q.png", upload, "image/png")})
            elif kind == "file":
                r = await http.get(f"{base}/api/file/{rng.choice(ids)}")
            else:
                r = await http.get(f"{base}/api/stats")
            outcome: int | str = r.status_code
        except Exception as exc:  # a refused or dropped connection is an error too
            outcome = type(exc).__name__
        log.append((kind, time.perf_counter() - t0, outcome))


def indexer(data: Path, store: Path, until: float, batch: int) -> dict:
    """Index new batches into the store until ``until``; returns how many runs and images."""
    runs, added, failed = 0, 0, 0
    while time.monotonic() < until:
        new_images(data / f"batch{runs:03d}", batch, seed=1000 + runs)
        proc = mmsearch("index", str(data), "--store", str(store), "--model", "builtin:shapes", "--device", "cpu",
                        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        _, err = proc.communicate()
        runs += 1
        if proc.returncode == 0:
            added += batch
        else:
            failed += 1
            print("index run failed:", err.decode(errors="replace")[-500:])
    return {"index_runs": runs, "index_runs_failed": failed, "images_added": added}


async def load(base: str, clients: int, duration: float, ids: list[int], upload: bytes) -> list:
    import httpx

    log: list = []
    until = time.monotonic() + duration
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(headers={"Authorization": f"Bearer {TOKEN}"}, timeout=60, limits=limits) as http:
        await asyncio.gather(*(client(http, base, ids, upload, until, i, log) for i in range(clients)))
    return log


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--duration", type=float, default=60.0, help="seconds of load")
    ap.add_argument("--batch", type=int, default=40, help="new images per index run")
    args = ap.parse_args()

    import concurrent.futures
    import urllib.request

    sys.path.insert(0, str(ROOT))
    from tests.kit import free_port

    tmp = Path(tempfile.mkdtemp(prefix="mmsearch-load-"))
    try:
        data, store = tmp / "data", tmp / "store"
        shutil.copytree(ROOT / "samples" / "shapes" / "images", data / "samples")
        subprocess.run([sys.executable, "-m", "mmsearch", "index", str(data), "--store", str(store), "--model",
                        "builtin:shapes", "--device", "cpu"], check=True, env={**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)},
                       stdout=subprocess.DEVNULL)
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        server = mmsearch("serve", "--store", str(store), "--port", str(port), "--token", TOKEN,
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            req = urllib.request.Request(f"{base}/api/search?q=a+red+circle&k=48",
                                         headers={"Authorization": f"Bearer {TOKEN}"})
            for _ in range(300):
                try:
                    with urllib.request.urlopen(req, timeout=60) as r:
                        import json

                        ids = [h["id"] for h in json.load(r)]
                    break
                except OSError:
                    time.sleep(0.2)
            else:
                raise SystemExit("the server did not come up")
            upload = next((data / "samples").iterdir()).read_bytes()
            until = time.monotonic() + args.duration
            with concurrent.futures.ThreadPoolExecutor(1) as pool:
                writing = pool.submit(indexer, data, store, until, args.batch)
                t0 = time.perf_counter()
                log = asyncio.run(load(base, args.clients, args.duration, ids, upload))
                wall = time.perf_counter() - t0
                written = writing.result()
        finally:
            server.terminate()
            server.wait(30)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    ok = [t for _, t, o in log if isinstance(o, int) and o < 400]
    errors: dict[str, int] = {}
    for kind, _, o in log:
        if not (isinstance(o, int) and o < 400):
            errors[f"{kind}:{o}"] = errors.get(f"{kind}:{o}", 0) + 1
    per_kind = {}
    for kind, _ in MIX:
        ts = [t for k, t, o in log if k == kind and isinstance(o, int) and o < 400]
        per_kind[kind] = {"requests": sum(1 for k, _, _ in log if k == kind), "p50_ms": pct(ts, 0.5),
                          "p99_ms": pct(ts, 0.99)}
    result = {"clients": args.clients, "duration_s": args.duration, "wall_s": round(wall, 1),
              "requests": len(log), "requests_per_s": round(len(log) / wall, 1), "errors": sum(errors.values()),
              "errors_by_kind": errors, "p50_ms": pct(ok, 0.5), "p99_ms": pct(ok, 0.99),
              "mean_ms": round(1000 * statistics.fmean(ok), 2) if ok else None, "per_kind": per_kind, **written}
    print(f"{len(log)} requests from {args.clients} clients in {wall:.1f}s ({result['requests_per_s']}/s), "
          f"{result['errors']} errors; p50 {result['p50_ms']} ms, p99 {result['p99_ms']} ms")
    for kind, r in per_kind.items():
        print(f"  {kind:7s} {r['requests']:6d} requests  p50 {r['p50_ms']:8.2f} ms  p99 {r['p99_ms']:8.2f} ms")
    print(f"meanwhile: {written['index_runs']} index runs ({written['index_runs_failed']} failed) "
          f"added {written['images_added']} images")
    print("saved", save("server-load", result))


if __name__ == "__main__":
    main()
