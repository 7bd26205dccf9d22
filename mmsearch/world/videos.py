"""Procedural "videos world": shapes-world pictures on screen, tones-world sounds on the soundtrack.

A video is a sequence of :class:`Shot` s (a few seconds of one shapes-world picture, drawn by
:func:`mmsearch.world.shapes.render_scene`, so ``builtin:shapes`` recognises it) with optional
:class:`Cue` s (a tones-world sound playing from ``start`` to ``end`` seconds, silence elsewhere, so
``builtin:tones`` recognises it). :func:`write_video` encodes it and returns its :class:`Truth`:
which caption is on screen when and where each sound plays. Example::

    from mmsearch.world import videos as V
    truth = V.write_video("holiday.mp4", [V.Shot("circle", "red", 3), V.Shot("square", "blue", 3)],
                          cues=[V.Cue("sweep-up", 3.0, 5.0)], fps=10, size=(128, 96))
    truth.caption_at(4.0)   # 'a blue square'
    truth.sound_at(4.0)     # 'a rising whistle'

**Frames.** A shot's picture is drawn square, at the frame's shorter side, and centred; the margins
repeat its edge pixels. open_clip's preprocessing (resize the shorter side, centre crop) then sees
the shapes world's own square picture. ``rotate_cw`` (MP4/MOV) stores the frames turned the other
way and writes a display matrix, as a phone held upright does: players and
:mod:`mmsearch.ingest.video` show the picture upright at ``size``.

**Formats.** The container comes from the file's suffix (:data:`CONTAINERS`: its default video and
audio encoders); any encoder this PyAV's FFmpeg has can be asked for. A missing one raises
:class:`MissingEncoder` naming it; :func:`has_encoder` tells in advance.

Light: numpy, Pillow and PyAV (no torch). :func:`encode` is the low-level writer (any frames, frame
times, a soundtrack) that the test kit uses too.
"""
from __future__ import annotations

import json
import math
import random
import struct
from dataclasses import asdict, dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from mmsearch.world import shapes as W
from mmsearch.world import tones as T
from mmsearch.world.synth import SAMPLE_RATE, synth

__all__ = ["CONTAINERS", "MissingEncoder", "Shot", "Cue", "Truth", "has_encoder", "picture", "soundtrack",
           "write_video", "encode", "set_rotation"]

#: suffix → (default video encoder, default audio encoder)
CONTAINERS: dict[str, tuple[str, str]] = {
    ".mp4": ("libx264", "aac"),
    ".mov": ("libx264", "aac"),
    ".mkv": ("libx264", "aac"),
    ".webm": ("libvpx-vp9", "libopus"),
    ".avi": ("mpeg4", "pcm_s16le"),  # not MP3: LAME low-passes 16 kHz sound (the tones model loses high sweeps)
}
_ROTATABLE = (".mp4", ".mov", ".m4v", ".3gp")  # display matrix written into the ISO-BMFF track header
_TIME_BASE = Fraction(1, 1000)
PEAK_DB = -6.0  # level of every cue's sound (dBFS)


class MissingEncoder(RuntimeError):
    """The installed PyAV's FFmpeg has no encoder of that name."""


@dataclass(frozen=True)
class Shot:
    """A few seconds of one shapes-world picture (see :func:`mmsearch.world.shapes.render_scene`)."""

    shape: str
    colour: str
    seconds: float
    size: str = "large"
    position: str = "center"
    background: str = "light"
    seed: int = 0

    @property
    def caption(self) -> str:
        """``"a blue square"``: the prompt the shapes world and its tests use."""
        return W.single_caption(self.colour, self.shape)


@dataclass(frozen=True)
class Cue:
    """A tones-world sound of class ``cls`` (e.g. ``"sweep-up"``) from ``start`` to ``end`` seconds."""

    cls: str
    start: float
    end: float
    seed: int = 0

    @property
    def caption(self) -> str:
        """The class's canonical prompt, e.g. ``"a rising whistle"``."""
        return T.get_class(self.cls).prompt


@dataclass(frozen=True)
class Span:
    start: float
    end: float
    caption: str
    label: str  # "red circle" for a shot, the tones class for a sound


@dataclass
class Truth:
    """What a written video holds: on screen when, heard when (seconds), and how it was encoded."""

    file: str
    duration: float
    fps: float
    size: tuple[int, int]  # (width, height) as displayed
    rotation: int  # degrees clockwise the stored frames are turned for display
    codec: str
    audio_codec: str | None
    shots: list[Span] = field(default_factory=list)
    sounds: list[Span] = field(default_factory=list)

    def caption_at(self, t: float) -> str | None:
        """The caption of the shot on screen at ``t`` seconds (None past the end)."""
        return next((s.caption for s in self.shots if s.start <= t < s.end), None)

    def sound_at(self, t: float) -> str | None:
        """The caption of the sound playing at ``t`` seconds (None: silence)."""
        return next((s.caption for s in self.sounds if s.start <= t < s.end), None)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=1)


