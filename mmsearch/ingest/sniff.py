"""Is this file a sound, or a photo? Its first bytes say (:func:`sniff`, :func:`image_kind`): a recording
named ``take-3`` or a photo copied off a phone without its extension still counts. Pure byte checks,
standard library only."""

from __future__ import annotations

import struct
from typing import Iterator

from mmsearch.ingest.decode import reading

SNIFF_BYTES = 4096  # enough for two MPEG frames, an ftyp box and a leading moov's handlers, ASF headers
# MPEG audio: bitrates (kbit/s) by (version is MPEG-1, layer) and index; sample rates by version bits.
_MPEG_BITRATES = {
    (True, 1): (0, 32, 64, 96, 128, 160, 192, 224, 256, 288, 320, 352, 384, 416, 448),
    (True, 2): (0, 32, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320, 384),
    (True, 3): (0, 32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320),
    (False, 1): (0, 32, 48, 56, 64, 80, 96, 112, 128, 144, 160, 176, 192, 224, 256),
    (False, 2): (0, 8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160),
}
_MPEG_BITRATES[(False, 3)] = _MPEG_BITRATES[(False, 2)]
_MPEG_RATES = {3: (44100, 48000, 32000), 2: (22050, 24000, 16000), 0: (11025, 12000, 8000)}
_AUDIO_BRANDS = {b"M4A ", b"M4B ", b"M4P ", b"F4A ", b"F4B "}
_ASF = bytes.fromhex("3026b2758e66cf11a6d900aa0062ce6c")
_ASF_AUDIO = bytes.fromhex("409e69f84d5bcf11a8fd00805f5c442b")
_ASF_VIDEO = bytes.fromhex("c0ef19bc4d5bcf11a8fd00805f5c442b")


