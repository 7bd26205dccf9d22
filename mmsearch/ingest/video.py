"""Frames of a video sampled by time, for the image tower: decoded once, in order, straight to the model's size.

Groundwork for video search (issue 13): this module reads; storing frames as segments, the
soundtrack's windows and moment queries build on it.

**By time, not by frame count.** A frame is kept when its timestamp (``pts × time_base``) reaches
the next sampling time, so variable frame rates and dropped frames cost nothing extra. The
interval is ``every`` seconds (default :data:`EVERY`, 1.5), widened for a long video so that at most ``max_frames``
are kept (a 2-hour film at the default cap: one frame every 12 s): the cost of any input is bounded.

**Skipping what is never sampled.** Seeking per sample is slower than decoding when keyframes are
far apart (benchmarks on 2 cores in ``shared/ANCHORS.md``: 2.5× real time at 8 s GOPs), so the
stream is decoded in order, and the codec is told to skip frames the samples never need: with
keyframes at least as often as the samples (probed from the first packets, no decode; in a clip
the probe sees whole, the stretch after the last keyframe must hold no sampling time), only
keyframes are decoded (``skip_frame="NONKEY"``, ~89× real time for 1080p H.264 here); otherwise
non-reference frames are skipped (``NONREF``: what later frames need is still decoded; a sample may
then land on the next reference frame, up to a B-frame run late).

**Straight to the model's size.** FFmpeg's scaler converts each kept frame to RGB at the size the
model's preprocessing resizes to (:func:`mmsearch.ingest.pixels.resize_size`; 10-bit and HDR
formats come out as 8-bit RGB), then the crop is taken as for photos. Rotation metadata (phone
videos) is applied: the frame is scaled to the rotated size and turned.

**A static shot costs one frame.** A frame nearly identical to the last kept one (mean absolute
difference of 16×16 colour thumbnails below :data:`SAME_SHOT`) is dropped; the kept frame then
stands for the whole stretch until the next kept one (:func:`spans`).

**One item, two towers.** A video is one content; an image space embeds its sampled frames, a sound
space its soundtrack's windows (:func:`load_video` prepares what the space's recipe asks for), each
kept as segments with their times. A file in a video container with no picture is a sound.

Light: PyAV and numpy only (decode workers import this, never torch).
"""

from __future__ import annotations

import itertools
import math
import re
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, Callable, Iterator

import numpy as np

from mmsearch.ingest.decode import BadInput, Loaded
from mmsearch.ingest.pixels import Plan, _crop_or_pad, plan, resize_size
from mmsearch.util import MOMENT_SLOTS

#: Files read as videos (by extension; ``.ts`` is left out: it names TypeScript as often as MPEG-TS).
VIDEO_EXTENSIONS = frozenset("." + e for e in "mp4 m4v mov qt mkv webm avi wmv asf flv mpg mpeg m2v mts m2ts 3gp 3g2 ogv vob".split())
MAX_SOUNDTRACK_SECONDS = 7200.0  # a soundtrack is embedded up to two hours (bounded cost, as for sounds)
EVERY = 1.5  # seconds between sampled frames, by default (10x real time on 2 CPU cores: benchmarks/RESULTS.md)
MAX_FRAMES = 600  # per video: a longer video is sampled more sparsely (bounded memory and time)
#: Frames handed to a ``sink`` at a time (:func:`load_video`): one model step of a CPU image tower.
SINK_ROWS = 16
SAME_SHOT = 3.0  # mean |Δ| of 16×16 colour thumbnails (0-255) below which a frame repeats the last kept one
_PROBE_PACKETS = 300  # packets demuxed (not decoded) to learn how far apart keyframes are
_MAX_DECODE_ERRORS = 50


class NoVideoStream(BadInput):
    """The file holds no video stream (a sound in a video container: index it as audio)."""


@dataclass(frozen=True)
class VideoInfo:
    duration: float  # seconds (the container's, else the last frame's end)
    width: int  # as displayed: after rotation
    height: int
    codec: str
    fps: float | None  # the stream's average frame rate, when it has one
    rotation: int  # degrees the frames are turned clockwise for display (0, 90, 180, 270)
    audio: bool  # the file also holds an audio stream
    taken_at: str | None  # the container's creation time (ISO 8601), when it has one
    location: str | None = None  # an ISO 6709 place ("+48.8577+002.2950/"), as phones tag their videos


@dataclass(frozen=True)
class Frame:
    time: float  # seconds from the start
    pixels: np.ndarray  # uint8 (H, W, 3): the model's input crop


def probe(path: str) -> VideoInfo:
    """What a video is, from its headers and first frame (BadInput when it cannot be read)."""
    info, it = frames(path, {"kind": "open_clip", "cfg": {"size": [8, 8]}})
    it.close()
    return info


