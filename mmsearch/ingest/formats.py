"""Photo formats: which files are images (:func:`image_extensions`), and how their bytes open as a PIL
image (:func:`open_image`, what :func:`mmsearch.ingest.decode.decode_image` calls).

* Everything the installed Pillow opens, by the extensions Pillow registers, except what is no photo
  (:data:`NOT_PHOTOS`: documents that need Ghostscript, Pillow's identify-only stubs, Windows metafiles).
* HEIC/HEIF from phones (pillow-heif, a core dependency): libheif applies the file's rotation and mirror
  and pillow-heif resets the EXIF orientation to 1, so nothing is rotated twice.
* AVIF: Pillow's own (11.3+ wheels, built with libavif); its EXIF orientation is applied like a JPEG's.
* JPEG XL (pillow-jxl-plugin, the ``photos`` extra).
* Camera raws (rawpy/LibRaw, a core dependency): the embedded JPEG preview when there is one whose
  short side is at least :data:`RAW_PREVIEW_MIN_SIDE` (it then gets the reduced JPEG decode too), else a
  demosaic (half size when that is still large enough); both shown in the raw's orientation.

A format whose plugin is missing is a per-file :class:`~mmsearch.ingest.decode.BadInput` that names what to
install, never a silent skip. Plugins register lazily, once per process, on the first image that needs one;
decode workers stay light (Pillow, numpy, rawpy; no torch).
"""

from __future__ import annotations

import io
import struct
import warnings
from functools import cache
from typing import Any

from mmsearch.ingest.decode import BadInput
from mmsearch.ingest.sniff import image_kind

#: what LibRaw reads that people name their camera files (kept to extensions nothing else uses)
RAW_EXTENSIONS = frozenset(
    "." + e for e in (
        "3fr arw cr2 cr3 crw dcr dng erf fff iiq k25 kdc mef mos mrw nef nrw orf ori pef raf raw rw2 rwl sr2 srf "
        "srw x3f"
    ).split())
#: formats a plugin provides, by the extensions it registers (listed here so that a file is an image, and a
#: missing plugin a per-file error, whether or not the plugin is installed)
PLUGIN_EXTENSIONS = {
    "HEIF": frozenset({".heic", ".heif", ".hif", ".heics", ".heifs"}),
    "AVIF": frozenset({".avif", ".avifs"}),
    "JXL": frozenset({".jxl"}),
}
#: the extensions most photos have, known to be images without asking Pillow (a re-sync of a photo
#: folder imports no Pillow)
COMMON_IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff"}
).union(RAW_EXTENSIONS, *PLUGIN_EXTENSIONS.values())
#: extensions no image format uses (sidecars, documents, videos, archives, code), known without asking
#: Pillow either (tests check that Pillow registers none of them)
NOT_IMAGE_EXTENSIONS = frozenset(
    "." + e for e in (
        "xmp aae json xml yaml yml toml ini cfg conf log csv tsv txt md html htm css js ts py sh db sqlite "
        "sqlite3 lock pdf eps ai ps doc docx xls xlsx ppt pptx odt ods odp rtf epub zip gz tgz bz2 xz zst 7z "
        "rar tar iso svg svgz mp4 m4v mov mkv webm avi wmv flv mpg mpeg mts m2ts 3gp thm lrf lrv insv srt vtt "
        "nfo cue m3u m3u8 torrent part crdownload tmp bak swp exe dll so"
    ).split())
