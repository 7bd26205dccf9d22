"""Sound files → model inputs (mmsearch.ingest.audio, decode.load for audio, discover for audio), through
the public functions: every format and sample layout, mono mix-down, resampling, ClapFeatureExtractor
parity of the log-mel windows, window timestamps, truncation at max_seconds, bad input, bounded cost
of very long files, audio found by content, and workers that stay light."""

from __future__ import annotations

import hashlib
import os
import pickle
import struct
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np
import pytest

from mmsearch.ingest.audio import AUDIO_EXTENSIONS, decode_audio, sniff, windows
from mmsearch.ingest.decode import BadInput, load
from mmsearch.ingest.discover import classify, walk
from tests.kit import recipe_from_extractor, small_extractor, tone, write_sound, write_tone

RATE = 16000  # the small recipe's rate: what most tests decode to


@pytest.fixture(scope="module")
def small_fe():
    return small_extractor()


@pytest.fixture(scope="module")
def small_recipe(small_fe):
    return recipe_from_extractor(small_fe)


def _peak_hz(x: np.ndarray, rate: int) -> float:
    spec = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return float(np.argmax(spec) * rate / len(x))


def _walk(*roots) -> tuple[dict[str, str], dict[str, str]]:
    errors: dict[str, str] = {}
    found = {os.path.basename(c.path): c.modality for c in walk([str(r) for r in roots], errors.__setitem__)}
    return found, {os.path.basename(p): why for p, why in errors.items()}


# ---- formats, layouts, rates ------------------------------------------------------------------------
LOSSY = 0.12  # seconds a lossy codec's priming/padding may add
FORMATS = [  # name, file rate, channels, soundfile subtype, duration tolerance, sniffed by content
    ("pcm16.wav", 44100, 2, "PCM_16", 0, True),
    ("pcm24.wav", 48000, 1, "PCM_24", 0, True),
    ("float.wav", 22050, 6, "FLOAT", 0, True),
    ("u8.wav", 8000, 1, "PCM_U8", 0, True),
    ("pcm32.wav", 16000, 2, "PCM_32", 0, True),
    ("stereo.flac", 44100, 2, None, 0, True),
    ("six24.flac", 48000, 6, "PCM_24", 0, True),
    ("vorbis.ogg", 22050, 2, "VORBIS", 0, True),
    ("six.ogg", 48000, 6, "VORBIS", 0, True),
    ("mono48k.opus", 48000, 1, None, 0, True),
    ("stereo16k.opus", 16000, 2, None, 0, True),
    ("stereo.mp3", 44100, 2, None, 0, True),
    ("mono8k.mp3", 8000, 1, None, 0, True),
    ("mono22k.mp3", 22050, 1, None, 0, True),
    ("stereo.m4a", 44100, 2, None, LOSSY, True),
    ("six.m4a", 48000, 6, None, LOSSY, True),
    ("mono.aac", 22050, 1, None, LOSSY, True),
    ("mono.aiff", 8000, 1, None, 0, True),
    ("stereo.caf", 44100, 2, None, 0, True),
    ("stereo.wma", 22050, 2, None, LOSSY, True),
    ("stereo.mka", 16000, 2, None, LOSSY, False),  # Matroska: by extension only
]