def frames(path: str, recipe: dict[str, Any] | Plan, *, every: float = EVERY,
           max_frames: int = MAX_FRAMES) -> tuple[VideoInfo, Iterator[Frame]]:
    """(what the video is, its sampled frames as they are decoded). The iterator holds the file open
    until it is exhausted or closed; a damaged stretch ends it early, keeping the frames before it."""
    if every <= 0 or max_frames < 1:
        raise ValueError("every must be > 0 and max_frames >= 1")
    container = _open(path)
    try:
        stream = _stream(container)
        interval = max(every, _duration(container, stream) / max_frames)
        skip = stream.codec_context.skip_frame = _skipping(path, stream.index, interval)
        decoded = _decoded(container, stream, interval if skip == "NONKEY" else None)
        first = next(decoded, None)  # its display matrix says how the video is turned
        if first is None:
            raise BadInput("no frame could be decoded (truncated, empty or corrupt video)")
        info = _info(container, stream, (-int(round(getattr(first, "rotation", 0) or 0))) % 360)
    except BaseException:
        container.close()
        raise
    p = plan(recipe) if not isinstance(recipe, Plan) else recipe
    return info, _sampled(container, stream, itertools.chain([first], decoded), p, interval, max_frames, info.rotation)


def spans(times: list[float], duration: float) -> list[tuple[float, float]]:
    """(start, end) each kept frame stands for: from its time to the next kept frame's (the last: to the end)."""
    ends = times[1:] + [max(duration, times[-1] if times else 0.0)]
    return [(t, max(e, t)) for t, e in zip(times, ends)]


def load_video(out: Loaded, recipe: dict[str, Any] | None, limits: dict[str, Any],
               sink: Callable[[np.ndarray], None] | None = None) -> None:
    """Fill a hashed video's fields in a decode worker: what it is (size, duration, codec, date and place
    from the container), and the input of the space's tower its ``recipe`` names: the sampled frames'
    crops (``pixels``, ``(n, H, W, 3)`` uint8, with their ``spans``) for an image model, the soundtrack's
    log-mel ``windows`` for a sound model (none when it is silent: ``info["video"]["audio"]`` says so).
    A file with no video stream becomes a sound (``modality`` "audio"). Problems are :class:`BadInput`.

    ``sink`` (decoding in the indexing process): the frames' crops are handed to it in steps of
    :data:`SINK_ROWS` as they decode, so the model embeds them meanwhile, and are not kept in ``pixels``."""
    from mmsearch.ingest.audio import decode_windows, probe_audio

    try:
        info = probe(out.path)
    except NoVideoStream:
        out.modality = "audio"  # a sound in a video container: indexed as the sound it is
        if recipe is not None and recipe.get("kind") == "clap":
            sound = decode_windows(out.path, recipe, float(limits.get("max_audio_seconds", 600.0)))
            out.windows, out.spans = sound.features, sound.spans
            out.truncated = sound.truncated
        else:
            sound = probe_audio(out.path)
        out.duration, out.sample_rate, out.channels = sound.duration, sound.sample_rate, sound.channels
        return
    out.width, out.height, out.duration = info.width, info.height, info.duration
    out.info = {"video": {"codec": info.codec, "fps": round(info.fps, 3) if info.fps else None,
                          "rotation": info.rotation, "audio": info.audio}}
    out.exif = _container_metadata(info)
    if recipe is None:
        return
    if recipe.get("kind") == "clap":
        if info.audio:
            seconds = min(float(limits.get("max_soundtrack_seconds", MAX_SOUNDTRACK_SECONDS)), _slot_seconds(recipe))
            sound = decode_windows(out.path, recipe, seconds)  # cut as it decodes: no hour of samples held
            out.windows, out.spans = sound.features, sound.spans
            out.sample_rate, out.channels, out.truncated = sound.sample_rate, sound.channels, sound.truncated
            out.duration = info.duration or sound.duration  # a container that does not say: as heard
        return
    _, sampled = frames(out.path, recipe, every=float(limits.get("video_every", EVERY)),
                        max_frames=min(int(limits.get("max_video_frames", MAX_FRAMES)), MOMENT_SLOTS))
    times, held = [], []
    for f in sampled:
        times.append(f.time)
        held.append(f.pixels)
        if sink is not None and len(held) >= SINK_ROWS:
            sink(np.stack(held))
            held = []
    if not times:
        raise BadInput("no frame could be decoded (truncated or corrupt video)")
    if sink is not None:
        if held:
            sink(np.stack(held))
    else:
        out.pixels = np.stack(held)
    # a container that does not say how long it is (a live recording): as long as its frames reach
    out.duration = info.duration or times[-1] + float(limits.get("video_every", EVERY))
    out.spans = spans(times, out.duration)


