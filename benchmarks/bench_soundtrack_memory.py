"""Peak memory of turning a long soundtrack into CLAP's model input: decoded whole then cut into windows
(``decode_audio`` + ``windows``, how sounds and soundtracks were read before) vs cut while it decodes
(``decode_windows``, what the product does now). Each way runs in a fresh process, and its peak resident
memory (``ru_maxrss``) less that process's baseline after the imports is reported.

The input is ``--seconds`` of 44.1 kHz stereo AAC in an .m4a (PyAV path, resampled to 48 kHz as a phone
video's soundtrack is), band-limited noise with a tone so the windows are not silence; the recipe is LAION
CLAP's (``ClapFeatureExtractor()`` defaults: 48 kHz, 10 s windows, 64 mels).

    python benchmarks/bench_soundtrack_memory.py --seconds 3600
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _common import save  # noqa: E402

CHILD = r"""
import resource, sys, time
import numpy as np
from transformers import ClapFeatureExtractor
from mmsearch.encoders.clap import audio_recipe
from mmsearch.ingest.audio import decode_audio, decode_windows, windows
recipe = audio_recipe(ClapFeatureExtractor())
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
t0 = time.perf_counter()
if sys.argv[2] == "whole":
    sound = decode_audio(sys.argv[1], recipe["sampling_rate"], 7200.0)
    feats, spans = windows(sound.samples, recipe)
else:
    sound = decode_windows(sys.argv[1], recipe, 7200.0)
    feats, spans = sound.features, sound.spans
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base, time.perf_counter() - t0, len(spans), feats[:, 0].nbytes)
"""


def _write(path: Path, seconds: float) -> None:
    import av
    import numpy as np

    rate, rng = 44100, np.random.default_rng(0)
    with av.open(str(path), "w") as out:
        stream = out.add_stream("aac", rate=rate, layout="stereo")
        block = rate * 10
        for s in range(0, int(seconds * rate), block):
            t = np.arange(s, s + block) / rate
            x = 0.2 * np.sin(2 * np.pi * 440 * t) + 0.05 * rng.standard_normal(block)
            frame = av.AudioFrame.from_ndarray(np.stack([x, x]).astype(np.float32), format="fltp", layout="stereo")
            frame.sample_rate = rate
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=3600.0)
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "soundtrack.m4a"
        t0 = time.perf_counter()
        _write(path, a.seconds)
        print(f"wrote {a.seconds:.0f} s in {time.perf_counter() - t0:.0f} s", flush=True)
        runs = {}
        for way in ("whole", "streamed"):
            done = subprocess.run([sys.executable, "-c", CHILD, str(path), way], capture_output=True, text=True,
                                  check=True, cwd=Path(__file__).resolve().parents[1])
            kb, secs, n, feat_bytes = done.stdout.split()
            runs[way] = {"peak_rss_above_baseline_bytes": int(kb) * 1024, "seconds": float(secs), "windows": int(n),
                         "feature_bytes": int(feat_bytes)}
            print(way, runs[way], flush=True)
    ratio = runs["whole"]["peak_rss_above_baseline_bytes"] / max(runs["streamed"]["peak_rss_above_baseline_bytes"], 1)
    print(f"streamed needs 1/{ratio:.1f} of the memory")
    print(save("soundtrack_memory", {"audio_seconds": a.seconds, "runs": runs, "whole_over_streamed": ratio,
                                     "self_rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}))


if __name__ == "__main__":
    main()