@pytest.mark.parametrize("name, rate, channels, subtype, tol, sniffed", FORMATS, ids=[f[0] for f in FORMATS])
def test_every_format_decodes_to_mono_at_the_model_rate(tmp_path, name, rate, channels, subtype, tol, sniffed):
    path = write_tone(tmp_path / name, seconds=1.5, rate=rate, channels=channels, subtype=subtype)
    sound = decode_audio(str(path), RATE, 600)
    assert (sound.sample_rate, sound.channels, sound.truncated) == (rate, channels, False)
    assert abs(sound.duration - 1.5) <= tol + 1e-3, sound.duration
    assert sound.samples.dtype == np.float32 and sound.samples.ndim == 1
    assert abs(len(sound.samples) - sound.duration * RATE) <= 2
    assert abs(_peak_hz(sound.samples, RATE) - 440) < 2  # the tone keeps its pitch through decode and resampling
    rms = float(np.sqrt(np.mean(sound.samples[RATE // 10:-RATE // 10] ** 2)))
    assert 0.25 < rms < 0.4, rms  # a 0.5 sine in every channel: the mean is that sine (a 5.1 AAC filters its LFE)
    assert classify(str(path)) == "audio" and sniff(path.read_bytes()[:4096]) is sniffed


@pytest.mark.parametrize("src, dst", [(8000, 48000), (22050, 16000), (44100, 16000), (48000, 16000), (44100, 48000)])
def test_resampling_keeps_pitch_and_length(tmp_path, src, dst):
    path = write_tone(tmp_path / "t.flac", seconds=2.0, rate=src, freq=440.0)
    sound = decode_audio(str(path), dst, 600)
    assert sound.sample_rate == src and abs(len(sound.samples) - 2 * dst) <= 2
    assert abs(_peak_hz(sound.samples, dst) - 440) < 1
    mid = sound.samples[dst // 4:-dst // 4]  # soxr HQ: the amplitude is kept, no aliasing, no ripple
    assert abs(np.sqrt(np.mean(mid ** 2)) - 0.5 / np.sqrt(2)) < 0.005


@pytest.mark.parametrize("channels", [2, 6])
def test_mixdown_is_the_mean_of_the_channels(tmp_path, channels):
    rng = np.random.default_rng(channels)
    x = rng.uniform(-0.5, 0.5, size=(8000, channels)).astype(np.float32)
    path = write_sound(tmp_path / "mix.wav", x, 8000, subtype="FLOAT")
    sound = decode_audio(str(path), 8000, 600)  # same rate: no resampling
    np.testing.assert_allclose(sound.samples, x.mean(axis=1), atol=1e-6)


def test_pyav_path_mixes_down_too(tmp_path):
    left = tone(1.0, 44100, 440.0, 0.5)
    path = write_sound(tmp_path / "left.m4a", np.stack([left, np.zeros_like(left)], 1), 44100)
    sound = decode_audio(str(path), 44100, 600)
    assert sound.channels == 2
    rms = np.sqrt(np.mean(sound.samples[4410:-4410] ** 2))
    assert abs(rms - 0.25 / np.sqrt(2)) < 0.01  # half the left channel


# ---- the model input ----------------------------------------------------------------------------------
def _extractors():
    from transformers import ClapFeatureExtractor

    return {
        "small-repeatpad": small_extractor(),
        "small-repeat": small_extractor(padding="repeat"),
        "small-pad": small_extractor(padding="pad"),
        "laion-fusion": ClapFeatureExtractor(),
        "laion-rand_trunc": ClapFeatureExtractor(truncation="rand_trunc"),
    }


@pytest.fixture(scope="module")
def extractors():
    return _extractors()


@pytest.mark.parametrize("which", ["small-repeatpad", "small-repeat", "small-pad", "laion-fusion", "laion-rand_trunc"])
@pytest.mark.parametrize("seconds", [0.37, 1.0, "window", "window-1"])
def test_features_equal_the_clap_feature_extractor(tmp_path, extractors, which, seconds):
    fe = extractors[which]
    recipe = recipe_from_extractor(fe)
    rate, window = recipe["sampling_rate"], recipe["window"]
    n = {"window": window, "window-1": window - 1}.get(seconds) or int(seconds * rate)
    rng = np.random.default_rng(n)
    x = 0.3 * tone(n / rate, 22050, 440.0) + rng.normal(0, 0.05, int(round(n / rate * 22050))).astype(np.float32)
    path = write_sound(tmp_path / "clip.wav", x, 22050, subtype="FLOAT")
    samples = decode_audio(str(path), rate, 600).samples[:window]  # the same resampled samples for both
    ours, spans = windows(samples, recipe)
    ref = fe(samples, sampling_rate=rate, return_tensors="np")["input_features"]
    assert ours.dtype == np.float32 and ours.shape == ref.shape
    assert float(np.abs(ours - ref).max()) < 1e-3
    assert spans == [(0.0, len(samples) / rate)]


def test_silence_is_a_sound(tmp_path, small_recipe):
    path = write_sound(tmp_path / "quiet.wav", np.zeros(RATE, np.float32), RATE)
    got = load(str(path), "audio", small_recipe)
    assert got.error is None and got.duration == 1.0
    assert np.isfinite(got.windows).all() and float(got.windows.max()) == -100.0  # the mel floor, 10·log10(1e-10)


def test_a_long_file_is_cut_into_timestamped_windows(tmp_path, small_fe, small_recipe):
    x = 0.3 * tone(7.3, RATE, 440.0) + 0.2 * tone(7.3, RATE, 1500.0) * (np.arange(int(7.3 * RATE)) > 3 * RATE)
    path = write_sound(tmp_path / "long.wav", x, RATE, subtype="FLOAT")
    got = load(str(path), "audio", small_recipe)
    assert got.error is None
    assert (got.duration, got.sample_rate, got.channels, got.truncated) == (7.3, RATE, 1, False)
    assert got.spans == [(0.0, 2.0), (2.0, 4.0), (4.0, 6.0), (6.0, 7.3)]
    assert got.windows.shape == (4, 1, 201, 64)
    for w, (start, end) in zip(got.windows, got.spans):
        ref = small_fe(x[int(start * RATE):int(end * RATE)], sampling_rate=RATE, return_tensors="np")["input_features"][0]
        assert float(np.abs(w - ref).max()) < 1e-3
    overlapping = {**small_recipe, "hop": RATE}  # windows every second
    _, spans = windows(x, overlapping)
    assert spans == [(float(s), float(s + 2)) for s in range(6)] + [(6.0, 7.3)]


@pytest.mark.parametrize("name", ["long.flac", "long.m4a"])  # libsndfile and PyAV
def test_max_seconds_truncates_and_keeps_the_full_duration(tmp_path, small_recipe, name):
    path = write_tone(tmp_path / name, seconds=7.3, rate=22050, channels=2)
    got = load(str(path), "audio", small_recipe, {"max_audio_seconds": 3})
    assert got.error is None and got.truncated
    assert abs(got.duration - 7.3) < LOSSY
    assert got.spans == [(0.0, 2.0), (2.0, 3.0)]
    sound = decode_audio(str(path), RATE, 3)
    assert sound.truncated and len(sound.samples) == pytest.approx(3 * RATE, abs=2)


def test_fusion_windows_share_one_channel_and_pickle_compactly(tmp_path, extractors):
    recipe = recipe_from_extractor(extractors["laion-fusion"])
    path = write_tone(tmp_path / "t.wav", seconds=12.0, rate=48000)
    got = load(str(path), "audio", recipe)
    assert got.windows.shape == (2, 4, 1001, 64) and got.windows.strides[1] == 0  # 4 views of one mel
    blob = pickle.dumps(got)
    assert len(blob) < 1.2 * 2 * 1001 * 64 * 4  # one channel travels
    back = pickle.loads(blob)
    np.testing.assert_array_equal(back.windows, got.windows)
    assert back.spans == [(0.0, 10.0), (10.0, 12.0)] and back.duration == 12.0


# ---- bad input ----------------------------------------------------------------------------------------
def _wav(tag: int, data: bytes, rate: int = 8000, claim: int | None = None) -> bytes:
    fmt = struct.pack("<HHIIHH", tag, 1, rate, rate * 2, 2, 16)
    body = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt + b"data" + struct.pack("<I", len(data) if claim is None else claim) + data
    return b"RIFF" + struct.pack("<I", len(body)) + body


def _video_only(path: Path) -> Path:
    import av

    with av.open(str(path), "w", format="mp4") as out:
        stream = out.add_stream("mpeg4", rate=10)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        for i in range(5):
            frame = av.VideoFrame.from_ndarray(np.full((48, 64, 3), i * 40, np.uint8), format="rgb24")
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return path


def _cut(path: Path, keep: float | int) -> Path:
    data = path.read_bytes()
    n = keep if isinstance(keep, int) else int(len(data) * keep)
    path.write_bytes(data[:n])
    return path


BAD = {  # name: (make the file in folder d, what the message says)
    "zero.wav": (lambda d: (d / "zero.wav").write_bytes(b""), "empty file (0 bytes)"),
    "header-cut.wav": (lambda d: _cut(write_tone(d / "header-cut.wav"), 30), "truncated or corrupt audio"),
    "header-only.flac": (lambda d: _cut(write_tone(d / "header-only.flac"), 200), "truncated or corrupt audio"),
    "no-moov.m4a": (lambda d: _cut(write_tone(d / "no-moov.m4a", 3.0), 0.5), "truncated or corrupt audio"),
    "promised.wav": (lambda d: (d / "promised.wav").write_bytes(_wav(1, b"", claim=96000)), "truncated or corrupt audio"),
    "text.wav": (lambda d: (d / "text.wav").write_text("hello, this is text\n" * 20), "not a recognised audio file"),
    "text.mp3": (lambda d: (d / "text.mp3").write_text("hello, this is text\n" * 20), "not a recognised audio file"),
    "text.flac": (lambda d: (d / "text.flac").write_text("hello, this is text\n" * 20), "not a recognised audio file"),
    "picture.wav": (lambda d: (d / "picture.wav").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(300)), "not a recognised audio file"),
    "codec.wav": (lambda d: (d / "codec.wav").write_bytes(_wav(0xABCD, b"\x01\x02" * 8000)),
                  "unsupported audio codec (WAV format tag 0xabcd)"),
    "video.mp4": (lambda d: _video_only(d / "video.mp4"), "no audio stream (the mov,mp4,m4a,3gp,3g2,mj2 file holds only video)"),
    "video.m4a": (lambda d: _video_only(d / "video.m4a"), "no audio stream"),
    "empty-data.wav": (lambda d: (d / "empty-data.wav").write_bytes(_wav(1, b"")), "zero duration"),
}


@pytest.mark.parametrize("name", list(BAD))
def test_bad_input_says_what_is_wrong(tmp_path, small_recipe, name):
    make, why = BAD[name]
    make(tmp_path)
    path = str(tmp_path / name)
    with pytest.raises(BadInput) as err:
        decode_audio(path, RATE, 600)
    assert why in str(err.value)
    got = load(path, "audio", small_recipe)
    assert got.error == str(err.value) and got.windows is None and got.spans is None
    assert got.sha256 == hashlib.sha256(Path(path).read_bytes()).hexdigest()  # hashed before decoding
    hashed = load(path, "audio", None, decode=False)
    assert hashed.error is None  # the hashing pass reads, it does not decode


@pytest.mark.parametrize("name, keep", [("cut.wav", 0.5), ("cut.flac", 0.5), ("cut.mp3", 0.5), ("cut.aac", 0.5),
                                        ("cut.opus", 0.6)])
def test_a_cut_file_decodes_what_is_there(tmp_path, name, keep):
    path = _cut(write_tone(tmp_path / name, seconds=4.0, rate=16000), keep)
    sound = decode_audio(str(path), RATE, 600)
    assert 0.3 * 4 < sound.duration < 0.8 * 4 and not sound.truncated
    assert abs(_peak_hz(sound.samples, RATE) - 440) < 2


def test_a_two_hour_file_costs_what_max_seconds_cost(tmp_path, small_recipe):
    import soundfile as sf

    path = tmp_path / "two-hours.flac"
    rate = 8000
    minute = np.zeros(60 * rate, np.float32)
    minute[::997] = 1 / 32768  # near-silence: one LSB here and there
    with sf.SoundFile(str(path), "w", rate, 1, subtype="PCM_16") as f:
        for _ in range(120):
            f.write(minute)
    tracemalloc.start()
    try:
        t0 = time.perf_counter()
        sound = decode_audio(str(path), RATE, 30)
        took = time.perf_counter() - t0
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert sound.truncated and sound.duration == 7200.0 and len(sound.samples) == 30 * RATE
    assert took < 5 and peak < 16 << 20, (took, peak)  # 2 h at 16 kHz would be 460 MB of float32
    got = load(str(path), "audio", small_recipe, {"max_audio_seconds": 30})
    assert got.truncated and got.duration == 7200.0 and len(got.spans) == 15 and got.spans[-1] == (28.0, 30.0)
    assert got.windows.nbytes == 15 * 201 * 64 * 4


# ---- load(): the three modes and limits -----------------------------------------------------------------
def test_load_hashes_probes_or_featurises(tmp_path, small_recipe):
    path = write_tone(tmp_path / "t.ogg", seconds=3.0, rate=22050, channels=2, subtype="VORBIS")
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    hashed = load(str(path), "audio", None, decode=False)
    assert (hashed.sha256, hashed.size, hashed.duration, hashed.windows) == (digest, path.stat().st_size, None, None)
    meta = load(str(path), "audio", None)
    assert (meta.duration, meta.sample_rate, meta.channels, meta.windows) == (3.0, 22050, 2, None)
    full = load(str(path), "audio", small_recipe)
    assert full.sha256 == digest and full.windows.shape == (2, 1, 201, 64) and full.spans[-1] == (2.0, 3.0)
    too_big = load(str(path), "audio", small_recipe, {"max_audio_bytes": 100})
    assert "file too large" in too_big.error
    with pytest.raises(ValueError, match="kind 'clap'"):
        load(str(path), "audio", {"kind": "open_clip", "cfg": {}})


def test_hashing_streams_a_large_file(tmp_path):
    path = tmp_path / "big.wav"
    with open(path, "wb") as f:  # 64 MiB, mostly a hole
        f.write(_wav(1, b"\x00\x01" * 1000, claim=64 << 20))
        f.truncate(64 << 20)
    tracemalloc.start()
    try:
        got = load(str(path), "audio", None, decode=False)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert got.error is None and got.size == 64 << 20 and peak < 4 << 20


# ---- finding sounds ---------------------------------------------------------------------------------------
def _mpeg_frames(path: Path) -> bytes:
    data = path.read_bytes()
    if data[:3] == b"ID3":  # skip the tag: its size is a 28-bit syncsafe integer
        size = (data[6] << 21) | (data[7] << 14) | (data[8] << 7) | data[9]
        data = data[10 + size:]
    return data[:4096]


def test_sniff(tmp_path):
    write_tone(tmp_path / "a.mp3", 1.0, 44100)
    write_tone(tmp_path / "a.aac", 1.0, 22050)
    write_tone(tmp_path / "a.m4a", 1.0, 22050)
    frames = _mpeg_frames(tmp_path / "a.mp3")
    cases = {
        "wav": (write_tone(tmp_path / "a.wav").read_bytes(), True),
        "flac": (write_tone(tmp_path / "a.flac").read_bytes(), True),
        "ogg": (write_tone(tmp_path / "a.ogg").read_bytes(), True),
        "aiff": (write_tone(tmp_path / "a.aiff").read_bytes(), True),
        "mp3 frames": (frames, True),
        "id3": (b"ID3\x04\x00\x00\x00\x00\x00\x10" + bytes(100), True),
        "adts": ((tmp_path / "a.aac").read_bytes(), True),
        "m4a": ((tmp_path / "a.m4a").read_bytes(), True),
        "video mp4": (_video_only(tmp_path / "v.mp4").read_bytes(), False),
        "avi": (b"RIFF\x00\x10\x00\x00AVI LIST" + bytes(100), False),
        "ogg theora": (b"OggS\x00\x02" + bytes(22) + b"\x01\x2a\x80theora" + bytes(50), False),
        "one mpeg header then noise": (frames[:4] + bytes(range(256)) * 16, False),
        "text": (b"hello there, general kenobi\n" * 20, False),
        "png": (b"\x89PNG\r\n\x1a\n" + bytes(100), False),
        "jpeg": (b"\xff\xd8\xff\xe0\x00\x10JFIF" + bytes(100), False),
        "pdf": (b"%PDF-1.4\n" + bytes(100), False),
        "nothing": (b"", False),
    }
    for what, (head, want) in cases.items():
        assert sniff(head[:4096]) is want, what


def test_audio_is_found_by_extension_or_by_content(tmp_path):
    data = tmp_path / "data"
    write_tone(data / "song.wav")
    write_tone(data / "Loud.MP3")
    write_sound(data / "take-3", tone(), RATE, fmt="WAV")  # no extension: a recording
    write_sound(data / "dump.data", tone(), RATE, fmt="FLAC")  # an extension we do not know
    (data / "notes.bin").write_bytes(bytes(range(256)) * 4)
    (data / "blob").write_bytes(b"")
    (data / "drawing.svg").write_bytes(b"<svg/>")
    (data / "note.txt").write_text("a note")
    found, errors = _walk(data)
    assert found == {"song.wav": "audio", "Loud.MP3": "audio", "take-3": "audio", "dump.data": "audio", "note.txt": "text"}
    assert errors == {"drawing.svg": "unsupported image format .svg (convert it to JPEG or PNG to index it)"}
    assert {".wav", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".m4a", ".aac", ".aif", ".aiff", ".wma"} <= AUDIO_EXTENSIONS
    found, errors = _walk(data / "take-3", data / "notes.bin")  # roots that are files
    assert found == {"take-3": "audio"} and errors == {"notes.bin": "unsupported file type .bin"}


def test_a_read_error_while_sniffing_is_reported(tmp_path, monkeypatch):
    data = tmp_path / "data"
    secret = str(write_sound(data / "recording", tone(), RATE, fmt="WAV"))
    write_sound(data / "other", tone(), RATE, fmt="WAV")
    real_open = open

    def guarded_open(path, *a, **k):  # what a file without read permission does (tests may run as root)
        if os.fspath(path) == secret:
            raise PermissionError(13, "Permission denied", secret)
        return real_open(path, *a, **k)

    from mmsearch.ingest import sniff as sniff_mod

    monkeypatch.setattr(sniff_mod, "open", guarded_open, raising=False)
    found, errors = _walk(data)
    assert found == {"other": "audio"} and errors == {"recording": "permission denied"}


# ---- workers stay light -------------------------------------------------------------------------------
HEAVY = ("torch", "transformers", "open_clip", "torchvision", "onnxruntime", "faiss")


def test_loading_audio_imports_no_model_code(tmp_path, small_recipe):
    path = write_tone(tmp_path / "t.m4a", seconds=2.5, rate=44100, channels=2)
    (tmp_path / "recipe.pkl").write_bytes(pickle.dumps(small_recipe))
    code = ("import pickle, sys\nfrom mmsearch.ingest.decode import load\n"
            f"recipe = pickle.loads(open({str(tmp_path / 'recipe.pkl')!r}, 'rb').read())\n"
            f"got = load({str(path)!r}, 'audio', recipe)\n"
            "assert got.error is None and got.windows.shape == (2, 1, 201, 64), got.error\n"
            f"print(sorted(m for m in sys.modules if m.split('.')[0] in {HEAVY!r}))")
    root = Path(__file__).resolve().parents[2]
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=root, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize("seconds", [0.3, 2.0, 2.0 + 1 / RATE, 4.0, 7.3, 31.7])  # shorter, exactly, a sample over …
@pytest.mark.parametrize("name, rate, hop", [("t.wav", RATE, None), ("t.flac", 22050, RATE // 2), ("t.m4a", 44100, None)])
def test_windows_cut_while_decoding_equal_the_whole_sounds(tmp_path, small_recipe, seconds, name, rate, hop):
    from mmsearch.ingest.audio import decode_windows

    recipe = {**small_recipe, **({"hop": hop} if hop else {})}  # libsndfile and PyAV; resampled or not; overlapping
    path = write_tone(tmp_path / name, seconds=seconds, rate=rate, channels=2)
    whole = decode_audio(str(path), RATE, 20.0)
    feats, spans = windows(whole.samples, recipe)
    cut = decode_windows(str(path), recipe, 20.0)
    assert len(cut.samples) == 0 and cut.spans == spans and (cut.duration, cut.truncated) == (whole.duration, whole.truncated)
    np.testing.assert_array_equal(cut.features, feats)


def test_a_long_soundtrack_is_not_held_whole_while_it_is_cut(tmp_path, small_recipe):
    from mmsearch.ingest.audio import decode_windows

    path = write_tone(tmp_path / "long.flac", seconds=600.0, rate=RATE)
    tracemalloc.start()
    cut = decode_windows(str(path), small_recipe, 900.0)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    samples = 600 * RATE * 4  # what the whole sound would hold as float32 (38 MB)
    assert len(cut.spans) == 300  # its features (15 MB) are gathered, then stacked: twice that at most, plus blocks
    assert peak < 2 * cut.features.nbytes + samples // 8, (peak, cut.features.nbytes, samples)