def _slot_seconds(recipe: dict[str, Any]) -> float:
    """The longest soundtrack whose windows fit a video's moment slots (:data:`MOMENT_SLOTS`)."""
    rate = int(recipe["sampling_rate"])
    return ((MOMENT_SLOTS - 1) * int(recipe["hop"]) + int(recipe["window"])) / rate


_ISO6709 = re.compile(r"^([+-]\d+(?:\.\d+)?)([+-]\d+(?:\.\d+)?)")


def _container_metadata(info: VideoInfo):
    """The date taken (the container's creation time, UTC) and the place (an ISO 6709 location tag, as
    phones write) as photo metadata."""
    from mmsearch.ingest.exif import Exif

    taken = offset = None
    if info.taken_at:
        m = re.match(r"(\d{4}-\d\d-\d\d)[T ](\d\d:\d\d:\d\d)", info.taken_at)
        if m and not m.group(1).startswith("1970") and not m.group(1).startswith("1904"):
            taken, offset = f"{m.group(1)} {m.group(2)}", "+00:00"
    lat = lon = None
    if info.location:
        m = _ISO6709.match(info.location)
        if m and abs(float(m.group(1))) <= 90 and abs(float(m.group(2))) <= 180:
            lat, lon = float(m.group(1)), float(m.group(2))
    return Exif(taken_at=taken, taken_offset=offset, gps_lat=lat, gps_lon=lon)


# ---- inside ---------------------------------------------------------------------------------------
def _open(path: str):
    try:
        import av
    except ImportError:
        raise BadInput("reading videos needs PyAV: pip install 'mmsearch[video]'") from None

    try:
        return av.open(path, metadata_errors="ignore")
    except av.FFmpegError as exc:
        raise BadInput(f"not a readable video (cannot be opened: {_reason(exc)})") from None


def _stream(container):
    if not container.streams.video:
        sound = bool(container.streams.audio)
        container.close()
        raise NoVideoStream("no video stream" + (" (it holds only sound)" if sound else ""))
    stream = container.streams.video[0]
    if stream.codec_context is None:
        container.close()
        raise BadInput("unsupported video codec (this FFmpeg does not know it)")
    stream.thread_type = "AUTO"  # before the first decode opens the codec
    return stream


def _duration(container, stream) -> float:
    if stream.duration is not None and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    return container.duration / 1_000_000 if container.duration is not None else 0.0  # AV_TIME_BASE


def _info(container, stream, rotation: int) -> VideoInfo:
    ctx = stream.codec_context
    w, h = ctx.width, ctx.height
    if rotation in (90, 270):
        w, h = h, w
    rate = stream.average_rate
    tags = {k.lower(): v for k, v in {**stream.metadata, **container.metadata}.items()}
    created = tags.get("creation_time")
    where = tags.get("location") or tags.get("com.apple.quicktime.location.iso6709")
    return VideoInfo(_duration(container, stream), int(w), int(h), ctx.name, float(rate) if rate else None,
                     rotation, bool(container.streams.audio), created or None, where or None)


def _skipping(path: str, stream_index: int, interval: float) -> str:
    """What the decoder may skip: all but keyframes when they come at least once per ``interval``; else
    frames no other frame needs, when there are several frames per interval (a sample then lands on
    the next reference frame, a fraction of the interval late); else nothing (sparse frames)."""
    probe = _open(path)  # its own: a file without a seek index (live recordings) cannot rewind to the start
    try:
        key_gap, frame_gap, tail = _packet_gaps(probe, probe.streams[stream_index])
    finally:
        probe.close()
    if key_gap <= interval and (tail is None or _tail_sampled(*tail, interval)):
        return "NONKEY"
    return "NONREF" if frame_gap * 4 <= interval else "DEFAULT"


def _packet_gaps(container, stream) -> tuple[float, float, tuple[float, float] | None]:
    """(the longest gap between keyframes, the median gap between frames) in seconds among the first
    packets, demuxed only (timestamps, not the stream's nominal rate: phones write variable rates);
    inf when unknown. Third: (the last keyframe's time, the last frame's) when the probe saw the whole
    stream, else None."""
    keys, every, whole = [], [], True
    for i, packet in enumerate(container.demux(stream)):
        if i >= _PROBE_PACKETS:
            whole = False
            break
        if packet.pts is not None:
            t = float(packet.pts * packet.time_base)
            every.append(t)
            if packet.is_keyframe:
                keys.append(t)

    def gaps(times: list[float]) -> np.ndarray:
        return np.diff(np.unique(times)) if len(times) > 1 else np.array([math.inf])

    tail = (max(keys), max(every)) if whole and keys else None
    return float(gaps(keys).max()), float(np.median(gaps(every))), tail


