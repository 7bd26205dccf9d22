"""Walk folders and classify files; every problem becomes a (path, reason) event, never an abort.

A file is an image (every format :func:`mmsearch.ingest.formats.image_extensions` lists: what
Pillow opens, HEIC, AVIF, JPEG XL, camera raws), a text or a sound by its extension
(:data:`mmsearch.ingest.audio.AUDIO_EXTENSIONS`) or, when it has no extension or one we do not
know, by its first bytes (:func:`mmsearch.ingest.sniff.image_kind`, :func:`mmsearch.ingest.audio.sniff`:
a photo named ``IMG_0042`` or a recording named ``take-3`` is indexed). Only such files are opened
during the walk, and only for a few KiB.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator

from mmsearch.errors import UsageError
from mmsearch.ingest.audio import AUDIO_EXTENSIONS
from mmsearch.ingest.formats import image_extensions, is_image_extension
from mmsearch.ingest.sniff import image_kind, read_head, sniff
from mmsearch.ingest.video import VIDEO_EXTENSIONS
from mmsearch.ingest.decode import BadInput

TEXT_EXTENSIONS = frozenset({".txt", ".md", ".markdown"})
#: Image formats people keep pictures in that we cannot decode: reported per file, never skipped silently.
UNSUPPORTED_IMAGE_EXTENSIONS = frozenset({".svg", ".svgz"})


def __getattr__(name: str) -> frozenset[str]:
    if name == "IMAGE_EXTENSIONS":  # computed on first use: Pillow registers its formats then
        return image_extensions()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

OnError = Callable[[str, str], None]


@dataclass(frozen=True)
class Candidate:
    path: str  # absolute, symlinks in the folder part not resolved (what the user sees)
    modality: str
    size: int
    mtime_ns: int


def classify(path: str) -> str | None:
    """The modality a file's extension tells ("image", "text", "audio", "video"), or None (see :func:`sniffed`)."""
    ext = os.path.splitext(path)[1].lower()
    if ext in TEXT_EXTENSIONS:
        return "text"
    if ext in AUDIO_EXTENSIONS:
        return "audio"
    if ext in VIDEO_EXTENSIONS:
        return "video"
    if is_image_extension(ext):
        return "image"
    return None


#: Extensions that name something other than a sound: never opened to sniff (a sync stays a walk of
#: stats, not a read of every sidecar, document and source file in the tree).
NOT_SOUND_EXTENSIONS = frozenset(
    "." + e for e in (
        "json xml xmp yaml yml toml ini cfg conf log csv tsv html htm css js ts jsx tsx py pyc c h cc cpp hpp "
        "java go rs rb php sh bat ps1 pl lua swift kt sql db sqlite sqlite3 lock md5 sha1 sha256 pdf doc docx "
        "xls xlsx ppt pptx odt ods odp rtf epub zip gz tgz bz2 xz zst 7z rar tar iso dmg exe dll so dylib o a "
        "jar class apk ttf otf woff woff2 ico svg eps ai psd heic heif jxl avif dng cr2 cr3 nef arw orf rw2 "
        "raf thm lrf aae mp4 m4v mov mkv webm avi wmv flv mpg mpeg ts mts m2ts 3gp srt vtt ass sub nfo cue "
        "m3u m3u8 pls torrent part crdownload tmp bak swp ds_store"
    ).split())


def sniffed(path: str) -> str | None:
    """"image" or "audio" when the first bytes of a file :func:`classify` gave no modality start a
    photo (:func:`~mmsearch.ingest.sniff.image_kind`) or a sound, else None.

    Files whose extension names something else (:data:`NOT_SOUND_EXTENSIONS`, unsupported image
    formats) are not opened. A read problem is :class:`~mmsearch.ingest.decode.BadInput` (reported
    like any per-file problem)."""
    if unsupported_image(path) or os.path.splitext(path)[1].lower() in NOT_SOUND_EXTENSIONS:
        return None
    head = read_head(path)
    if image_kind(head):
        return "image"
    return "audio" if sniff(head) else None


def name_problem(path: str) -> str | None:
    """Why a path cannot be stored, or None. The store keeps paths as UTF-8 text."""
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        return "name is not valid UTF-8 (rename it to index it)"
    return None


def unsupported_image(path: str) -> str | None:
    ext = os.path.splitext(path)[1].lower()
    if ext in UNSUPPORTED_IMAGE_EXTENSIONS:
        return f"unsupported image format {ext} (convert it to JPEG or PNG to index it)"
    return None