def has_encoder(name: str) -> bool:
    """Whether this PyAV's FFmpeg can encode with ``name`` (``av.codecs_available`` also lists decoders)."""
    import av

    try:
        av.codec.Codec(name, "w")
        return True
    except Exception:  # UnknownCodecError, or a decoder-only name
        return False


def _need(name: str) -> None:
    if not has_encoder(name):
        raise MissingEncoder(f"this FFmpeg (PyAV) has no {name!r} encoder; pick another codec or install "
                             f"a PyAV/FFmpeg build with it")


# ---- pictures and sounds ---------------------------------------------------------------------------
def picture(shot: Shot, size: tuple[int, int]) -> np.ndarray:
    """The shot's (height, width, 3) uint8 frame: the shapes scene drawn square at the shorter side,
    centred, its edge pixels repeated into the margins."""
    w, h = size
    side = min(w, h)
    scene = W.render_scene([{"shape": shot.shape, "colour": shot.colour, "size": shot.size,
                             "position": shot.position}], size=side, seed=shot.seed, background=shot.background)
    arr = np.asarray(scene.image, dtype=np.uint8)
    top, left = (h - side) // 2, (w - side) // 2
    return np.pad(arr, ((top, h - side - top), (left, w - side - left), (0, 0)), mode="edge")


def soundtrack(cues: Sequence[Cue], duration: float, rate: int = SAMPLE_RATE) -> np.ndarray:
    """Mono float32 samples: silence, with each cue's sound in its stretch. A cue longer than the
    tones world's longest clip (2 s) is filled with several clips of its class, end to end."""
    if rate != SAMPLE_RATE:
        raise ValueError(f"the tones world is synthesised at {SAMPLE_RATE} Hz")
    out = np.zeros(int(round(duration * rate)), np.float32)
    for k, cue in enumerate(cues):
        T.get_class(cue.cls)
        a, b = int(round(cue.start * rate)), int(round(min(cue.end, duration) * rate))
        if not 0 <= a < b:
            raise ValueError(f"cue {cue!r} is empty or outside the video (0 to {duration} s)")
        pieces = max(1, math.ceil((b - a) / (T.MAX_DURATION * rate)))
        edges = np.linspace(a, b, pieces + 1).round().astype(int)
        for i, (s, e) in enumerate(zip(edges[:-1], edges[1:])):
            rng = random.Random(f"videos:{cue.cls}:{cue.seed}:{k}:{i}")
            nprng = np.random.default_rng([cue.seed & 0xFFFFFFFF, k, i, 21])
            x, _ = synth(cue.cls, int(e - s), rng, nprng)
            out[s:e] += (x / (np.max(np.abs(x)) + 1e-12) * 10 ** (PEAK_DB / 20)).astype(np.float32)
    return np.clip(out, -1.0, 1.0)


def _spans(shots: Sequence[Shot], cues: Sequence[Cue], duration: float) -> tuple[list[Span], list[Span]]:
    bounds = np.concatenate([[0.0], np.cumsum([s.seconds for s in shots])])
    seen = [Span(float(a), float(b), s.caption, f"{s.colour} {s.shape}")
            for s, a, b in zip(shots, bounds[:-1], bounds[1:])]
    heard = [Span(float(c.start), float(min(c.end, duration)), c.caption, c.cls) for c in cues]
    return seen, sorted(heard, key=lambda s: s.start)


def write_video(path: str | Path, shots: Sequence[Shot], *, cues: Sequence[Cue] = (), fps: int = 10,
                size: tuple[int, int] = (128, 96), rotate_cw: int = 0, codec: str | None = None,
                audio_codec: str | None = None, gop: int | None = None, audio: bool | None = None) -> Truth:
    """Write a video of ``shots`` (with ``cues`` on its soundtrack) and return its :class:`Truth`.

    ``size``: (width, height) as displayed (even numbers); ``rotate_cw`` (0/90/180/270; MP4/MOV only):
    the display rotation a phone writes; ``codec``/``audio_codec``: encoders (default: the container's,
    :data:`CONTAINERS`); ``audio``: write a soundtrack (default: when there are cues; ``True`` with no
    cues gives a silent one).
    """
    path = Path(path)
    if not shots or any(s.seconds <= 0 for s in shots):
        raise ValueError("a video needs at least one shot, each longer than 0 s")
    w, h = size
    if w % 2 or h % 2 or w < 16 or h < 16:
        raise ValueError(f"size {size} must be even numbers of at least 16 (4:2:0 chroma)")
    video_default, audio_default = CONTAINERS.get(path.suffix.lower(), (None, None))
    codec = codec or video_default
    if codec is None:
        raise ValueError(f"no default codec for {path.suffix!r} (known: {', '.join(CONTAINERS)}); pass codec=")
    rotate_cw %= 360
    turns = _turns(rotate_cw, path)
    duration = float(sum(s.seconds for s in shots))
    with_audio = bool(cues) if audio is None else audio
    sound = (soundtrack(cues, duration), SAMPLE_RATE) if with_audio else None
    audio_codec = (audio_codec or audio_default or "aac") if with_audio else None
    stored = [(s.seconds, np.ascontiguousarray(np.rot90(picture(s, size), k=turns))) for s in shots]
    encode(path, stored, fps=fps, codec=codec, gop=gop, sound=sound, audio_codec=audio_codec, rotate_cw=rotate_cw)
    seen, heard = _spans(shots, cues, duration)
    return Truth(path.name, duration, float(fps), (w, h), rotate_cw, codec, audio_codec, seen, heard)