def _mpeg_frame(head: bytes, at: int) -> int | None:
    """The length of the MPEG audio (layer I–III) frame whose header starts at ``at``, or None."""
    if len(head) < at + 4 or head[at] != 0xFF or head[at + 1] & 0xE0 != 0xE0:
        return None
    b1, b2 = head[at + 1], head[at + 2]
    version, layer_bits = (b1 >> 3) & 3, (b1 >> 1) & 3
    br_index, sr_index, pad = b2 >> 4, (b2 >> 2) & 3, (b2 >> 1) & 1
    if version == 1 or layer_bits == 0 or br_index in (0, 15) or sr_index == 3:
        return None  # reserved values (free-format streams are too rare to sniff)
    layer = 4 - layer_bits
    mpeg1 = version == 3
    bitrate = _MPEG_BITRATES[(mpeg1, layer)][br_index] * 1000
    rate = _MPEG_RATES[version][sr_index]
    if layer == 1:
        return (12 * bitrate // rate + pad) * 4
    return (144 if mpeg1 or layer == 2 else 72) * bitrate // rate + pad


def _adts_frame(head: bytes, at: int) -> int | None:
    """The length of the AAC ADTS frame whose header starts at ``at``, or None."""
    if len(head) < at + 7 or head[at] != 0xFF or head[at + 1] & 0xF6 != 0xF0:
        return None
    if (head[at + 2] >> 2) & 0xF >= 13:
        return None
    length = ((head[at + 3] & 3) << 11) | (head[at + 4] << 3) | (head[at + 5] >> 5)
    return length if length >= 7 else None


def _frames_chain(head: bytes, frame) -> bool:
    """A frame header at 0 and, where the head is long enough to hold it, a second right after it."""
    first = frame(head, 0)
    if first is None:
        return False
    return len(head) < first + 4 or frame(head, first) is not None


def _mp4_audio(head: bytes) -> bool:
    size = struct.unpack(">I", head[:4])[0]
    brands = {head[8:12]} | {head[i:i + 4] for i in range(16, min(size, len(head)) - 3, 4)}
    if brands & _AUDIO_BRANDS:
        return True
    handlers = {head[i + 12:i + 16] for i in _find_all(head, b"hdlr")}  # a moov at the front (fast start)
    return b"soun" in handlers and b"vide" not in handlers


def _find_all(data: bytes, needle: bytes) -> Iterator[int]:
    i = data.find(needle)
    while i >= 0:
        yield i
        i = data.find(needle, i + 1)


def sniff(head: bytes) -> bool:
    """Whether ``head`` (a file's first bytes, ideally :data:`SNIFF_BYTES`) starts an audio file:
    RIFF/RF64/BW64 WAVE, W64, FLAC, Ogg (not Theora video), MP3 (ID3 tag or two chained MPEG audio
    frames), AAC ADTS, AIFF/AIFC, CAF, AU, AMR, APE, WavPack, an MP4 with an audio brand (M4A…) or whose
    leading ``moov`` has a sound track and no video, an ASF (WMA) with audio and no video."""
    h = bytes(head[:SNIFF_BYTES])
    if len(h) < 4:
        return False
    if h[:4] in (b"RIFF", b"RIFX", b"RF64", b"BW64"):
        return h[8:12] == b"WAVE"
    if h[:4] == b"FORM":
        return h[8:12] in (b"AIFF", b"AIFC", b"8SVX")
    if h[:4] == b"OggS":
        return b"\x80theora" not in h and b"\x80daala" not in h
    if h[:4] in (b"fLaC", b"caff", b".snd", b"MAC ", b"wvpk", b"TTA1") or h.startswith(b"#!AMR"):
        return True
    if h[:4] == b"riff" and h[16:24] == b"wave\xf3\xac\xd3\x11":  # Sony Wave64
        return True
    if h[:3] == b"ID3" and len(h) >= 10 and h[3] < 0xFF:
        return True
    if len(h) >= 12 and h[4:8] == b"ftyp":
        return _mp4_audio(h)
    if h[:16] == _ASF:
        return _ASF_AUDIO in h and _ASF_VIDEO not in h
    return _frames_chain(h, _mpeg_frame) or _frames_chain(h, _adts_frame)


# ---- images ------------------------------------------------------------------------------------------
#: ISO-BMFF brands (major or compatible) of still images: HEIF (HEVC in a phone's .heic), AVIF, Canon CR3
HEIF_BRANDS = frozenset({b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"hevm", b"hevs", b"mif1", b"msf1"})
AVIF_BRANDS = frozenset({b"avif", b"avis"})
RAW_BRANDS = frozenset({b"crx "})
#: signatures of camera raws that are not plain TIFFs: Olympus ORF, Panasonic RW2, Fujifilm RAF, Sigma X3F,
#: Minolta MRW (TIFF-based raws, DNG, CR2, NEF, ARW…, are told from plain TIFFs by their tags: formats.py)
_RAW_SIGNATURES = (b"IIRO", b"IIRS", b"MMOR", b"IIU\x00", b"FUJIFILMCCD-RAW", b"FOVb", b"\x00MRM")
#: signatures of the still-image formats people keep photos in (Pillow opens them)
_PILLOW_SIGNATURES = (
    b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"GIF87a", b"GIF89a", b"II*\x00", b"MM\x00*", b"8BPS", b"qoif",
    b"\x00\x00\x00\x0cjP  \r\n\x87\n", b"\xffO\xffQ",  # JPEG 2000: the JP2 box, a bare codestream
)
_JXL_SIGNATURES = (b"\xff\x0a", b"\x00\x00\x00\x0cJXL \r\n\x87\n")


def ftyp_brands(head: bytes) -> frozenset[bytes]:
    """The major and compatible brands of an ISO-BMFF ``ftyp`` box at the start of ``head`` (empty if none)."""
    if len(head) < 12 or head[4:8] != b"ftyp":
        return frozenset()
    size = struct.unpack(">I", head[:4])[0]
    end = min(max(size, 12), len(head), 4096)
    return frozenset({head[8:12]} | {head[i:i + 4] for i in range(16, end - 3, 4)})


def image_kind(head: bytes) -> str | None:
    """What still image ``head`` (a file's first bytes) starts, by its signature: ``"heif"``, ``"avif"``,
    ``"jxl"``, ``"raw"`` (a camera raw that is not a TIFF), ``"pillow"`` (JPEG, PNG, GIF, WebP, TIFF, BMP,
    JPEG 2000, PSD, QOI), or None. A TIFF may still be a camera raw (DNG, CR2, NEF…): ``"pillow"`` here."""
    h = bytes(head[:64])
    brands = ftyp_brands(bytes(head[:4096]))
    if brands:
        if brands & AVIF_BRANDS:
            return "avif"
        if brands & RAW_BRANDS:
            return "raw"
        return "heif" if brands & HEIF_BRANDS else None
    if h.startswith(_JXL_SIGNATURES):
        return "jxl"
    if h.startswith(_RAW_SIGNATURES):
        return "raw"
    if h.startswith(_PILLOW_SIGNATURES) or (h[:4] == b"RIFF" and h[8:12] == b"WEBP"):
        return "pillow"
    if h[:2] == b"BM" and len(h) >= 18 and struct.unpack("<I", h[14:18])[0] in (12, 40, 52, 56, 64, 108, 124):
        return "pillow"  # a BMP: its DIB header has one of the sizes the format defines
    return None


def read_head(path: str, n: int = SNIFF_BYTES) -> bytes:
    """The first ``n`` bytes of a file; read problems are :class:`BadInput`."""
    with reading(), open(path, "rb") as f:
        return f.read(n)


