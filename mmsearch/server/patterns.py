"""The filter grammar (:mod:`mmsearch.query.filters`) as regular expressions, for the OpenAPI schema.

The schema declares these patterns so that a client (and schemathesis) knows which ``where``,
``since`` and ``until`` values are well formed; the server does not enforce them: the engine reads
every value, so the API accepts exactly what ``mmsearch query --where`` accepts. Each pattern is a
subset of what the engine accepts (every string it matches is a valid filter; tests check this
by drawing from the patterns), and leaves out only oddities: whitespace other than spaces and tabs,
a year 9999, more than 99 in an exponent.

Written in the dialect JSON Schema, Python and the validator share: ``^…$`` anchors, explicit
character classes (no ``\\s``, ``\\d``, inline flags or look-arounds).
"""

from __future__ import annotations

from mmsearch.query.filters import DATES, FIELDS, NUMBERS, PRESENCE, TEXTS
from mmsearch.query.filters import _SECONDS as SECONDS_UNITS  # one list of units: the engine's
from mmsearch.query.filters import _SIZE as SIZE_UNITS

MAX_TERM_CHARS = 200  # also bounds a number's digits, so no value the pattern allows overflows
WS = "[ \t]*"
# Python's whitespace (str.isspace), spelled out: a value must hold something else
BLANK = ("\t\n\u000b\u000c\r\u001c-\u001f \u0085\u00a0\u1680\u2000-\u200a"
         "\u2028\u2029\u202f\u205f\u3000")


def _nocase(word: str) -> str:
    return "".join(f"[{c.upper()}{c.lower()}]" if c.isalpha() else c for c in word)


def _any(words: tuple[str, ...] | list[str]) -> str:
    return "(" + "|".join(_nocase(w) for w in sorted(words, key=len, reverse=True)) + ")"


# ---- dates: YYYY[-MM[-DD[ HH:MM[:SS]]]], only real ones (years 0001-9998, leap days included) ----------
_YEAR = "(000[1-9]|00[1-9][0-9]|0[1-9][0-9]{2}|[1-8][0-9]{3}|9[0-8][0-9]{2}|99[0-8][0-9]|999[0-8])"
_LEAP = "(([0-9]{2}(0[48]|[2468][048]|[13579][26]))|(([02468][48]|[13579][26]|[2468]0)00))"
_MONTH = "(0?[1-9]|1[0-2])"
_DAY_ANY = "(0?[1-9]|1[0-9]|2[0-8])"
_TIME = "([ T]([01]?[0-9]|2[0-3]):[0-5][0-9](:[0-5][0-9])?)?"
_DAY = (f"({_YEAR}-(({_MONTH}-{_DAY_ANY})|((0?[13-9]|1[0-2])-(29|30))|((0?[13578]|1[02])-31)){_TIME}"
        f"|{_LEAP}-0?2-29{_TIME})")
DATE = f"({_DAY}|{_YEAR}(-{_MONTH})?)"
DATE_PATTERN = f"^{WS}{DATE}{WS}$"

# ---- numbers, with the units of size and duration -------------------------------------------------
NUMBER = "[-+]?([0-9]+(\\.[0-9]*)?|\\.[0-9]+)([eE][-+]?[0-9]{1,2})?"


def _with_units(units: dict[str, int]) -> str:
    named = [u for u in units if u]
    return f"{NUMBER}({WS}{_any(named)})?"


_COMPARE = "(>=|<=|!=|=|<|>)"
_TEXT_OPS = "(!=|!~|=|~)"
_VALUE = f"[^\n]*[^{BLANK}][^\n]*"
_PLAIN = [f for f in NUMBERS if f not in ("size", "duration")]
_TERMS = [
    f"{_any(DATES)}{WS}{_COMPARE}{WS}{DATE}",
    f"{_any(_PLAIN)}{WS}{_COMPARE}{WS}{NUMBER}",
    f"{_nocase('size')}{WS}{_COMPARE}{WS}{_with_units(SIZE_UNITS)}",
    f"{_nocase('duration')}{WS}{_COMPARE}{WS}{_with_units(SECONDS_UNITS)}",
    f"{_any(TEXTS)}{WS}{_TEXT_OPS}{WS}{_VALUE}",
    f"!?{_any([f for f in FIELDS if f != 'mtime'])}",
]
WHERE_PATTERN = f"^{WS}(" + "|".join(f"({t})" for t in _TERMS) + f"){WS}$"

__all__ = ["DATE_PATTERN", "FIELDS", "MAX_TERM_CHARS", "PRESENCE", "WHERE_PATTERN"]
