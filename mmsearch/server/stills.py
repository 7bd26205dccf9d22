"""A still of a video at a time: the frame showing at ``t`` seconds, for the video's thumbnail.

Bounded cost whatever the video: the demuxer seeks to the keyframe at or before ``t`` (one seek, no
scan), and frames are decoded from there only up to ``t`` (at most :data:`MAX_DECODED` of them: a
video whose keyframes are further apart gets the last frame decoded by then). The frame kept is the
last one whose time (``pts × time_base``, as :mod:`mmsearch.ingest.video` times the frames it samples,
so a moment's ``peak`` names that very frame) is at or before ``t``; a ``t`` past the end gives the
last frame. FFmpeg scales it to fit the thumbnail, and a phone video's rotation is applied.

The file is read through the descriptor :func:`mmsearch.server.files.open_indexed` checked (with
``pread``: its offset is nobody's state), so what is decoded is the file the index saw.
"""

from __future__ import annotations

import io
import os
from fractions import Fraction
from typing import Any

MAX_DECODED = 900  # frames decoded after the seek, at most (30 s at 30 fps)
_MAX_ERRORS = 50
_EPS = 1e-3  # seconds: a frame timed at t (within rounding) shows at t


class NoStill(Exception):
    """No frame of the video could be decoded (the message says why)."""


def still(fd: int, t: float, size: int) -> Any:
    """The frame of the video open on ``fd`` showing at ``t`` seconds, as an RGB PIL image fitting size×size."""
    import av

    try:
        container = av.open(_Reader(fd), metadata_errors="ignore")
    except (av.FFmpegError, OSError) as exc:
        raise NoStill(f"not a readable video ({_reason(exc)})") from None
    try:
        if not container.streams.video:
            raise NoStill("no video stream")
        stream = container.streams.video[0]
        base = stream.time_base or Fraction(1, 1)
        try:
            container.seek(max(0, int(t / base)), stream=stream, backward=True, any_frame=False)
        except (av.FFmpegError, ValueError, OverflowError):
            container.seek(0, stream=stream)  # not seekable by time: decoded from the start (still bounded)
        frame = _frame_at(container, stream, t)
        if frame is None:
            raise NoStill("no frame could be decoded (truncated, empty or corrupt video)")
        return _image(frame, size)
    finally:
        container.close()


class _Reader(io.RawIOBase):
    """A read-only, seekable file over a descriptor that reads with ``pread`` (its own position)."""

    def __init__(self, fd: int) -> None:
        self.fd, self.pos, self.size = fd, 0, os.fstat(fd).st_size

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        data = os.pread(self.fd, len(buffer), self.pos)
        buffer[:len(data)] = data
        self.pos += len(data)
        return len(data)

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        self.pos = max(0, offset + (0, self.pos, self.size)[whence])
        return self.pos

    def tell(self) -> int:
        return self.pos


def _frame_at(container: Any, stream: Any, t: float) -> Any:
    """The last decoded frame timed at or before ``t`` (the first one when all come later)."""
    import av

    kept, decoded, errors = None, 0, 0
    packets = container.demux(stream)
    while decoded < MAX_DECODED:
        try:
            got = next(packets).decode()
        except StopIteration:
            break
        except (av.FFmpegError, ValueError):
            errors += 1
            if errors > _MAX_ERRORS:
                break
            continue
        for frame in got:
            decoded += 1
            if frame.pts is None:
                continue
            if float(frame.pts * (frame.time_base or stream.time_base)) > t + _EPS:
                return kept if kept is not None else frame
            kept = frame
    return kept


def _image(frame: Any, size: int) -> Any:
    """The frame scaled (by FFmpeg) to fit size×size as displayed, turned upright."""
    from PIL import Image

    turn = (-int(round(getattr(frame, "rotation", 0) or 0))) % 360  # degrees clockwise for display
    w, h = (frame.height, frame.width) if turn in (90, 270) else (frame.width, frame.height)
    scale = min(1.0, size / max(w, h, 1))
    sw, sh = max(1, round(w * scale)), max(1, round(h * scale))
    if turn in (90, 270):
        sw, sh = sh, sw  # the stored (unturned) size
    im = frame.reformat(width=sw, height=sh, format="rgb24").to_image()
    turns = {90: Image.Transpose.ROTATE_270, 180: Image.Transpose.ROTATE_180, 270: Image.Transpose.ROTATE_90}
    return im.transpose(turns[turn]) if turn in turns else im


def _reason(exc: BaseException) -> str:
    return str(exc).splitlines()[0][:160] if str(exc) else type(exc).__name__
