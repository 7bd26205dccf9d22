"""Search filters: ``--where`` terms, ``--path``, ``--since``/``--until``, checked once, applied before the vector search.

A term is ``FIELD OP VALUE``, or ``FIELD`` / ``!FIELD`` (the field is known / unknown):

* ``taken``, ``mtime``: date taken (EXIF), a file's modification time: ``YYYY``, ``YYYY-MM``,
  ``YYYY-MM-DD`` or ``YYYY-MM-DD HH:MM[:SS]``, read as the local clock. A date is a period:
  ``taken=2023-06`` is all of June, ``taken<=2023`` up to the end of 2023, ``taken>2023-06-01`` from June 2 on.
* ``width``, ``height``: pixels.
* ``size``: file size, ``5MB`` (1000-based ``kB MB GB TB``, 1024-based ``KiB MiB GiB``; a bare number is bytes).
* ``duration``: seconds of a sound: ``30``, ``30s``, ``2m``, ``1h``.
* ``make``, ``model``, ``camera``: camera maker, model, either (``camera=Canon``); ``=``/``!=`` the whole
  text, ``~``/``!~`` contains; case-insensitive.
* ``gps`` / ``!gps``: the photo has / has no position; ``lat``, ``lon``: decimal degrees.
* ``orientation``: EXIF orientation 1..8.

Operators: ``= != < <= > >=`` (numbers and dates), ``= != ~ !~`` (texts). A negated term (``!=``,
``!~``, ``!FIELD``) also keeps items where the field is unknown. Terms combine with AND.

``path``: a glob on the file's absolute path (``*`` and ``?`` also match ``/``; a relative pattern
is taken from the current folder), or without glob characters a prefix. ``since``/``until``: date
taken, else (no EXIF date) a file's modification time; both ends included (``until=2023-06-30`` keeps
all of that day).
"""

from __future__ import annotations

import datetime as dt
import fnmatch
import os
import re
from dataclasses import dataclass
from typing import Any, Iterable

from mmsearch.errors import UsageError
from mmsearch.store.filtering import Cond

