"""Serving indexed files: originals (byte ranges, download) and cached thumbnails.

Only indexed files are ever served, and only while they are the file the index saw. The server opens
an indexed path (following symlinks, as `index` did) and checks *on the open file* that it is a regular
file with the size and modification time the store recorded when it indexed it (the test `index` itself
uses to skip an unchanged file); the bytes are then read from that same descriptor, so nothing swapped
in between the check and the read is served. A thumbnail is made from bytes whose sha256 must be the
indexed content's. So a symlink planted or retargeted after indexing (to ``~/.ssh``, to another folder,
anywhere, inside the indexed tree or out of it) is refused with 404, and so is a file edited since.
Paths come only from the store: a request names a content id, never a path.

Thumbnails: decoded by the project's own decoder (:func:`mmsearch.ingest.decode.decode_image`, so
every format `index` reads, orientation applied), scaled to fit SIZE×SIZE, saved as JPEG in
``<store>/thumbs/<sha[:2]>/<sha>-<SIZE>.jpg`` (content-keyed: a copy or a move costs nothing). A
video's thumbnail is the frame showing at a time ``t`` (:mod:`mmsearch.server.stills`: one seek to the
keyframe before it, then decoding up to it), kept as ``<sha>-<SIZE>-t<TENTHS>.jpg`` (``t`` rounded to
0.1 s); it is decoded from the descriptor checked against the size and mtime the index recorded, as an
original is served (a video is not hashed again per thumbnail). The folder
is bounded (:data:`THUMB_CACHE_BYTES` by default): when a new thumbnail takes it past the bound, the
least recently served are deleted down to 90 %. A store folder that cannot be written still gets
thumbnails, made per request.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import re
import stat
import threading
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from starlette.background import BackgroundTask
from starlette.responses import JSONResponse, Response, StreamingResponse

from mmsearch.store import thumbs as store_thumbs

log = logging.getLogger("mmsearch.server")

THUMB_SIZES = (128, 256, 512)
THUMB_CACHE_BYTES = 256 << 20
THUMB_QUALITY = 85
MAX_THUMB_SOURCE_BYTES = 1 << 30  # as `index` reads images
VIDEO_THUMB_AT = 1.0  # seconds: a video's thumbnail shows this time by default (a shorter one's last frame)
IMMUTABLE = "private, max-age=31536000, immutable"
_CHUNK = 1 << 16


class NotServed(Exception):
    """This content has no file that can be served (the message says why); answered with 404."""


# ---- media types -----------------------------------------------------------------------------------
def image_type(head: bytes) -> str:
    """The media type of an image by its content (a PNG named .jpg is indexed, so it is served as PNG)."""
    from PIL import Image

    try:
        with Image.open(io.BytesIO(head)) as im:  # the first bytes hold the header
            return Image.MIME.get(im.format or "", "application/octet-stream")
    except Exception:
        return "application/octet-stream"


_ASF = bytes.fromhex("3026b2758e66cf11a6d900aa0062ce6c")  # the ASF header object's GUID (WMA)


def sound_type(head: bytes) -> str:
    """The media type of a sound file by its first bytes (sounds are indexed by content too)."""
    h = bytes(head)
    if h[:4] in (b"RIFF", b"RF64", b"BW64") and h[8:12] == b"WAVE":
        return "audio/wav"
    if h[:4] == b"fLaC":
        return "audio/flac"
    if h[:4] == b"OggS":
        return "audio/ogg"
    if h[:3] == b"ID3":
        return "audio/mpeg"
    if h[4:8] == b"ftyp":
        return "audio/mp4"
    if h[:4] == b"FORM" and h[8:12] in (b"AIFF", b"AIFC"):
        return "audio/aiff"
    if h[:4] == b"\x1a\x45\xdf\xa3":  # EBML: Matroska / WebM
        return "audio/webm" if b"webm" in h[:64] else "audio/x-matroska"
    if h[:4] == b"caff":
        return "audio/x-caf"
    if h[:4] == b".snd":
        return "audio/basic"
    if h.startswith(b"#!AMR"):
        return "audio/amr"
    if h[:16] == _ASF:
        return "audio/x-ms-wma"
    if len(h) >= 2 and h[0] == 0xFF and h[1] & 0xE0 == 0xE0:  # an MPEG audio frame header
        return "audio/aac" if h[1] & 0x06 == 0 else "audio/mpeg"  # layer bits 00: AAC in ADTS
    return "application/octet-stream"


def video_type(head: bytes) -> str:
    """The media type of a video file by its first bytes (what a browser's <video> needs to play it)."""
    h = bytes(head)
    if h[4:8] == b"ftyp":  # ISO base media: the major brand says which
        brand = h[8:12]
        if brand == b"qt  ":
            return "video/quicktime"
        return "video/3gpp2" if brand.startswith(b"3g2") else "video/3gpp" if brand.startswith(b"3g") else "video/mp4"
    if h[4:8] in (b"moov", b"mdat", b"wide", b"free", b"skip", b"pnot"):  # QuickTime without ftyp
        return "video/quicktime"
    if h[:4] == b"\x1a\x45\xdf\xa3":  # EBML: Matroska / WebM
        return "video/webm" if b"webm" in h[:64] else "video/x-matroska"
    if h[:4] == b"RIFF" and h[8:12] == b"AVI ":
        return "video/x-msvideo"
    if h[:16] == _ASF:
        return "video/x-ms-wmv"
    if h[:3] == b"FLV":
        return "video/x-flv"
    if h[:4] == b"OggS":
        return "video/ogg"
    if h[:4] in (b"\x00\x00\x01\xba", b"\x00\x00\x01\xb3"):  # MPEG program stream / elementary video
        return "video/mpeg"
    if (h[:1] == b"G" and h[188:189] in (b"G", b"")) or (h[4:5] == b"G" and h[196:197] in (b"G", b"")):  # TS, M2TS
        return "video/mp2t"
    return "application/octet-stream"


def media_type(opened: "Opened") -> str:
    """The media type of an opened original, by its content and what it was indexed as."""
    if opened.modality == "audio":
        return sound_type(os.pread(opened.fd, 64, 0))
    if opened.modality == "video":
        return video_type(os.pread(opened.fd, 256, 0))
    return image_type(os.pread(opened.fd, 1 << 16, 0))


# ---- opening an indexed file -------------------------------------------------------------------------
@dataclass
class Opened:
    fd: int
    path: str
    size: int
    sha256: str
    modality: str

    def close(self) -> None:  # idempotent: the body's end and the response's background task both call it
        fd, self.fd = self.fd, -1
        if fd >= 0:
            try:
                os.close(fd)
            except OSError:
                pass


def open_indexed(store, content_id: int, modalities: tuple[str, ...]) -> Opened:
    """An open descriptor on a file of content ``content_id`` that is still the file the index saw."""
    ident = store_thumbs.identity(store, content_id)
    kinds = " or ".join("sound" if m == "audio" else m for m in modalities)
    if ident is None or ident.modality not in modalities:
        raise NotServed(f"no indexed {kinds} with id {content_id}")
    if not ident.files:
        raise NotServed(f"no indexed {kinds} with id {content_id} has a file on disk")
    for f in ident.files:
        try:
            fd = os.open(f.path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NONBLOCK", 0))
        except OSError:
            continue
        st = os.fstat(fd)
        if stat.S_ISREG(st.st_mode) and st.st_size == f.size and st.st_mtime_ns == f.mtime_ns:
            return Opened(fd, f.path, st.st_size, ident.sha256, ident.modality)
        os.close(fd)  # replaced, edited or retargeted since it was indexed: not what the index holds
    raise NotServed(f"no indexed {kinds} with id {content_id} has a file on disk that is unchanged since "
                    "it was indexed (run `mmsearch index` again)")


def _pread(fd: int, first: int, last: int) -> Iterator[bytes]:
    pos = first
    while pos <= last:
        data = os.pread(fd, min(_CHUNK, last - pos + 1), pos)
        if not data:
            break
        pos += len(data)
        yield data


_RANGE = re.compile(r"\s*bytes\s*=\s*(\d*)\s*-\s*(\d*)\s*", re.ASCII | re.IGNORECASE)


def byte_range(header: str, size: int) -> tuple[int, int] | str | None:
    """``Range: bytes=FIRST-LAST`` (or ``FIRST-``, ``-SUFFIX``) as (first, last) inclusive, clipped to the
    file; ``"unsatisfiable"`` when it starts past the end; None for anything else (several ranges, other
    units, malformed), which is answered with the whole file, as RFC 9110 lets a server do."""
    m = _RANGE.fullmatch(header)
    if m is None or not (m[1] or m[2]):
        return None
    if not m[1]:  # the last N bytes
        n = int(m[2])
        return (max(0, size - n), size - 1) if n > 0 and size > 0 else "unsatisfiable"
    first = int(m[1])
    if first >= size:
        return "unsatisfiable"
    last = size - 1 if not m[2] else min(int(m[2]), size - 1)
    return (first, last) if last >= first else None


def disposition(path: str, download: bool) -> str:
    """``Content-Disposition`` naming the file (RFC 6266: an ASCII fallback and the UTF-8 name)."""
    name = os.path.basename(path) or "file"
    ascii_name = re.sub(r'[^A-Za-z0-9._ -]', "_", name)
    kind = "attachment" if download else "inline"
    return f"{kind}; filename=\"{ascii_name}\"; filename*=UTF-8''{urllib.parse.quote(name, safe='')}"


def original(opened: Opened, range_header: str | None, download: bool, if_none_match: str | None) -> Response:
    """The answer for an opened original: 200, 206 (a range), 304 (the client has it) or 416."""
    etag = f'"{opened.sha256}"'
    media = media_type(opened)
    headers = {"ETag": etag, "Cache-Control": "private, max-age=3600", "Accept-Ranges": "bytes",
               "X-Content-Type-Options": "nosniff", "Content-Disposition": disposition(opened.path, download)}
    if if_none_match is not None and etag in [t.strip() for t in if_none_match.split(",")]:
        opened.close()
        return Response(status_code=304, headers=headers)
    size = opened.size
    got = byte_range(range_header, size) if range_header is not None else None
    if isinstance(got, str):
        opened.close()
        return JSONResponse({"error": f"range {range_header!r} is outside the file ({size} bytes)"},
                            status_code=416, headers={"Content-Range": f"bytes */{size}"})
    first, last = got if got is not None else (0, size - 1)

    def body() -> Iterator[bytes]:
        try:
            yield from _pread(opened.fd, first, last)
        finally:
            opened.close()

    headers["Content-Length"] = str(max(0, last - first + 1))
    done = BackgroundTask(opened.close)  # also when the client leaves before the body is read
    if got is None:
        return StreamingResponse(body(), media_type=media, headers=headers, background=done)
    headers["Content-Range"] = f"bytes {first}-{last}/{size}"
    return StreamingResponse(body(), status_code=206, media_type=media, headers=headers, background=done)


# ---- thumbnails ------------------------------------------------------------------------------------
def _jpeg(im) -> bytes:
    out = io.BytesIO()
    im.save(out, "JPEG", quality=THUMB_QUALITY, optimize=True)
    return out.getvalue()


class Thumbnails:
    """Thumbnails of one store, made once and kept in ``<store>/thumbs`` within ``limit`` bytes."""

    def __init__(self, store, limit: int = THUMB_CACHE_BYTES) -> None:
        self.store = store
        self.root = store_thumbs.folder(store)
        self.limit = limit
        self.lock = threading.Lock()
        self.total: int | None = None  # bytes in the folder, counted on first use
        self.writable = True

    def path_of(self, sha256: str, size: int, tenths: int | None = None) -> Path:
        at = "" if tenths is None else f"-t{tenths}"
        return self.root / sha256[:2] / f"{sha256}-{size}{at}.jpg"

    def get(self, content_id: int, size: int, t: float | None = None) -> tuple[bytes, str]:
        """(JPEG bytes, a tag naming them: ``SHA-SIZE``, a video's ``SHA-SIZE-tTENTHS``) of content
        ``content_id``'s thumbnail fitting size×size: an image's, or a video's frame at ``t`` seconds
        (default :data:`VIDEO_THUMB_AT`; rounded to 0.1 s). ``t`` is ignored for an image."""
        tenths = round(max(0.0, VIDEO_THUMB_AT if t is None else t) * 10)
        ident = store_thumbs.identity(self.store, content_id)
        if ident is not None and ident.modality in ("image", "video"):
            cached = self.path_of(ident.sha256, size, tenths if ident.modality == "video" else None)
            try:
                data = cached.read_bytes()
                os.utime(cached)  # recently served: evicted last
                return data, cached.stem
            except OSError:
                pass
        opened = open_indexed(self.store, content_id, ("image", "video"))
        video = opened.modality == "video"
        try:
            data = self._still(opened, size, tenths / 10) if video else self._make(opened, size)
        finally:
            opened.close()
        path = self.path_of(opened.sha256, size, tenths if video else None)
        self._keep(path, data)
        return data, path.stem

    def _still(self, opened: Opened, size: int, t: float) -> bytes:
        from mmsearch.server.stills import NoStill, still

        try:
            im = still(opened.fd, t, size)
        except NoStill as exc:
            raise NotServed(f"cannot make a thumbnail of {opened.path}: {exc}") from None
        return _jpeg(im)

    def _make(self, opened: Opened, size: int) -> bytes:
        from mmsearch.ingest.decode import BadInput, decode_image

        if opened.size > MAX_THUMB_SOURCE_BYTES:
            raise NotServed(f"image {opened.path} is too large to make a thumbnail of")
        data = b"".join(_pread(opened.fd, 0, opened.size - 1))
        if hashlib.sha256(data).hexdigest() != opened.sha256:  # same size and mtime, other bytes
            raise NotServed(f"image {opened.path} changed since it was indexed (run `mmsearch index` again)")

        def reduce(im) -> None:  # a JPEG decodes at 1/2..1/8 scale when that still covers the thumbnail
            if im.format in ("JPEG", "MPO"):
                im.draft("RGB", (size, size))

        try:
            im = decode_image(data, draft=reduce)
        except BadInput as exc:
            raise NotServed(f"cannot make a thumbnail of {opened.path}: {exc}") from None
        im.thumbnail((size, size))
        return _jpeg(im)

    def _keep(self, path: Path, data: bytes) -> None:
        if not self.writable:
            return
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp.write_bytes(data)
            os.replace(tmp, path)
        except OSError as exc:
            self.writable = False
            log.warning("cannot cache thumbnails in %s (%s): they are made per request", self.root,
                        exc.strerror or exc)
            try:
                tmp.unlink()
            except OSError:
                pass
            return
        with self.lock:
            self.total = (self._count() if self.total is None else self.total) + len(data)
            if self.total > self.limit:
                self.total = self._evict(int(self.limit * 0.9))

    def _files(self) -> list[tuple[float, int, Path]]:
        out = []
        for sub in self.root.glob("*/*.jpg"):
            try:
                st = sub.stat()
            except OSError:
                continue
            out.append((st.st_mtime, st.st_size, sub))
        return out

    def _count(self) -> int:
        return sum(size for _, size, _ in self._files())

    def _evict(self, target: int) -> int:
        """Delete the least recently served thumbnails until the folder holds at most ``target`` bytes."""
        files = sorted(self._files())
        total = sum(size for _, size, _ in files)
        for _, size, path in files:
            if total <= target:
                break
            try:
                path.unlink()
                total -= size
            except OSError:
                pass
        return total
