"""Sound files → mono samples at the model's rate → the model's log-mel windows. Runs in decode workers:
numpy, soundfile, soxr and PyAV only (never torch or transformers: tests/ingest/test_workers.py).

**Decoding** (:func:`decode_audio`). libsndfile (``soundfile``) first: WAV/RF64/W64 (8/16/24/32-bit
PCM, float, double, µ-law, A-law, IMA ADPCM), FLAC, Ogg Vorbis, Ogg Opus, MP3, AIFF, CAF, AU. PyAV
(FFmpeg) for what libsndfile cannot open: M4A/AAC/ALAC, WMA, Matroska audio, APE, WavPack, AC-3,
AMR… Channels are mixed down to mono by their mean, then resampled with soxr ("HQ") to the model's
rate, streamed block by block. Only the first ``max_seconds`` are read and decoded, so a two-hour
recording costs what ``max_seconds`` of it cost; ``Sound.truncated`` says so and ``Sound.duration``
still gives the whole file's length as far as the container tells (else what was decoded).

What is decoded as is, by design:

* **Silence** is a sound like any other: it is decoded, featurised (the log-mel floor, -100 dB)
  and indexed; nothing is dropped for being quiet.
* **A truncated or partly corrupt file** that still yields samples is decoded up to the damage
  (e.g. a download cut short); only a file that yields *nothing* is bad input.

What is bad input (:class:`~mmsearch.ingest.decode.BadInput`, the message names the problem): an
empty (0-byte) file, a file that is not audio (e.g. text named ``.wav``), truncated or corrupt data
that yields no samples, a codec this FFmpeg cannot decode (named where known), a container with no
audio stream (e.g. a video-only ``.mp4``), zero duration.

**Model input** (:func:`windows`, in :mod:`mmsearch.ingest.audio_input`). The encoder hands over a picklable *recipe* (for CLAP: made from
transformers' ``ClapFeatureExtractor``). The sound is cut into windows of ``recipe["window"]``
samples every ``recipe["hop"]`` samples; each window is padded as ``ClapFeatureExtractor`` pads a clip
no longer than its max length, and its log-mel spectrogram is computed as
``ClapFeatureExtractor._np_extract_fbank_features`` does (transformers ``audio_utils.spectrogram``:
periodic Hann window, centred reflect padding, power 2, the recipe's mel matrix, ``10·log10(max(floor,
x))``), vectorised over frames. The cost is bounded: a window is ``frames × mels`` float32 (LAION's
CLAP: 1001 × 64 × 4 B = 256 KB), so the default 600 s cap gives at most 60 windows, 15.4 MB.
A recipe with ``channels`` > 1 (CLAP "fusion": the same mel stacked 4 times for a clip no longer
than the window) gives a read-only *broadcast view* along the channel axis: the copies cost no
memory here nor in the pipe back from a worker (``Loaded`` pickles one channel); callers that need
their own writable array use ``np.ascontiguousarray``.

**Cost** (one core of the 2-core machine in benchmarks/RESULTS.md, CPU time; 44.1 kHz stereo
sources): decoding, mixing down and resampling run at ~300× real time for FLAC/MP3 and ~200× for
AAC, the log-mel windows at ~170–300× (48 kHz, 1024-point FFT) and ~240× (16 kHz, 512-point), so a
worker turns a minute of sound into model input in ~0.4–0.5 s, and a file capped at 600 s in ~4 s
with a peak of ~190 MB resident at 48 kHz (~90 MB at 16 kHz) when decoded whole; :func:`decode_windows`
(what indexing and queries use) cuts the windows while it decodes, holding a window of samples rather than
the whole sound (`benchmarks/bench_soundtrack_memory.py`).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Any

import numpy as np

from mmsearch.ingest.audio_input import _pad, check_recipe, feature_bytes, log_mel, window_starts, windows  # noqa: F401
from mmsearch.ingest.decode import MAX_AUDIO_SECONDS, BadInput
from mmsearch.ingest.sniff import SNIFF_BYTES, read_head, sniff  # noqa: F401  (part of this module's API too)
# (audio_input's names are part of this module's API too: the windows are this module's to describe)

#: Extensions read as sounds (libsndfile or FFmpeg decodes them). Video containers (``.mp4``,
#: ``.webm``, ``.mkv``) are not here: their audio is not what people mean by a sound file.
AUDIO_EXTENSIONS = frozenset({
    ".wav", ".wave", ".bwf", ".rf64", ".w64", ".flac", ".ogg", ".oga", ".opus", ".spx", ".mp3", ".mp2",
    ".m4a", ".m4b", ".aac", ".adts", ".aif", ".aiff", ".aifc", ".caf", ".au", ".snd", ".wma", ".weba",
    ".mka", ".ape", ".wv", ".tta", ".amr", ".ac3", ".dts",
})
PROBE_SECONDS = 1.0  # what a metadata-only load decodes (to know the file is audio at all)
_BLOCK = 1 << 16  # frames read from libsndfile at a time
_MAX_DECODE_ERRORS = 32  # damaged packets skipped before the first sample, before giving up


@dataclass
class Sound:
    """A decoded sound: ``samples`` mono float32 at the rate asked for; the rest describe the file."""

    samples: np.ndarray
    duration: float  # seconds, the whole file as far as the container tells (else what was decoded)
    sample_rate: int  # the file's own
    channels: int  # the file's own
    truncated: bool = False  # only the first max_seconds were decoded
    #: :func:`decode_windows`: the model input, cut while decoding (``samples`` is then empty)
    features: np.ndarray | None = None
    spans: list[tuple[float, float]] | None = None


_IMAGE_DEMUXERS = {"image2", "gif", "apng", "webp", "jpegxl_anim"}


# ---- decoding ----------------------------------------------------------------------------------------
class _Sink:
    """Takes mono blocks at the file's rate, keeps the first ``limit`` samples, resamples as they come."""

    def __init__(self, src_rate: int, rate: int | None, limit: int, expect: int | None) -> None:
        import soxr

        self.limit, self.taken, self.truncated = limit, 0, False
        self.ratio = 1.0 if rate is None or rate == src_rate else rate / src_rate
        self.stream = None if self.ratio == 1.0 else soxr.ResampleStream(src_rate, rate, 1, dtype="float32", quality="HQ")
        # what the container says, and a second more: a stream running a little past its stated duration
        # (encoder priming) must not double an hour's buffer to hold its last samples
        self.buf = np.empty(int(min(limit, expect + src_rate if expect else limit) * self.ratio) + 64, np.float32)
        self.n = 0

    @property
    def full(self) -> bool:
        return self.truncated

    def add(self, mono: np.ndarray) -> None:
        room = self.limit - self.taken
        if len(mono) > room:
            mono, self.truncated = mono[:room], True
        self.taken += len(mono)
        if len(mono):
            self._put(mono if self.stream is None else self.stream.resample_chunk(mono))

    def _put(self, y: np.ndarray) -> None:
        if self.n + len(y) > len(self.buf):
            grown = np.empty(max(len(self.buf) + len(self.buf) // 2, self.n + len(y)), np.float32)
            grown[:self.n] = self.buf[:self.n]
            self.buf = grown
        self.buf[self.n:self.n + len(y)] = y
        self.n += len(y)

    def samples(self) -> np.ndarray:
        if self.stream is not None and self.taken:
            self._put(self.stream.resample_chunk(np.zeros(0, np.float32), last=True))
        out = self.buf[:self.n]
        return out.copy() if self.n < len(self.buf) // 2 else out


class _WindowSink(_Sink):
    """A :class:`_Sink` that cuts the model's windows as the samples come (what :func:`windows` gives for the
    whole sound, bit for bit) and keeps only the samples the next window needs: an hour's soundtrack at 48 kHz
    holds ~1 window of samples (a few MB) instead of 691 MB, plus its features (~92 MB for LAION's CLAP)."""

    def __init__(self, src_rate: int, limit: int, recipe: dict[str, Any]) -> None:
        check_recipe(recipe)
        super().__init__(src_rate, int(recipe["sampling_rate"]), limit, 1)  # (expect 1: no whole-sound buffer)
        self.recipe, self.window, self.hop = recipe, int(recipe["window"]), int(recipe["hop"])
        self.buf = np.empty(self.window + self.hop + _BLOCK, np.float32)
        self.offset = 0  # the absolute index of buf[0] (= the next window's start)
        self.feats: list[np.ndarray] = []
        self.starts: list[int] = []

    def _put(self, y: np.ndarray) -> None:
        first = self.n
        self.n += len(y)
        y = y[max(0, self.offset - first):]  # samples before the next window (a hop longer than the window)
        held = max(0, first - self.offset)
        if held + len(y) > len(self.buf):
            grown = np.empty(held + len(y), np.float32)
            grown[:held] = self.buf[:held]
            self.buf = grown
        self.buf[held:held + len(y)] = y
        while self.n > self.offset + self.window:  # a full window, and (windows' rule) another one after it
            self._emit(self.buf[:self.window])
            held = max(0, self.n - self.offset - self.hop)
            self.buf[:held] = self.buf[self.hop:self.hop + held].copy()
            self.offset += self.hop

    def _emit(self, clip: np.ndarray) -> None:
        self.starts.append(self.offset)
        self.feats.append(log_mel(_pad(clip, self.window, self.recipe.get("padding", "repeatpad")), self.recipe))

    def samples(self) -> np.ndarray:
        if self.stream is not None and self.taken:
            self._put(self.stream.resample_chunk(np.zeros(0, np.float32), last=True))
            self.stream = None
        if self.n and (not self.starts or self.starts[-1] != self.offset):
            self._emit(self.buf[:max(0, min(self.window, self.n - self.offset))])
        return np.zeros(0, np.float32)

    def cut(self) -> tuple[np.ndarray, list[tuple[float, float]]]:
        """The windows (as :func:`windows` shapes them) and their spans in seconds."""
        rate, channels = int(self.recipe["sampling_rate"]), int(self.recipe.get("channels", 1))
        out = np.stack(self.feats)
        spans = [(s / rate, min(s + self.window, self.n) / rate) for s in self.starts]
        feats = np.broadcast_to(out[:, None], (len(out), channels, *out.shape[1:])) if channels > 1 else out[:, None]
        return feats, spans


def _sink(src_rate: int, rate: int | None, limit: int, expect: int | None, recipe: dict[str, Any] | None) -> _Sink:
    return _Sink(src_rate, rate, limit, expect) if recipe is None else _WindowSink(src_rate, limit, recipe)


def _limit(max_seconds: float, rate: int) -> int:
    if not max_seconds > 0:
        raise ValueError(f"max_seconds must be positive, not {max_seconds!r}")
    return max(1, int(round(max_seconds * rate)))


def _mono(block: np.ndarray) -> np.ndarray:
    """(frames, channels) → (frames,) float32: the mean of the channels."""
    acc = np.array(block[:, 0], dtype=np.float32)  # column sums: ~10x faster than mean(axis=1) on interleaved frames
    for c in range(1, block.shape[1]):
        acc += block[:, c]
    if block.shape[1] > 1:
        acc /= block.shape[1]
    return acc


def _decode_soundfile(path: str, rate: int | None, max_seconds: float, recipe: dict[str, Any] | None = None) -> Sound | None:
    """libsndfile's decode, or None when it cannot open the file or gives no samples (PyAV then tries)."""
    import soundfile as sf

    try:
        f = sf.SoundFile(path)
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError, UnicodeError):
        return None
    with f:
        src_rate, channels, frames = f.samplerate, f.channels, f.frames
        if src_rate <= 0 or channels <= 0:
            return None
        sink = _sink(src_rate, rate, _limit(max_seconds, src_rate), frames if 0 < frames < 1 << 62 else None, recipe)
        try:
            while not sink.full:
                block = f.read(min(_BLOCK, sink.limit - sink.taken + 1), dtype="float32", always_2d=True)
                if not len(block):
                    break
                sink.add(_mono(block))
        except (sf.LibsndfileError, RuntimeError):  # damaged or cut short: keep what came before
            pass
    if sink.taken == 0:
        return None
    samples = sink.samples()
    decoded = sink.taken / src_rate
    duration = max(decoded, frames / src_rate) if sink.truncated and 0 < frames < 1 << 62 else decoded
    return _sound(sink, samples, duration, src_rate, channels)


def _sound(sink: _Sink, samples: np.ndarray, duration: float, src_rate: int, channels: int) -> Sound:
    sound = Sound(samples, duration, int(src_rate), int(channels), sink.truncated)
    if isinstance(sink, _WindowSink):
        sound.features, sound.spans = sink.cut()
    return sound


def _wav_chunks(head: bytes) -> dict[bytes, tuple[int, int]]:
    """A RIFF WAVE's chunks found in ``head``: id → (offset of its body, declared size)."""
    if head[:4] not in (b"RIFF", b"RF64", b"BW64") or head[8:12] != b"WAVE":
        return {}
    out, i = {}, 12
    while i + 8 <= len(head):
        cid, size = head[i:i + 4], struct.unpack("<I", head[i + 4:i + 8])[0]
        out.setdefault(cid, (i + 8, size))
        i += 8 + size + (size & 1)
    return out


def _wav_tag(head: bytes) -> int | None:
    """A RIFF WAVE's format tag (its codec), when the ``fmt `` chunk is in ``head``."""
    at, size = _wav_chunks(head).get(b"fmt ", (0, 0))
    return struct.unpack("<H", head[at:at + 2])[0] if size >= 2 and at + 2 <= len(head) else None


def _container_duration(container: Any, stream: Any) -> float | None:
    if stream.duration and stream.time_base:
        return float(stream.duration * stream.time_base)
    if container.duration:
        import av

        return container.duration / av.time_base
    return None


def _decode_pyav(path: str, rate: int | None, max_seconds: float, head: bytes,
                 recipe: dict[str, Any] | None = None) -> Sound:
    import av

    audio_like = sniff(head)
    not_audio = "not a recognised audio file (wrong extension or unsupported format)"
    try:
        container = av.open(path, metadata_errors="ignore")
    except av.FFmpegError as exc:
        if not audio_like:
            raise BadInput(not_audio) from None
        raise BadInput(f"truncated or corrupt audio (cannot be opened: {_reason(exc)})") from None
    with container:
        fmt = container.format.name
        if not container.streams.audio:
            if not audio_like and (not container.streams or fmt.endswith("_pipe") or fmt in _IMAGE_DEMUXERS):
                raise BadInput(not_audio)
            if container.streams.video:
                raise BadInput(f"no audio stream (the {fmt} file holds only video)")
            raise BadInput(f"no audio stream in the {fmt} file")
        stream = container.streams.audio[0]
        ctx = stream.codec_context
        if ctx is None:
            tag = _wav_tag(head)
            raise BadInput(f"unsupported audio codec ({f'WAV format tag 0x{tag:04x}' if tag is not None else 'unknown'})")
        src_rate = ctx.sample_rate or stream.rate or 0
        channels = ctx.channels or 0
        if src_rate <= 0:
            raise BadInput(f"truncated or corrupt audio ({ctx.name}: no sample rate)" if audio_like else not_audio)
        total = _container_duration(container, stream)
        sink: _Sink | None = None
        resampler = av.AudioResampler(format="fltp", frame_size=_BLOCK)  # planar float, in blocks of _BLOCK
        errors, last_error = 0, None
        packets = container.demux(stream)

        def take(frames: list) -> None:
            nonlocal sink, channels, src_rate
            for f in frames:
                arr = f.to_ndarray()  # (channels, samples) float32
                if sink is None:
                    channels = channels or arr.shape[0]
                    src_rate = f.sample_rate or src_rate
                    expect = int(total * src_rate) + 1 if total else None
                    sink = _sink(src_rate, rate, _limit(max_seconds, src_rate), expect, recipe)
                sink.add(arr.mean(axis=0, dtype=np.float32) if arr.shape[0] > 1 else arr[0])

        while sink is None or not sink.full:
            try:
                packet = next(packets)
                for frame in packet.decode():
                    take(resampler.resample(frame))
            except StopIteration:
                take(resampler.resample(None))  # what the block buffer still holds
                break
            except av.error.DecoderNotFoundError:
                raise BadInput(f"unsupported audio codec ({ctx.name}: no decoder in this FFmpeg)") from None
            except (av.FFmpegError, ValueError) as exc:  # a damaged packet, or the stream changed its layout
                errors, last_error = errors + 1, exc
                if (sink is not None and sink.taken) or errors > _MAX_DECODE_ERRORS:
                    try:
                        take(resampler.resample(None))
                    except (av.FFmpegError, ValueError):
                        pass
                    break  # damaged or cut short: keep what came before
    if sink is None or sink.taken == 0:
        if not audio_like and last_error is not None:
            raise BadInput(not_audio)
        claimed = _wav_chunks(head).get(b"data", (0, 0))[1]
        if last_error is not None or (total or 0) > 0 or claimed:
            detail = f" ({_reason(last_error)})" if last_error is not None else ""
            raise BadInput(f"truncated or corrupt audio ({ctx.name}): no samples could be decoded{detail}")
        raise BadInput("zero duration: the file holds no audio samples")
    samples = sink.samples()
    decoded = sink.taken / src_rate
    duration = max(decoded, total or 0.0) if sink.truncated else decoded
    return _sound(sink, samples, duration, src_rate, channels)


def _reason(exc: BaseException) -> str:
    text = getattr(exc, "strerror", None) or str(exc)
    return text.split(":")[0].strip() if text else type(exc).__name__


def decode_windows(path: str, recipe: dict[str, Any], max_seconds: float = MAX_AUDIO_SECONDS) -> Sound:
    """The model input of the first ``max_seconds`` of a sound (or a video's soundtrack), cut into windows
    while it decodes: ``features`` and ``spans`` as :func:`windows` gives them for the decoded samples, which
    are not kept (``samples`` is empty), so memory holds a window of samples, not the whole sound."""
    return decode_audio(path, int(recipe["sampling_rate"]), max_seconds, recipe=recipe)


def decode_audio(path: str, rate: int | None, max_seconds: float = MAX_AUDIO_SECONDS, *,
                 recipe: dict[str, Any] | None = None) -> Sound:
    """Decode the first ``max_seconds`` of a sound file to mono float32 at ``rate`` (None: the file's own).

    libsndfile first, PyAV (FFmpeg) for what it cannot open; see the module doc for what is bad input
    (:class:`BadInput`) and what is decoded as is (silence; the intact part of a damaged file).
    ``recipe``: see :func:`decode_windows`.
    """
    head = read_head(path)
    if not head:
        raise BadInput("empty file (0 bytes)")
    _limit(max_seconds, 1)  # a bad max_seconds is the caller's error, not the file's
    try:
        sound = _decode_soundfile(path, rate, max_seconds, recipe)
        return sound if sound is not None else _decode_pyav(path, rate, max_seconds, head, recipe)
    except (BadInput, MemoryError):
        raise
    except Exception as exc:  # a decoder failing in a way not foreseen above: this file, not the run
        raise BadInput(f"cannot decode audio: {type(exc).__name__}: {exc}") from None


def probe_audio(path: str) -> Sound:
    """Duration, sample rate and channels of a sound file, decoding at most :data:`PROBE_SECONDS` of it
    (at the file's own rate): enough to know it is audio. ``samples`` holds what was decoded."""
    return decode_audio(path, None, PROBE_SECONDS)


__all__ = ["AUDIO_EXTENSIONS", "MAX_AUDIO_SECONDS", "Sound", "sniff", "read_head", "decode_audio", "decode_windows",
           "probe_audio",
           "windows", "log_mel", "window_starts", "check_recipe", "feature_bytes"]
