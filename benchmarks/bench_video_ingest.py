"""Video ingest end to end: one 1080p H.264 + AAC video → a searchable store, as multiples of real time.

The video (PyAV, cached in ``benchmarks/_data/videos``): 1080p30 H.264 (libx264 veryfast, crf 23, with
B-frames) and a 48 kHz stereo AAC soundtrack. Content "scenes": a cut every few seconds to another
procedural landscape (smooth colour fields with mid-frequency detail), the camera panning over it and a
few objects moving, so frames differ and the near-duplicate filter keeps about one per second. Content
"static": one landscape, a locked-off camera (the filter keeps one frame). Keyframes every 1 s (as
phones write) and every 3 s.

Models, as users get them by default on a CPU (the ONNX Runtime export, precision ``auto``): open_clip
``ViT-B-32`` at random init (image space) and LAION-CLAP's architecture at random init (sound space;
``ClapConfig()``, as ``bench_audio.py`` builds it). A forward pass costs the same whatever the weights.
Their exports are made once per machine, before timing; the models are loaded before timing too.

What is timed: ``Engine.index([folder with the one video])`` on a fresh store, default settings. Inside
that run, the pieces are timed by wrapping them (same process, same run): the decode (every call of
``mmsearch.ingest.decode.load``: one video is decoded in the indexing process, see below), the image
tower (``embed_image_batch``), the audio tower (``embed_audio_batch``) and the text tower (score
calibration prompts). "other" is the rest (walk, hash, store, FAISS, calibration bookkeeping).

    python benchmarks/bench_video_ingest.py [--seconds 120] [--long-hours 1]

``--long-hours H`` also indexes an H-hour 320x240 video (10 fps) in a child process and reports its peak
RSS (``ru_maxrss``), to show whether memory is bounded for long videos.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from fractions import Fraction
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))
from _common import save  # noqa: E402

os.environ.setdefault("HF_HUB_OFFLINE", "1")
DATA = HERE / "_data"
IMAGE_MODEL = "ViT-B-32:random"
RATE = 48000


# ---- the video ----------------------------------------------------------------------------------
def _landscape(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A procedural scene: a smooth colour field plus finer detail, uint8 (h, w, 3)."""
    from PIL import Image

    base = Image.fromarray(rng.integers(0, 256, (6, 10, 3), dtype=np.uint8)).resize((w, h), Image.BICUBIC)
    x = np.asarray(base, np.int16)
    for cell, weight in ((24, 3), (4, 5), (1, 8)):  # coarser to finer detail (foliage, gravel, grain)
        d = rng.integers(0, 256, (h // cell, w // cell, 3), dtype=np.uint8)
        x += (np.asarray(Image.fromarray(d).resize((w, h), Image.BILINEAR), np.int16) - 128) // weight
    return np.clip(x, 0, 255).astype(np.uint8)


def _soundtrack(seconds: float, scene_s: float, rng: np.random.Generator, block: int = 1024):
    """Blocks of (2, block) float32 at 48 kHz: per scene a chord of tones and some noise, as ambient sound."""
    per, chord = int(scene_s * RATE), None
    for a in range(0, int(seconds * RATE) - block + 1, block):
        if chord is None or a // per != (a - block) // per:
            chord = rng.uniform(110, 880, 3)
        t = (np.arange(a, a + block) / RATE)[None, :]
        x = (np.sin(2 * np.pi * chord[:, None] * t).sum(axis=0) * 0.1 + rng.standard_normal(block) * 0.02).astype(np.float32)
        yield np.stack([x, 0.8 * x])


def make_video(path: Path, seconds: int, gop_s: float, content: str, size=(1920, 1080), fps: int = 30,
               scene_s: float = 6.0, preset: str = "veryfast") -> Path:
    """Write the benchmark video (cached: an existing file is reused)."""
    import av

    if path.exists():
        return path
    w, h = size
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(7)
    pan = 8 if content == "scenes" else 0
    margin = pan * int(scene_s * fps) + 1
    tmp = path.with_suffix(".part.mp4")
    out = av.open(str(tmp), "w")
    vs = out.add_stream("libx264", rate=fps)
    vs.width, vs.height, vs.pix_fmt = w, h, "yuv420p"
    vs.codec_context.gop_size = int(gop_s * fps)
    vs.options = {"preset": preset, "crf": "23", "keyint_min": str(int(gop_s * fps)), "sc_threshold": "0"}
    aus = out.add_stream("aac", rate=RATE)
    aus.layout = "stereo"
    sound = _soundtrack(seconds, scene_s, np.random.default_rng(8))
    scene, sent = None, 0
    for i in range(seconds * fps):
        if content == "static":
            if scene is None:
                scene = _landscape(rng, h, w)
            img = scene
        else:
            k = i % int(scene_s * fps)
            if k == 0:
                scene = _landscape(rng, h, w + margin)
                blobs = rng.integers(0, 256, (3, 5))
            img = np.ascontiguousarray(scene[:, k * pan : k * pan + w])
            for b in blobs:  # objects moving across the shot
                x, y = (int(b[0]) * 7 + k * (5 + int(b[1]) % 11)) % (w - 160), (int(b[1]) * 3 + k * 2) % (h - 160)
                img[y : y + 160, x : x + 160] = b[2:5]
        f = av.VideoFrame.from_ndarray(img, format="rgb24")
        f.pts, f.time_base = i, Fraction(1, fps)
        for p in vs.encode(f):
            out.mux(p)
        upto = int((i + 1) * RATE / fps)
        while sent + 1024 <= upto:
            af = av.AudioFrame.from_ndarray(next(sound), format="fltp", layout="stereo")
            af.sample_rate, af.pts = RATE, sent
            for p in aus.encode(af):
                out.mux(p)
            sent += 1024
    for s in (vs, aus):
        for p in s.encode():
            out.mux(p)
    out.close()
    tmp.rename(path)
    return path


# ---- timing -------------------------------------------------------------------------------------
def _cpu() -> float:
    t = os.times()
    return t.user + t.system  # this process, all threads (ONNX Runtime's and FFmpeg's too)


class Clock:
    """Wall and CPU seconds spent in wrapped callables, by name. A lone video's frames are embedded on a
    thread while they decode (``ingest.commit.WhileDecoding``), so those two pieces overlap: each one's wall
    time is its own, their sum can pass the run's (``overlapped_s`` says by how much), and a piece's CPU
    seconds are the process's during it (the other piece's work included), not additive."""

    def __init__(self) -> None:
        self.s: dict[str, float] = {}
        self.cpu: dict[str, float] = {}
        self.n: dict[str, int] = {}

    def wrap(self, name, fn, rows=lambda a: 0):
        def timed(*args, **kw):
            key = name(args) if callable(name) else name
            t0, c0 = time.perf_counter(), _cpu()
            try:
                return fn(*args, **kw)
            finally:
                self.s[key] = self.s.get(key, 0.0) + time.perf_counter() - t0
                self.cpu[key] = self.cpu.get(key, 0.0) + _cpu() - c0
                self.n[key] = self.n.get(key, 0) + rows(args)
        return timed


def _decode_kind(args) -> str:
    recipe = args[2] if len(args) > 2 else None
    return "decode_soundtrack" if recipe and recipe.get("kind") == "clap" else "decode_frames"


def clap_model() -> str:
    from bench_audio import laion_random

    return laion_random(DATA / "audio-models" / "laion-clap-random")


def index_one(video: Path, models: list[str], seconds: float, workers: int | None = None) -> dict:
    """Engine.index of a folder holding only ``video``, on a fresh store, pieces timed from inside."""
    import mmsearch.ingest.decode as decode
    from mmsearch import Engine

    clock = Clock()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "videos"
        folder.mkdir()
        os.link(video, folder / video.name) if video.stat().st_dev == folder.stat().st_dev else shutil.copy(video, folder)
        with Engine.open(Path(tmp) / "store", model=models, workers=workers) as eng:
            t0 = time.perf_counter()
            encs = [eng.encoder(m) for m in models]  # loads (exports once per machine): not in the rate
            load_s = time.perf_counter() - t0
            for enc, tag in zip(encs, ("clip", "clap")):
                for name in ("embed_image_batch", "embed_audio_batch", "embed_texts"):
                    if hasattr(enc, name):
                        key = name if name != "embed_texts" else f"embed_texts_{tag}"
                        setattr(enc, name, clock.wrap(key, getattr(enc, name), rows=lambda a: len(a[0])))
            real_load = decode.load
            decode.load = clock.wrap(_decode_kind, real_load)
            try:
                t0, c0 = time.perf_counter(), _cpu()
                report = eng.index([folder])
                wall, cpu = time.perf_counter() - t0, _cpu() - c0
            finally:
                decode.load = real_load
            assert report.ok and report.indexed == 1, (report.errors, report.indexed)
            described = {m: e.describe() if hasattr(e, "describe") else None for m, e in zip(models, encs)}
    parts = {k: round(v, 2) for k, v in clock.s.items()}
    rest = wall - sum(clock.s.values())
    parts["other" if rest >= 0 else "overlapped_s"] = round(abs(rest), 2)
    cpus = {k: round(v, 2) for k, v in clock.cpu.items()}
    calib = sum(v for k, v in clock.s.items() if k.startswith("embed_texts"))
    return {"wall_s": round(wall, 2), "x_realtime": round(seconds / wall, 2), "model_load_s": round(load_s, 1),
            "x_realtime_without_text_calibration": round(seconds / (wall - calib), 2),
            "cpu_s": round(cpu, 2), "x_realtime_2core_cpu_bound": round(seconds / (cpu / 2), 2),
            "seconds_s": parts, "share": {k: round(v / wall, 3) for k, v in parts.items() if k != "overlapped_s"},
            "cpu_seconds": cpus,
            "inputs": {"frames": clock.n.get("embed_image_batch", 0), "sound_windows": clock.n.get("embed_audio_batch", 0),
                       "texts": {k: v for k, v in clock.n.items() if k.startswith("embed_texts")}},
            "per_input_ms": {"frame": _ms(clock, "embed_image_batch"), "sound_window": _ms(clock, "embed_audio_batch")},
            "models": described}


def _ms(clock: Clock, name: str):
    n = clock.n.get(name, 0)
    return round(1000 * clock.s[name] / n, 1) if n else None


def long_rss(hours: float, models: list[str]) -> dict:
    """Index an ``hours``-long 320x240 video in a child process; its peak RSS and time."""
    video = make_video(DATA / "videos" / f"long-{hours:g}h-320x240.mp4", int(hours * 3600), 1, "scenes",
                       size=(320, 240), fps=10, scene_s=6.0, preset="ultrafast")
    code = (f"import json, resource, sys; sys.path.insert(0, {str(HERE)!r}); sys.path.insert(0, {str(HERE.parent)!r})\n"
            "from bench_video_ingest import index_one\n"
            f"r = index_one(__import__('pathlib').Path({str(video)!r}), {models!r}, {hours * 3600})\n"
            "r['peak_rss_mb'] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024\n"
            "r['peak_rss_children_mb'] = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024\n"
            "print('RESULT', json.dumps(r))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env={**os.environ})
    line = next((l for l in out.stdout.splitlines() if l.startswith("RESULT ")), None)
    if line is None:
        return {"error": out.stderr[-2000:]}
    r = json.loads(line[7:])
    r.pop("models", None)
    return {"video": video.name, "size_mb": round(video.stat().st_size / 1e6, 1), **r}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=int, default=120)
    ap.add_argument("--cases", default="scenes-gop1,scenes-gop3,static-gop1")
    ap.add_argument("--workers", type=int, default=None)
    ap.add_argument("--long-hours", type=float, default=0.0)
    ap.add_argument("--every", type=float, default=None, help="seconds between sampled frames (the video_every "
                    "setting; default: the store's default, 1)")
    args = ap.parse_args(argv)
    if args.every is not None:  # as a user sets it: the settings' environment layer
        os.environ["MMSEARCH_VIDEO_EVERY"] = str(args.every)
    models = [IMAGE_MODEL, clap_model()]
    load = os.getloadavg()
    results: dict = {"command": " ".join(["python", "benchmarks/bench_video_ingest.py", *(argv or sys.argv[1:])]),
                     "load_average_at_start": [round(x, 2) for x in load], "models": models, "cases": {},
                     "video_every": args.every or 1.0}
    print(f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    for case in args.cases.split(","):
        content, gop = case.split("-gop")
        t0 = time.perf_counter()
        video = make_video(DATA / "videos" / f"{content}-{args.seconds}s-gop{gop}-1080p30.mp4", args.seconds,
                           float(gop), content)
        made = time.perf_counter() - t0
        r = index_one(video, models, args.seconds, args.workers)
        r["video"] = {"file": video.name, "size_mb": round(video.stat().st_size / 1e6, 1), "seconds": args.seconds,
                      "keyframe_s": float(gop), "content": content}
        results["cases"][case] = r
        print(f"{case}: {r['x_realtime']}x real time ({r['wall_s']} s for {args.seconds} s; "
              f"{r['x_realtime_without_text_calibration']}x without the one-time text calibration; "
              f"{r['x_realtime_2core_cpu_bound']}x if its {r['cpu_s']} CPU-s ran on 2 idle cores; video "
              f"{r['video']['size_mb']} MB, made in {made:.0f} s)\n  wall s {r['seconds_s']}\n  cpu s {r['cpu_seconds']}"
              f"\n  inputs {r['inputs']} per input ms {r['per_input_ms']}", flush=True)
    if args.long_hours:
        results["long"] = long_rss(args.long_hours, models)
        print("long:", results["long"], flush=True)
    results["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    print("wrote", save("video-ingest", results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
