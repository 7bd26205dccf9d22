"""Photo metadata from EXIF: date taken, camera, GPS position, orientation (Pillow only; runs in decode workers).

Read with Pillow's ``getexif()`` and its ``get_ifd`` for the Exif and GPS sub-directories. Nothing here
ever fails a file: a missing, damaged or odd value leaves its field empty (``None``).

* ``taken_at``: DateTimeOriginal (else DateTimeDigitized) as ``"YYYY-MM-DD HH:MM:SS"``, the camera's
  wall clock; ``taken_offset`` its OffsetTimeOriginal (``"+02:00"``) when the file gives one. Zero dates
  (``0000:00:00 00:00:00``, written by cameras whose clock was never set) count as none.
* ``make``/``model``: as written, trailing NULs and blanks stripped.
* ``gps_lat``/``gps_lon``: decimal degrees (south and west negative). A position of exactly (0, 0),
  what receivers without a fix write, counts as none.
* ``orientation``: the EXIF value 1..8 (decode turns the pixels upright whatever it is).
"""

from __future__ import annotations

import re
import warnings
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

MAKE, MODEL, ORIENTATION = 0x010F, 0x0110, 0x0112
EXIF_IFD, GPS_IFD = 0x8769, 0x8825
DATE_ORIGINAL, DATE_DIGITIZED, OFFSET_ORIGINAL = 0x9003, 0x9004, 0x9011
GPS_LAT_REF, GPS_LAT, GPS_LON_REF, GPS_LON = 1, 2, 3, 4
MAX_TEXT = 128  # longer make/model strings are cut (they are labels, not documents)
_OFFSET = re.compile(r"^[+-](0\d|1[0-4]):[0-5]\d$")


@dataclass(frozen=True)
class Exif:
    """What a photo says about itself (every field may be ``None``)."""

    taken_at: str | None = None
    taken_offset: str | None = None
    make: str | None = None
    model: str | None = None
    gps_lat: float | None = None
    gps_lon: float | None = None
    orientation: int | None = None

    def columns(self) -> dict[str, Any]:
        """The store's ``contents`` columns of these fields."""
        d = asdict(self)
        d["camera_make"], d["camera_model"] = d.pop("make"), d.pop("model")
        return d


def read_exif(im: Any) -> Exif:
    """The metadata of an opened PIL image; an empty :class:`Exif` when it has none or it is unreadable
    (Pillow's "Corrupt EXIF data" warnings are kept quiet: the fields say what could be read)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            exif = im.getexif()
        except Exception:
            return Exif()
        fields: dict[str, Any] = {}
        for part in (_base, _dates, _gps):
            try:
                fields.update(part(exif))
            except Exception:  # one bad directory leaves its own fields empty, not the others
                pass
    return Exif(**fields)


def _base(exif: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"make": _text(exif.get(MAKE)), "model": _text(exif.get(MODEL))}
    orientation = exif.get(ORIENTATION)
    if isinstance(orientation, int) and 1 <= orientation <= 8:
        out["orientation"] = orientation
    return out


def _dates(exif: Any) -> dict[str, Any]:
    ifd = exif.get_ifd(EXIF_IFD)
    taken = _date(ifd.get(DATE_ORIGINAL)) or _date(ifd.get(DATE_DIGITIZED))
    offset = _text(ifd.get(OFFSET_ORIGINAL)) if taken else None
    return {"taken_at": taken, "taken_offset": offset if offset and _OFFSET.match(offset) else None}


def _gps(exif: Any) -> dict[str, Any]:
    ifd = exif.get_ifd(GPS_IFD)
    lat, lon = _degrees(ifd.get(GPS_LAT), ifd.get(GPS_LAT_REF), 90), _degrees(ifd.get(GPS_LON), ifd.get(GPS_LON_REF), 180)
    if lat is None or lon is None or (lat == 0.0 and lon == 0.0):
        return {}
    return {"gps_lat": lat, "gps_lon": lon}


def _text(value: Any) -> str | None:
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    if not isinstance(value, str):
        return None
    value = value.replace("\x00", " ").strip()
    return value[:MAX_TEXT] or None


def _date(value: Any) -> str | None:
    """EXIF ``"YYYY:MM:DD HH:MM:SS"`` → ``"YYYY-MM-DD HH:MM:SS"`` (None when it is not a real date)."""
    text = _text(value)
    if not text:
        return None
    try:
        when = datetime.strptime(text[:19], "%Y:%m:%d %H:%M:%S")
    except ValueError:
        return None
    return when.strftime("%Y-%m-%d %H:%M:%S")


def _degrees(value: Any, ref: Any, limit: float) -> float | None:
    """(degrees, minutes, seconds) rationals and an N/S/E/W reference → signed decimal degrees."""
    if not isinstance(value, (tuple, list)) or not 1 <= len(value) <= 3:
        return None
    parts = [float(v) for v in value]
    if any(p != p or p < 0 for p in parts):  # NaN (a 0/0 rational) or negative
        return None
    deg = sum(p / 60**i for i, p in enumerate(parts))
    if _text(ref) in ("S", "W"):
        deg = -deg
    return round(deg, 7) if abs(deg) <= limit else None