def _turns(rotate_cw: int, path: Path) -> int:
    if rotate_cw not in (0, 90, 180, 270):
        raise ValueError(f"rotate_cw must be 0, 90, 180 or 270, not {rotate_cw}")
    if rotate_cw and path.suffix.lower() not in _ROTATABLE:
        raise ValueError(f"rotation is written only into MP4/MOV files, not {path.suffix!r}")
    return rotate_cw // 90  # np.rot90 turns counter-clockwise: the display turns it back


# ---- encoding --------------------------------------------------------------------------------------
def encode(path: str | Path, scenes: Sequence[tuple[float, np.ndarray]], *, fps: int = 10,
           codec: str = "libx264", pix_fmt: str = "yuv420p", gop: int | None = None,
           times: Sequence[float] | None = None, sound: tuple[np.ndarray, int] | None = None,
           audio_codec: str = "aac", rotate_cw: int = 0) -> Path:
    """Encode ``scenes`` ((seconds, (H, W, 3) uint8 frame as stored) each) at ``fps`` with PyAV.

    ``times``: explicit frame times (variable frame rate; each shows the scene its time falls in);
    ``gop``: frames between keyframes; ``sound``: (mono float32 samples, rate) encoded with
    ``audio_codec``; ``rotate_cw``: a display matrix written afterwards (MP4/MOV, :func:`set_rotation`).
    """
    import av

    path = Path(path)
    _need(codec)
    if sound is not None:
        _need(audio_codec)
    bounds = np.cumsum([s for s, _ in scenes])
    # constant frame rate: one tick a frame (AVI counts ticks as frames); explicit times: milliseconds
    tb = Fraction(1, fps) if times is None else _TIME_BASE
    if times is None:
        times = [i / fps for i in range(int(round(bounds[-1] * fps)))]
    h, w = scenes[0][1].shape[:2]
    # bitexact: no random Matroska UIDs or encoder version tags, so a rerun writes the same bytes
    with av.open(str(path), "w", container_options={"fflags": "+bitexact"}) as out:
        stream = out.add_stream(codec, rate=fps)
        stream.width, stream.height, stream.pix_fmt = w, h, pix_fmt
        stream.time_base = tb
        if gop is not None:
            stream.codec_context.gop_size = gop
        audio = _audio_stream(out, audio_codec, sound[1]) if sound is not None else None
        last = len(scenes) - 1
        for t in times:
            pixels = scenes[min(int(np.searchsorted(bounds, t, side="right")), last)][1]
            frame = av.VideoFrame.from_ndarray(pixels, format="rgb24")
            frame.pts, frame.time_base = int(round(t / tb)), tb
            out.mux(stream.encode(frame))
        out.mux(stream.encode())
        if audio is not None:
            _encode_sound(out, audio, *sound)
    if rotate_cw % 360:
        set_rotation(path, rotate_cw)
    return path


def _audio_stream(out, codec: str, rate: int):
    stream = out.add_stream(codec, rate=rate)
    stream.layout = "mono"
    if codec in ("aac", "libopus", "opus", "libmp3lame", "mp3", "vorbis"):
        stream.bit_rate = 64000  # the tones model lost ~0.05 top-5 to libsndfile's Ogg quality; keep it high
    return stream


def _encode_sound(out, stream, samples: np.ndarray, rate: int) -> None:
    import av

    x = np.asarray(samples, np.float32).reshape(-1)
    for start in range(0, len(x), 1024):
        af = av.AudioFrame.from_ndarray(x[None, start : start + 1024].copy(), format="fltp", layout="mono")
        af.sample_rate, af.pts, af.time_base = rate, start, Fraction(1, rate)
        out.mux(stream.encode(af))
    out.mux(stream.encode())