def display(path: str) -> str:
    """A path safe to print: undecodable bytes (surrogate escapes) shown as ``\\xNN``."""
    return path.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def check_roots(roots: Iterable[str | os.PathLike]) -> list[str]:
    """Absolute roots; a missing root is a usage error (and must never make us drop what it held)."""
    out = []
    for root in roots:
        if not isinstance(root, (str, bytes, os.PathLike)):
            raise UsageError(f"paths to index must be str or os.PathLike, not {type(root).__name__}")
        p = os.path.abspath(os.fsdecode(root))
        if not os.path.exists(p):
            raise UsageError("no such file or directory", path=display(p))
        out.append(p)
    if not out:
        raise UsageError("give at least one folder or file to index")
    return out


def walk(roots: Iterable[str], on_error: OnError, *, skip: Iterable[str] = ()) -> Iterator[Candidate]:
    """Yield indexable files under ``roots``. Hidden entries and ``skip`` folders are passed over.

    Symlinks are followed (to files and folders) with loop detection; broken links, unreadable
    folders and vanished files are reported through ``on_error``.
    """
    walker = _Walker(on_error, {os.path.abspath(s) for s in skip})
    for root in roots:
        if os.path.isdir(root):
            yield from walker.folder(root)
        elif os.path.isfile(root):
            try:
                known = classify(root) or sniffed(root)
            except BadInput as exc:
                on_error(root, str(exc))
                continue
            if known is None:
                on_error(root, unsupported_image(root) or f"unsupported file type {Path(root).suffix or '(no extension)'}")
            else:
                yield from walker.file(root, None, known)
        else:
            on_error(root, "not a regular file or folder")


class _Walker:
    def __init__(self, on_error: OnError, skip: set[str]) -> None:
        self.on_error = on_error
        self.skip = skip
        self.seen_dirs: set[tuple[int, int]] = set()

    def file(self, path: str, st: os.stat_result | None, modality: str | None = None) -> Iterator[Candidate]:
        modality = modality or classify(path)
        if modality is None:
            yield from self.unknown(path, st)
            return
        why = name_problem(path)
        if why:
            self.on_error(path, why)
            return
        if st is None:
            try:
                st = os.stat(path)
            except FileNotFoundError:
                self.on_error(path, "broken symlink" if os.path.islink(path) else "file vanished during the scan")
                return
            except OSError as exc:
                self.on_error(path, f"cannot stat: {exc.strerror}")
                return
        if stat.S_ISREG(st.st_mode):
            yield Candidate(path, modality, st.st_size, st.st_mtime_ns)

    def unknown(self, path: str, st: os.stat_result | None) -> Iterator[Candidate]:
        """A file no extension classifies: an unsupported image format is reported; a regular file
        whose first bytes start a sound is one (:func:`sniffed`); anything else is passed over."""
        why = unsupported_image(path)
        if why:
            self.on_error(path, why)
            return
        if st is None or not stat.S_ISREG(st.st_mode):
            return
        try:
            modality = sniffed(path)
        except BadInput as exc:
            self.on_error(path, str(exc))
            return
        if modality is not None:
            yield from self.file(path, st, modality)

    def folder(self, path: str) -> Iterator[Candidate]:
        entries = self._entries(path)
        for entry in entries or ():
            if entry.name.startswith(".") or entry.path in self.skip:
                continue
            try:
                is_dir = entry.is_dir(follow_symlinks=True)
            except OSError:
                is_dir = False
            if is_dir:
                yield from self.folder(entry.path)
                continue
            try:
                st = entry.stat(follow_symlinks=True)
            except FileNotFoundError:
                if entry.is_symlink() and classify(entry.path):
                    self.on_error(entry.path, "broken symlink")
                continue
            except OSError as exc:
                if classify(entry.path):
                    self.on_error(entry.path, f"cannot stat: {exc.strerror}")
                continue
            yield from self.file(entry.path, st)

    def _entries(self, path: str) -> list[os.DirEntry] | None:
        """A folder's entries by name; None (reported) when it cannot be read or was seen (a loop)."""
        why = name_problem(path)
        if why:
            self.on_error(path, f"folder {why}; its files are skipped")
            return None
        try:
            st = os.stat(path)
        except OSError as exc:
            self.on_error(path, f"cannot open folder: {exc.strerror}")
            return None
        key = (st.st_dev, st.st_ino)
        if key in self.seen_dirs:
            if os.path.islink(path):
                self.on_error(path, "symlink loop (folder already visited)")
            return None
        self.seen_dirs.add(key)
        try:
            with os.scandir(path) as it:
                return sorted(it, key=lambda e: e.name)
        except OSError as exc:
            self.on_error(path, f"cannot list folder: {exc.strerror}")
            return None
