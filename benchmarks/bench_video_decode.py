"""Video frame sampling speed (mmsearch.ingest.video) as multiples of real time, vs decoding every frame.

Generates a 1080p30 H.264 clip with moving content (a scrolling noise texture and a moving block, so
the codec has real work), at 1 s and 8 s keyframe spacing, then times:
  * full decode of every frame (the baseline: what a naive reader pays),
  * mmsearch's sampler at its defaults (1 frame/s, skipping what no sample needs, scaled to 224 px).

    python benchmarks/bench_video_decode.py [--seconds 30]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from fractions import Fraction
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from _common import save  # noqa: E402

RECIPE = {"kind": "open_clip", "cfg": {"size": [224, 224], "mode": "RGB", "mean": [0.5] * 3, "std": [0.5] * 3,
                                        "interpolation": "bicubic", "resize_mode": "shortest"}}


def make_clip(path: Path, seconds: int, gop_s: int, fps: int = 30, size: tuple[int, int] = (1920, 1080)) -> Path:
    import av

    w, h = size
    rng = np.random.default_rng(0)
    texture = rng.integers(0, 256, (h, w * 2, 3), dtype=np.uint8)
    out = av.open(str(path), "w")
    s = out.add_stream("libx264", rate=fps)
    s.width, s.height, s.pix_fmt = w, h, "yuv420p"
    s.codec_context.gop_size = gop_s * fps
    s.options = {"preset": "veryfast", "crf": "23"}  # B-frames, as phones and cameras write
    for i in range(seconds * fps):
        x = (i * 8) % w
        img = np.ascontiguousarray(texture[:, x : x + w])
        img[200:400, (i * 20) % (w - 200) :][:, :200] = (255, 0, 0)
        f = av.VideoFrame.from_ndarray(img, format="rgb24")
        f.pts, f.time_base = i, Fraction(1, fps)
        for p in s.encode(f):
            out.mux(p)
    for p in s.encode():
        out.mux(p)
    out.close()
    return path


def full_decode(path: Path) -> float:
    import av

    t0 = time.perf_counter()
    with av.open(str(path)) as c:
        c.streams.video[0].thread_type = "AUTO"
        for _ in c.decode(video=0):
            pass
    return time.perf_counter() - t0


def sampled(path: Path) -> tuple[float, int]:
    from mmsearch.ingest.video import frames

    t0 = time.perf_counter()
    _, it = frames(str(path), RECIPE)
    n = sum(1 for _ in it)
    return time.perf_counter() - t0, n


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=int, default=30)
    args = ap.parse_args()
    import av  # noqa: F401  (imported before timing: both paths pay it once per process)

    import mmsearch.ingest.video  # noqa: F401

    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        for gop in (1, 8):
            clip = make_clip(Path(tmp) / f"gop{gop}.mp4", args.seconds, gop)
            full = min(full_decode(clip) for _ in range(2))
            samp, n = min(sampled(clip) for _ in range(2))
            rows[f"gop_{gop}s"] = {"full_decode_x_realtime": round(args.seconds / full, 1),
                                   "sampler_x_realtime": round(args.seconds / samp, 1), "frames_kept": n,
                                   "speedup_vs_full": round(full / samp, 2)}
            print(f"1080p30 H.264, keyframe every {gop} s: full decode {args.seconds / full:6.1f}x real time, "
                  f"sampler {args.seconds / samp:6.1f}x ({n} frames kept), {full / samp:.1f}x the full decode")
    print(f"wrote {save('video-decode', {'clip': f'{args.seconds} s 1080p30 H.264 veryfast crf 23', **rows})}")


if __name__ == "__main__":
    main()