#: Pillow formats not indexed as photos, and why
NOT_PHOTOS = {
    "EPS": "PostScript: a document, and Pillow needs Ghostscript to render it",
    "PDF": "a document (Pillow only writes PDFs)",
    "MPEG": "a video: Pillow only identifies it",
    "BUFR": "weather data: an identify-only stub in Pillow",
    "GRIB": "weather data: an identify-only stub in Pillow",
    "HDF5": "scientific data (and Keras models): an identify-only stub in Pillow",
    "WMF": "Windows metafile: Pillow draws it only on Windows",
    "IPTC": "a block of metadata, not a picture",
}
#: the shorter side a raw's embedded preview needs to be used instead of a demosaic: every open_clip and
#: SigLIP model's input (224 to 512 pixels) is then made by downscaling
RAW_PREVIEW_MIN_SIDE = 512
#: how to get each plugin, for the per-file error when it is missing
INSTALL = {
    "HEIF": "HEIC/HEIF needs pillow-heif (a dependency of mmsearch): pip install pillow-heif",
    "AVIF": "AVIF needs Pillow 11.3 or later built with libavif: pip install -U pillow",
    "JXL": "JPEG XL needs the photos extra: pip install 'mmsearch[photos]'",
    "RAW": "camera raw needs rawpy (a dependency of mmsearch): pip install rawpy",
}
_LABELS = {"HEIF": "HEIC/HEIF", "AVIF": "AVIF", "JXL": "JPEG XL"}
# LibRaw's `flip` → the EXIF orientation that shows the image the same way (dcraw maps EXIF o to "50132467"[o])
_FLIP_TO_EXIF = {0: 1, 1: 2, 2: 4, 3: 3, 4: 5, 5: 8, 6: 6, 7: 7}
_TIFF_RAW_PHOTOMETRIC = (32803, 34892)  # CFA, LinearRaw
_DNG_VERSION = 50706


@cache
def image_extensions() -> frozenset[str]:
    """Extensions (lower case, with the dot) of every image format indexed: Pillow's registered OPEN
    formats (less :data:`NOT_PHOTOS`), the plugins' (:data:`PLUGIN_EXTENSIONS`) and camera raws'."""
    from PIL import Image

    Image.init()
    opens = set(Image.OPEN) | {"MPO"}  # MPO (stereo JPEGs) opens through the JPEG plugin's factory
    pillow = {ext for ext, fmt in Image.registered_extensions().items() if fmt in opens and fmt not in NOT_PHOTOS}
    return frozenset(pillow).union(RAW_EXTENSIONS, *PLUGIN_EXTENSIONS.values())


def is_image_extension(ext: str) -> bool:
    """Whether files with extension ``ext`` (lower case, with the dot) are images (:func:`image_extensions`);
    Pillow is asked only for an extension that is in neither quick list."""
    if ext in COMMON_IMAGE_EXTENSIONS:
        return True
    if not ext or ext in NOT_IMAGE_EXTENSIONS:
        return False
    return ext in image_extensions()


@cache
def _plugin(name: str) -> bool:
    """Register a plugin format with Pillow (once per process); False when it is not installed."""
    try:
        if name == "HEIF":
            import pillow_heif

            pillow_heif.register_heif_opener()
        elif name == "JXL":
            import pillow_jxl  # noqa: F401  (registers JXL with Pillow on import)
        elif name == "AVIF":
            from PIL import features

            return bool(features.check("avif"))
        elif name == "RAW":
            import rawpy  # noqa: F401
    except ImportError:
        return False
    return True