DATES = ("taken", "mtime")
NUMBERS = ("width", "height", "size", "duration", "lat", "lon", "orientation")
TEXTS = ("make", "model", "camera")
PRESENCE = ("gps",)
FIELDS = DATES + NUMBERS + TEXTS + PRESENCE
_TERM = re.compile(r"^\s*([A-Za-z_]+)\s*(>=|<=|!=|!~|=|<|>|~)\s*(.*?)\s*$")
_DATE = re.compile(r"^(\d{4})(?:-(\d{1,2})(?:-(\d{1,2})(?:[ T](\d{1,2}):(\d{2})(?::(\d{2}))?)?)?)?$")
_SIZE = {"": 1, "b": 1, "k": 10**3, "kb": 10**3, "m": 10**6, "mb": 10**6, "g": 10**9, "gb": 10**9, "tb": 10**12,
         "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}
_SECONDS = {"": 1, "s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600}
_NUMBER = re.compile(r"^([-+]?(?:\d+\.?\d*|\.\d+)(?:e[-+]?\d+)?)\s*([a-z]*)$", re.IGNORECASE)
_GLOB = re.compile(r"[*?\[]")


@dataclass(frozen=True)
class Filters:
    """Validated filters (:meth:`make`); ``conds`` is what the store runs, the rest what was asked."""

    conds: tuple[Cond, ...] = ()
    where: tuple[str, ...] = ()
    since: str | None = None
    until: str | None = None
    path: str | None = None  # the absolute glob (a prefix given becomes ``prefix*``)

    @property
    def active(self) -> bool:
        return bool(self.conds)

    @classmethod
    def make(cls, where: Iterable[str] | str | None = (), *, since: Any = None, until: Any = None,
             path: Any = None) -> "Filters":
        """Check and convert every filter; a bad one is a :class:`UsageError` naming the term."""
        if where is None:
            where = ()
        if isinstance(where, str):
            where = (where,)
        terms = tuple(where)
        conds = [cond for t in terms for cond in term(t)]
        glob = None
        if path is not None:
            if not isinstance(path, (str, os.PathLike)) or not os.fspath(path).strip():
                raise UsageError(f"path={path!r}: must be a glob or prefix of file paths")
            glob = _absolute_glob(os.fspath(path))
            conds.append(Cond("path", "glob", glob))
        for name, value, ops in (("since", since, (">=", 0)), ("until", until, ("<", 1))):
            if value is not None:
                taken, ns = _period(value, f"{name}={value!r}")
                conds.append(Cond("when", ops[0], (taken[ops[1]], ns[ops[1]])))
        return cls(tuple(conds), terms, _text(since), _text(until), glob)

    def shows(self, path: str) -> bool:
        """Whether a result lists this source path (a path glob hides a content's other copies)."""
        return self.path is None or fnmatch.fnmatchcase(path, self.path)


def term(text: Any) -> list[Cond]:
    """The conditions of one ``--where`` term (see the module doc)."""
    if not isinstance(text, str):
        raise UsageError(f"filter {text!r}: must be a string such as 'width>=3000'")
    bare = text.strip()
    if re.fullmatch(r"!?[A-Za-z_]+", bare):
        field = bare.lstrip("!").lower()
        if field not in FIELDS or field == "mtime":
            raise UsageError(f"filter {text!r}: {_unknown(field)}")
        return [Cond(field, "!has" if bare.startswith("!") else "has")]
    m = _TERM.match(text)
    if not m:
        raise UsageError(f"filter {text!r}: expected FIELD OP VALUE (e.g. width>=3000, make~canon, taken>=2023-06-01), "
                         "FIELD or !FIELD")
    field, op, value = m.group(1).lower(), m.group(2), m.group(3)
    where = f"filter {text!r}"
    if field not in FIELDS:
        raise UsageError(f"{where}: {_unknown(field)}")
    if not value:
        raise UsageError(f"{where}: no value after {op!r}")
    if field in PRESENCE:
        raise UsageError(f"{where}: {field} takes no value: write {field} or !{field}")
    if field in TEXTS:
        if op not in ("=", "!=", "~", "!~"):
            raise UsageError(f"{where}: {field} is text: use = != ~ (contains) or !~")
        return [Cond(field, op, value.strip("'\""))]
    if op in ("~", "!~"):
        raise UsageError(f"{where}: ~ (contains) is for text fields ({', '.join(TEXTS)})")
    if field in DATES:
        taken, ns = _period(value, where)
        bounds = taken if field == "taken" else ns
        return [_period_cond(field, op, bounds)]
    return [Cond(field, op, _number(field, value, where))]


def _period_cond(field: str, op: str, bounds: tuple[Any, Any]) -> Cond:
    """A comparison with a period [start, end) as one condition."""
    start, end = bounds
    return {"=": Cond(field, "in", bounds), "!=": Cond(field, "!in", bounds), ">=": Cond(field, ">=", start),
            ">": Cond(field, ">=", end), "<": Cond(field, "<", start), "<=": Cond(field, "<", end)}[op]


def _unknown(field: str) -> str:
    return f"unknown field {field!r} (known: {', '.join(FIELDS)})"


def _number(field: str, value: str, where: str) -> float:
    m = _NUMBER.match(value)
    units = _SIZE if field == "size" else _SECONDS if field == "duration" else {"": 1}
    unit = m.group(2).lower() if m else ""
    if not m or unit not in units:
        known = f" (units: {', '.join(u for u in units if u)})" if len(units) > 1 else ""
        raise UsageError(f"{where}: {value!r} is not a number{known}")
    number = float(m.group(1)) * units[unit]
    if number != number or number in (float("inf"), float("-inf")):
        raise UsageError(f"{where}: {value!r} is not a number")
    return number


def _period(value: Any, where: str) -> tuple[tuple[str, str], tuple[int, int]]:
    """A date (text, ``date`` or ``datetime``) as the period it names: (("YYYY-MM-DD HH:MM:SS" start,
    end), (start, end) as nanoseconds since the epoch, read as local time)."""
    if isinstance(value, dt.datetime):
        start, end = value.replace(tzinfo=None, microsecond=0), value.replace(tzinfo=None, microsecond=0) + dt.timedelta(seconds=1)
        if value.tzinfo is not None:  # an aware time: the local clock at that moment
            start = value.astimezone().replace(tzinfo=None, microsecond=0)
            end = start + dt.timedelta(seconds=1)
    elif isinstance(value, dt.date):
        start = dt.datetime(value.year, value.month, value.day)
        end = start + dt.timedelta(days=1)
    elif isinstance(value, str):
        start, end = _parse_date(value.strip(), where)
    else:
        raise UsageError(f"{where}: expected a date such as 2023-06-01")
    fmt = "%Y-%m-%d %H:%M:%S"
    return (start.strftime(fmt), end.strftime(fmt)), (_ns(start), _ns(end))


def _parse_date(text: str, where: str) -> tuple[dt.datetime, dt.datetime]:
    m = _DATE.match(text)
    if not m:
        raise UsageError(f"{where}: {text!r} is not a date (YYYY, YYYY-MM, YYYY-MM-DD or YYYY-MM-DD HH:MM[:SS])")
    y, mo, d, h, mi, s = (int(g) if g is not None else None for g in m.groups())
    try:
        if mo is None:
            return dt.datetime(y, 1, 1), dt.datetime(y + 1, 1, 1)
        if d is None:
            return dt.datetime(y, mo, 1), dt.datetime(y + mo // 12, mo % 12 + 1, 1)
        if h is None:
            day = dt.datetime(y, mo, d)
            return day, day + dt.timedelta(days=1)
        at = dt.datetime(y, mo, d, h, mi, s or 0)
        return at, at + (dt.timedelta(seconds=1) if s is not None else dt.timedelta(minutes=1))
    except (ValueError, OverflowError) as exc:
        raise UsageError(f"{where}: {text!r} is not a date ({exc})") from None


def _ns(when: dt.datetime) -> int:
    """Nanoseconds since the epoch of a local wall-clock time."""
    try:
        ns = int(when.timestamp()) * 1_000_000_000
    except (OverflowError, OSError, ValueError):  # outside what the platform's clock converts
        return 0 if when.year < 1970 else 2**62
    return min(max(ns, -2**62), 2**62)  # SQLite integers are 64-bit: years before 1678 or after 2262 clamp


def _absolute_glob(pattern: str) -> str:
    """A glob of absolute paths: a relative one from the current folder; a prefix without glob characters → ``prefix*``."""
    pattern = os.path.expanduser(pattern)
    if not pattern.startswith(("*", "?", "[")) and not os.path.isabs(pattern):
        pattern = os.path.join(os.getcwd(), pattern)
    if not _GLOB.search(pattern):
        pattern += "*"
    return pattern


def _text(value: Any) -> str | None:
    return None if value is None else str(value)