def _tail_sampled(last_key: float, last_frame: float, interval: float) -> bool:
    """Whether sampling keyframes alone still samples the stretch after the last keyframe: no sampling time
    falls after it (a short clip with keyframes at 0 and 1 s, a cut, and a 2 s shot after it, sampled every
    1.5 s, would otherwise show only its first shot: the keyframe at 1 s is in the first sample's stretch)."""
    return math.floor(last_frame / interval + 1e-9) <= math.floor(last_key / interval + 1e-9)


def _decoded(container, stream, interval: float | None = None) -> Iterator[Any]:
    """Every frame the decoder gives (what ``skip_frame`` lets through), in order; a damaged stretch
    after the first frame ends it (what came before is kept), before it is skipped up to a point.
    ``interval`` (keyframes only, each decodable alone): a packet the sampler would drop (before the
    next sampling time, worked out as :func:`_sampled` does) is not decoded at all, so a long video
    sampled every 6 s with keyframes every second decodes one keyframe in six."""
    import av

    packets = container.demux(stream)
    errors, any_frame, due = 0, False, 0.0
    while True:
        try:
            packet = next(packets)
            if interval is not None and packet.pts is not None and packet.time_base is not None:
                t = float(packet.pts * packet.time_base)
                if t + 1e-6 < due:
                    continue
                due = (math.floor(t / interval) + 1) * interval if packet.is_keyframe else due
            got = packet.decode()
        except StopIteration:
            return
        except av.error.DecoderNotFoundError:
            raise BadInput(f"unsupported video codec ({stream.codec_context.name}: no decoder in this FFmpeg)") from None
        except (av.FFmpegError, ValueError):
            errors += 1
            if any_frame or errors > _MAX_DECODE_ERRORS:
                return  # damaged or cut short: keep what came before
            continue
        for frame in got:
            any_frame = True
            yield frame


def _sampled(container, stream, decoded: Iterator[Any], p: Plan, interval: float, max_frames: int,
             rotation: int) -> Iterator[Frame]:
    kept, next_t, last = 0, 0.0, None
    try:
        for frame in decoded:
            t = _time(frame, stream)
            if t is None or t + 1e-6 < next_t:
                continue
            pixels = _pixels(frame, p, rotation)
            thumb = _thumb(pixels)
            next_t = (math.floor(t / interval) + 1) * interval
            if last is not None and float(np.abs(thumb - last).mean()) < SAME_SHOT:
                continue  # the same shot as the last kept frame
            last = thumb
            kept += 1
            yield Frame(round(t, 3), pixels)
            if kept >= max_frames:
                return
    finally:
        container.close()


def _time(frame, stream) -> float | None:
    if frame.pts is None:
        return None
    base = frame.time_base or stream.time_base or Fraction(1, 1)
    return float(frame.pts * base)


def _pixels(frame, p: Plan, rotation: int) -> np.ndarray:
    """The model's crop of one frame: scaled by FFmpeg to the (rotated) resize size, turned, cropped."""
    w, h = frame.width, frame.height
    shown = (h, w) if rotation in (90, 270) else (w, h)
    tw, th = resize_size(shown[0], shown[1], p)
    cw, ch = (th, tw) if rotation in (90, 270) else (tw, th)
    arr = frame.to_ndarray(format="rgb24", width=max(cw, 1), height=max(ch, 1), interpolation="BICUBIC")
    if rotation:
        arr = np.rot90(arr, k=-(rotation // 90))  # clockwise
    return _crop_or_pad(np.ascontiguousarray(arr), p.height, p.width, p.fill if p.resize_mode == "longest" else 0)


def _thumb(pixels: np.ndarray) -> np.ndarray:
    """16×16 block means of each colour channel (fewer blocks for a smaller crop): grey alone would
    take a red frame and a blue one of the same brightness for the same shot."""
    x = pixels.astype(np.float32)
    h, w = x.shape[:2]
    ys = np.unique(np.linspace(0, h, 17).astype(int)[:-1])
    xs = np.unique(np.linspace(0, w, 17).astype(int)[:-1])
    sums = np.add.reduceat(np.add.reduceat(x, ys, axis=0), xs, axis=1)
    counts = np.outer(np.diff(np.append(ys, h)), np.diff(np.append(xs, w)))
    return sums / counts[:, :, None]


def _reason(exc: BaseException) -> str:
    return str(exc).splitlines()[0][:160] if str(exc) else type(exc).__name__