def open_image(data: bytes, *, max_pixels: int | None = None) -> Any:
    """Open image bytes as a PIL image, its pixels not necessarily decoded yet (``draft`` still possible).

    Camera raws are told by their content (a raw signature, or a TIFF with DNG or CFA tags) and opened
    with rawpy; anything else goes to Pillow, and what Pillow does not identify is tried as a raw before
    ``UnidentifiedImageError`` is let through. A missing plugin, a raw LibRaw cannot read, or one above
    ``max_pixels`` is :class:`BadInput`; Pillow's own errors are the caller's to word.
    """
    from PIL import Image, UnidentifiedImageError

    kind = image_kind(data[:4096])
    fmt = {"heif": "HEIF", "avif": "AVIF", "jxl": "JXL"}.get(kind or "")
    if fmt is not None and not _plugin(fmt):
        raise BadInput(INSTALL[fmt])
    if fmt == "JXL" and max_pixels is not None:  # the plugin decodes while opening: check the size first
        size = jxl_size(data)
        if size is not None and size[0] * size[1] > max_pixels:
            w, h = size
            raise BadInput(f"image too large ({w}×{h} = {w * h:,} pixels > limit {max_pixels:,})")
    if kind == "raw" or (kind == "pillow" and _tiff_is_raw(data)):
        return open_raw(data, max_pixels)
    if kind is None:  # a format our signatures do not know: registered plugins may
        for name in ("HEIF", "JXL"):
            _plugin(name)
    try:
        with warnings.catch_warnings():  # the caller's pixel limit decides, with a clearer message
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            return Image.open(io.BytesIO(data))
    except UnidentifiedImageError:
        if kind is None and _plugin("RAW") and _libraw_opens(data):
            return open_raw(data, max_pixels)
        if fmt is not None:  # its signature said what it is: it is that, damaged
            raise BadInput(f"damaged or truncated {_LABELS[fmt]} file (cannot be opened)") from None
        raise
    except (Image.DecompressionBombError, MemoryError):
        raise
    except Exception:
        if fmt == "JXL":  # the plugin decodes while opening; libjxl's own message says nothing useful
            raise BadInput("damaged or truncated JPEG XL file (libjxl cannot decode it)") from None
        raise


def _libraw_opens(data: bytes) -> bool:
    import rawpy

    try:
        with rawpy.imread(io.BytesIO(data)):
            return True
    except (rawpy.LibRawError, ValueError, OSError):
        return False


def open_raw(data: bytes, max_pixels: int | None = None) -> Any:
    """A camera raw as a PIL image shown in the raw's orientation: its embedded JPEG preview when that is
    large enough (:data:`RAW_PREVIEW_MIN_SIDE`; opened, not decoded, with the orientation in its EXIF),
    else a demosaic (LibRaw's, with the camera's white balance; half size when that is still large enough)."""
    if not _plugin("RAW"):
        raise BadInput(INSTALL["RAW"])
    import rawpy

    try:
        with rawpy.imread(io.BytesIO(data)) as raw:
            sizes = raw.sizes
            if max_pixels is not None and sizes.width * sizes.height > max_pixels:
                pixels = sizes.width * sizes.height
                raise BadInput(f"image too large ({sizes.width}×{sizes.height} = {pixels:,} pixels > limit {max_pixels:,})")
            orientation = _FLIP_TO_EXIF.get(sizes.flip, 1)
            preview = _preview(raw, rawpy, orientation)
            if preview is not None:
                return preview
            half = min(sizes.width, sizes.height) // 2 >= RAW_PREVIEW_MIN_SIDE
            rgb = raw.postprocess(use_camera_wb=True, output_bps=8, half_size=half)  # applies the flip
    except rawpy.LibRawFileUnsupportedError:
        raise BadInput("not a camera raw LibRaw can read (unsupported or damaged file)") from None
    except (rawpy.LibRawError, ValueError) as exc:
        raise BadInput(f"cannot decode camera raw: {exc}") from None
    from PIL import Image

    return Image.fromarray(rgb, "RGB")


def _preview(raw: Any, rawpy: Any, orientation: int) -> Any:
    """The raw's embedded preview if it is a JPEG (or bitmap) at least :data:`RAW_PREVIEW_MIN_SIDE` on its
    short side, with the raw's ``orientation`` in its EXIF (replacing the preview's own); else None."""
    from PIL import Image

    try:
        thumb = raw.extract_thumb()
    except (rawpy.LibRawError, ValueError):  # no preview, or one LibRaw cannot unpack
        return None
    try:
        if thumb.format == rawpy.ThumbFormat.JPEG:
            im = Image.open(io.BytesIO(thumb.data))
            if im.format != "JPEG":
                return None
        elif thumb.format == rawpy.ThumbFormat.BITMAP:
            im = Image.fromarray(thumb.data, "RGB")
        else:
            return None
    except Exception:  # a damaged preview: the raw data itself may still be fine
        return None
    if min(im.size) < RAW_PREVIEW_MIN_SIDE:
        return None
    im.getexif()[0x0112] = orientation  # what exif_transpose and the reduced decode read
    return im


