"""Ingest throughput: JPEG folder → stored vectors, end to end through `Engine.index`.

Mirrors the anchor setup (shared/ANCHORS.md): 640×480 JPEGs (~70 KB), a real architecture at random
init (forward cost does not depend on weights). Reports, separately:
  * decode+preprocess alone (one process), the CPU ceiling of the decode stage,
  * model only (preprocessed batch → vectors),
  * end to end (walk, read, hash, decode, preprocess in workers, embed, SQLite, FAISS).

    python benchmarks/bench_ingest.py [--n 400] [--model ViT-B-32:random] [--workers N] [--device auto]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import save  # noqa: E402


def make_jpegs(folder: Path, n: int, seed: int = 0) -> None:
    from PIL import Image, ImageDraw, ImageFilter

    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        base = rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)
        im = Image.fromarray(base).resize((640, 480), Image.BICUBIC).filter(ImageFilter.GaussianBlur(2))
        d = ImageDraw.Draw(im)
        for _ in range(6):
            x, y = rng.integers(0, 600), rng.integers(0, 440)
            d.ellipse([x, y, x + rng.integers(20, 200), y + rng.integers(20, 200)], fill=tuple(int(c) for c in rng.integers(0, 256, 3)))
        arr = np.asarray(im).astype(np.int16) + rng.integers(-12, 12, (480, 640, 3))
        Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8)).save(folder / f"img_{i:05d}.jpg", quality=90)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=400)
    ap.add_argument("--model", default="ViT-B-32:random")
    ap.add_argument("--workers", type=int, default=None)
    ap.add_argument("--device", default=None)
    ap.add_argument("--batch-size", type=int, default=64)
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    from mmsearch import Engine
    from mmsearch.ingest.decode import load
    from mmsearch.ingest.pixels import to_batch

    tmp = Path(tempfile.mkdtemp(prefix="mmsearch-bench-"))
    try:
        data = tmp / "jpegs"
        t0 = time.perf_counter()
        make_jpegs(data, args.n)
        files = sorted(data.iterdir())
        avg_kb = sum(f.stat().st_size for f in files) / len(files) / 1024
        print(f"generated {args.n} JPEGs 640x480, avg {avg_kb:.0f} KB, in {time.perf_counter() - t0:.1f}s")

        with Engine.open(tmp / "store", model=args.model, device=args.device, workers=args.workers,
                         batch_size=args.batch_size) as eng:
            enc = eng.encoder(args.model)
            recipe = enc.image_recipe()
            sample = files[: min(100, len(files))]
            load(str(sample[0]), "image", recipe)
            t0 = time.perf_counter()
            batch = to_batch([load(str(f), "image", recipe).pixels for f in sample], recipe)
            decode_rate = len(sample) / (time.perf_counter() - t0)
            enc.embed_image_batch(batch[:8])
            t0 = time.perf_counter()
            enc.embed_image_batch(batch)
            model_rate = len(batch) / (time.perf_counter() - t0)
            print(f"decode+preprocess, 1 process: {decode_rate:.0f} img/s")
            print(f"model only ({args.model}, batch {args.batch_size}, {getattr(enc, 'device', '?')}): {model_rate:.1f} img/s")

            t0 = time.perf_counter()
            report = eng.index([data])
            wall = time.perf_counter() - t0
            assert report.indexed == args.n and report.failed == 0, report
            e2e = args.n / wall
            print(f"end to end Engine.index: {e2e:.1f} img/s ({wall:.1f}s for {args.n}), workers={args.workers}")
            t0 = time.perf_counter()
            again = eng.index([data])
            resync = time.perf_counter() - t0
            print(f"re-sync with nothing changed: {resync:.2f}s ({args.n / resync:,.0f} files/s)")
            moved = tmp / "moved"
            data.rename(moved)
            t0 = time.perf_counter()
            after_move = eng.index([data.parent])
            move_s = time.perf_counter() - t0
            assert after_move.reused == args.n and after_move.indexed == 0, after_move
            print(f"re-sync after moving the folder: {move_s:.2f}s ({args.n / move_s:,.0f} files/s, hashed, not decoded)")
        path = save("ingest", {
            "model": args.model, "n_images": args.n, "image": "640x480 JPEG", "avg_kb": round(avg_kb, 1),
            "batch_size": args.batch_size, "workers": args.workers, "device": getattr(enc, "device", None),
            "decode_preprocess_img_s_1proc": round(decode_rate, 1), "model_only_img_s": round(model_rate, 1),
            "end_to_end_img_s": round(e2e, 1), "resync_unchanged_files_s": round(args.n / resync, 1),
            "resync_moved_files_s": round(args.n / move_s, 1),
        })
        print(f"wrote {path}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