def set_rotation(path: str | Path, degrees_cw: int) -> None:
    """Write a display matrix (turn ``degrees_cw`` clockwise to show) into the first track header of an
    MP4/MOV, as phones and ffmpeg's ``-display_rotation`` do. The boxes are walked (moov/trak/tkhd),
    so bytes that happen to spell ``tkhd`` inside the media data are never touched."""
    path = Path(path)
    cos, sin = {0: (1, 0), 90: (0, 1), 180: (-1, 0), 270: (0, -1)}[degrees_cw % 360]
    data = bytearray(path.read_bytes())
    at = _box(data, [b"moov", b"trak", b"tkhd"])
    version = data[at + 8]
    matrix = at + 8 + 4 + (32 if version == 1 else 20) + 16  # header, version/flags, times+ids, reserved..volume
    m = [cos * 65536, sin * 65536, 0, -sin * 65536, cos * 65536, 0, 0, 0, 1 << 30]
    data[matrix : matrix + 36] = struct.pack(">9i", *m)
    path.write_bytes(bytes(data))


def _box(data: bytearray, route: list[bytes], start: int = 0, end: int | None = None) -> int:
    """Offset of the box at ``route`` (first match at each level) inside ``data[start:end]``."""
    end = len(data) if end is None else end
    at = start
    while at + 8 <= end:
        size, kind = struct.unpack(">I4s", data[at : at + 8])
        head = 8
        if size == 1:
            size, head = struct.unpack(">Q", data[at + 8 : at + 16])[0], 16
        elif size == 0:
            size = end - at
        if size < head:
            break
        if kind == route[0]:
            return at if len(route) == 1 else _box(data, route[1:], at + head, at + size)
        at += size
    raise ValueError(f"no {b'/'.join(route).decode()} box: not an MP4/MOV file")


# ---- the bundled demo videos (samples/videos) ------------------------------------------------------
#: file name → (shots, cues, write_video options). Ground truth: ``truth.json`` beside them.
SAMPLES: dict[str, tuple[tuple[Shot, ...], tuple[Cue, ...], dict[str, Any]]] = {
    "holiday.mp4": ((Shot("circle", "red", 3.0, seed=1), Shot("square", "blue", 3.0, seed=2),
                     Shot("star", "yellow", 3.0, seed=3)),
                    (Cue("sweep-up", 4.0, 6.0, seed=1),), {"size": (128, 96)}),
    "garden.webm": ((Shot("triangle", "green", 3.0, background="dark", seed=4),
                     Shot("hexagon", "purple", 3.0, background="dark", seed=5),
                     Shot("cross", "pink", 4.0, background="dark", seed=6)),
                    (), {"size": (96, 64)}),
    "phone.mov": ((Shot("star", "orange", 4.0, background="gradient", seed=7),
                   Shot("circle", "cyan", 4.0, background="gradient", seed=8)),
                  (Cue("beeps-fast", 4.0, 6.0, seed=2),), {"size": (96, 128), "rotate_cw": 90}),
}

_README = """\
Demo videos of the procedural videos world (mmsearch/world/videos.py), written by
    python -m mmsearch.world.videos --samples samples/videos
Ground truth (seconds; the same in truth.json):
"""


def write_samples(out_dir: str | Path) -> list[Truth]:
    """Write the :data:`SAMPLES` videos, ``truth.json`` (their :class:`Truth` s) and a plain-text
    ``README`` (no extension: indexing the folder skips it) saying what is on screen and heard when."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    truths = [write_video(out / name, shots, cues=cues, **opts) for name, (shots, cues, opts) in SAMPLES.items()]
    (out / "truth.json").write_text(json.dumps([t.to_dict() for t in truths], indent=1) + "\n", encoding="utf-8")
    lines = [_README]
    for t in truths:
        sound = f"{t.audio_codec} sound" if t.audio_codec else "no sound"
        turn = f", stored turned: shown rotated {t.rotation}° clockwise" if t.rotation else ""
        lines.append(f"{t.file}  ({t.size[0]}x{t.size[1]}, {t.fps:g} fps, {t.codec}, {sound}{turn})\n")
        lines += [f"  {s.start:4.1f}-{s.end:4.1f} s  on screen: {s.caption}\n" for s in t.shots]
        lines += [f"  {s.start:4.1f}-{s.end:4.1f} s  heard:     {s.caption}\n" for s in t.sounds]
    (out / "README").write_text("".join(lines), encoding="utf-8")
    return truths


def main(argv: Sequence[str] | None = None) -> int:
    import argparse

    ap = argparse.ArgumentParser(description="Write the bundled demo videos.")
    ap.add_argument("--samples", metavar="DIR", required=True, help="write the demo videos + truth.json to DIR")
    args = ap.parse_args(argv)
    truths = write_samples(args.samples)
    print(f"wrote {len(truths)} videos and truth.json to {args.samples}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