def _tiff_is_raw(data: bytes) -> bool:
    """Whether a TIFF is a camera raw: a Canon CR2 marker, a DNGVersion tag, or an image of CFA or
    linear raw data in IFD0, its chain or its SubIFDs (a bounded walk: a damaged file is no raw)."""
    order = {b"II": "<", b"MM": ">"}.get(data[:2])
    if order is None or len(data) < 16:
        return False
    if data[8:10] == b"CR":  # Canon CR2
        return True
    todo, seen = [struct.unpack(order + "I", data[4:8])[0]], set()
    while todo and len(seen) < 16:
        at = todo.pop()
        if at in seen or at + 2 > len(data):
            continue
        seen.add(at)
        tags = _ifd(data, at, order)
        if _DNG_VERSION in tags or tags.get(262) in _TIFF_RAW_PHOTOMETRIC:
            return True
        todo.extend(v for v in (tags.get("next"), *tags.get(330, ())) if isinstance(v, int) and v > 0)
    return False


def _ifd(data: bytes, at: int, order: str) -> dict[Any, Any]:
    """The tags of the TIFF IFD at ``at`` that :func:`_tiff_is_raw` reads: 262 (photometric), 330
    (SubIFD offsets, a tuple), 50706 (present), and ``"next"`` (the next IFD's offset)."""
    (n,) = struct.unpack_from(order + "H", data, at)
    tags: dict[Any, Any] = {}
    end = at + 2 + 12 * n
    if end + 4 > len(data):
        return tags
    for i in range(n):
        tag, typ, count = struct.unpack_from(order + "HHI", data, at + 2 + 12 * i)
        field = at + 2 + 12 * i + 8
        if tag == 262 and typ == 3:
            tags[262] = struct.unpack_from(order + "H", data, field)[0]
        elif tag == 330 and typ in (4, 13) and 0 < count <= 16:
            where = field if count == 1 else struct.unpack_from(order + "I", data, field)[0]
            if where + 4 * count <= len(data):
                tags[330] = struct.unpack_from(order + "I" * count, data, where)
        elif tag == _DNG_VERSION:
            tags[tag] = True
    tags["next"] = struct.unpack_from(order + "I", data, end)[0]
    return tags


_JXL_RATIOS = {1: (1, 1), 2: (12, 10), 3: (4, 3), 4: (3, 2), 5: (16, 9), 6: (5, 4), 7: (2, 1)}


def jxl_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from a JPEG XL's SizeHeader (a bare codestream, or the first ``jxlc``/``jxlp`` box
    of a container), read without decoding; None when it cannot be found."""
    at = 0
    if data[:4] == b"\x00\x00\x00\x0c":  # the container: walk its boxes to the codestream
        at = None
        pos = 0
        while pos + 8 <= len(data):
            size, box = struct.unpack_from(">I4s", data, pos)
            head = 8
            if size == 1 and pos + 16 <= len(data):
                size, head = struct.unpack_from(">Q", data, pos + 8)[0], 16
            if box in (b"jxlc", b"jxlp"):
                at = pos + head + (4 if box == b"jxlp" else 0)
                break
            if size < head:  # 0: the last box, to the end of the file
                break
            pos += size
        if at is None:
            return None
    if data[at:at + 2] != b"\xff\x0a":
        return None
    bits = int.from_bytes(data[at + 2:at + 14], "little")  # the SizeHeader is at most 2 + 66 bits
    pos = 0

    def take(n: int) -> int:
        nonlocal pos
        value = (bits >> pos) & ((1 << n) - 1)
        pos += n
        return value

    def side(small: bool) -> int:
        if small:
            return (take(5) + 1) * 8
        return take((9, 13, 18, 30)[take(2)]) + 1

    small = bool(take(1))
    height = side(small)
    ratio = take(3)
    if ratio == 0:
        return side(small), height
    num, den = _JXL_RATIOS[ratio]
    return height * num // den, height
