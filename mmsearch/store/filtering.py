"""Pre-filters as SQL: conditions on contents (metadata) and their sources (path, mtime) → candidate ids.

A search with filters first asks the database which contents may be returned (one query over
``contents``, sources joined through ``EXISTS``), then scores only those (see
:mod:`mmsearch.query.search`). :class:`Cond` is the neutral form :mod:`mmsearch.query.filters` parses
user terms into; values arrive already checked and converted (numbers, ``"YYYY-MM-DD HH:MM:SS"``
strings, nanoseconds).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import re

from sqlalchemy import Boolean, and_, exists, func, literal, not_, or_
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.functions import FunctionElement

from mmsearch.store.schema import Content, Source

#: numeric fields → their column on ``contents``
NUMBERS = {"width": Content.width, "height": Content.height, "duration": Content.duration, "size": Content.byte_size,
           "orientation": Content.orientation, "lat": Content.gps_lat, "lon": Content.gps_lon}
#: text fields → their column(s); ``camera`` is make, model and "make model"
TEXTS = {"make": (Content.camera_make,), "model": (Content.camera_model,),
         "camera": (Content.camera_make, Content.camera_model,
                    func.coalesce(Content.camera_make, "") + " " + func.coalesce(Content.camera_model, ""))}
OPS = ("=", "!=", "<", "<=", ">", ">=", "~", "!~")
NEGATED = {"!=": "=", "!~": "~", "!in": "in"}


@dataclass(frozen=True)
class Cond:
    """One condition. ``field``: a key of :data:`NUMBERS` or :data:`TEXTS`, or ``taken`` (value a
    ``"YYYY-MM-DD HH:MM:SS"`` string), ``mtime`` (nanoseconds), ``when`` (value ``(taken string,
    mtime ns)``: date taken, else a file's mtime), ``gps``, ``path`` (a GLOB pattern) or ``under`` (a folder).
    ``op``: one of :data:`OPS` (``~``: text contains, case-insensitive), ``in`` (value ``(start, end)``:
    start <= field < end) or ``!in``, ``has`` / ``!has`` (the field is known / unknown); ``path`` and
    ``under`` take any op (it is not used)."""

    field: str
    op: str
    value: Any = None


def _compare(col, op: str, value: Any):
    if op == "in":  # a period: [start, end)
        return and_(col >= value[0], col < value[1])
    return {"=": col == value, "<": col < value, "<=": col <= value, ">": col > value, ">=": col >= value}[op]


def _on_sources(cond) -> Any:
    return exists().where(Source.content_id == Content.id, cond)


def _presence(c: Cond):
    columns = {**NUMBERS, "gps": Content.gps_lat, "taken": Content.taken_at, "make": Content.camera_make,
               "model": Content.camera_model}
    col = columns.get(c.field)
    if c.field == "camera":
        known = or_(Content.camera_make.is_not(None), Content.camera_model.is_not(None))
    elif col is None:
        raise ValueError(f"no presence test for {c.field!r}")
    else:
        known = col.is_not(None)
    return known if c.op == "has" else not_(known)


def clause(c: Cond):
    """The SQL condition of one :class:`Cond`. A negation (``!=``, ``!in``) also matches items where the
    field is unknown (``make!=Canon`` keeps the photos without a make, and the sounds)."""
    from mmsearch.store.read import under_clause

    if c.op in ("has", "!has"):
        return _presence(c)
    if c.op in NEGATED:
        return not_(func.coalesce(clause(Cond(c.field, NEGATED[c.op], c.value)), False))
    if c.field == "path":
        return _on_sources(and_(Source.kind == "file", Glob(Source.uri, c.value)))
    if c.field == "under":
        return _on_sources(and_(Source.kind == "file", under_clause(Source.uri, c.value)))
    if c.field == "when":
        taken, ns = c.value
        return or_(_compare(Content.taken_at, c.op, taken),
                   and_(Content.taken_at.is_(None),
                        _on_sources(and_(Source.kind == "file", _compare(Source.mtime_ns, c.op, ns)))))
    if c.field == "mtime":
        return _on_sources(and_(Source.kind == "file", _compare(Source.mtime_ns, c.op, c.value)))
    if c.field == "taken":
        return _compare(Content.taken_at, c.op, c.value)
    if c.field in NUMBERS:
        return _compare(NUMBERS[c.field], c.op, c.value)
    if c.field in TEXTS:
        cols = [func.mm_fold(col) for col in TEXTS[c.field]]  # registered by mmsearch.store.session
        value = str(c.value).casefold()
        if c.op == "~":
            return or_(*(col.contains(value, autoescape=True) for col in cols))
        if c.op == "=":
            return or_(*(col == value for col in cols))
    raise ValueError(f"no condition {c.field} {c.op}")


def where(conds: Sequence[Cond]):
    """All conditions together (AND), over ``contents``."""
    return and_(*(clause(c) for c in conds))


class Glob(FunctionElement):
    """``column`` matches the glob ``pattern`` (SQLite's GLOB: ``*`` and ``?`` also match ``/``, ``[...]``
    classes, case-sensitive): ``GLOB`` on SQLite, the same pattern as an anchored regular expression on
    PostgreSQL."""

    type = Boolean()
    inherit_cache = True
    name = "glob"

    def __init__(self, column, pattern: str) -> None:
        super().__init__(column, literal(pattern), literal(glob_regex(pattern)))


@compiles(Glob)
def _glob(element: Glob, compiler, **kw) -> str:
    column, pattern, _ = element.clauses
    return f"({compiler.process(column, **kw)} GLOB {compiler.process(pattern, **kw)})"


@compiles(Glob, "postgresql")
def _glob_regex(element: Glob, compiler, **kw) -> str:
    column, _, regex = element.clauses
    return f"({compiler.process(column, **kw)} ~ {compiler.process(regex, **kw)})"


def glob_regex(pattern: str) -> str:
    """A glob as SQLite's GLOB reads it, written as an anchored regular expression (POSIX ARE / Python)."""
    out, i = ["^"], 0
    while i < len(pattern):
        ch = pattern[i]
        end = pattern.find("]", i + 2) if ch == "[" else -1  # a "]" right after "[" (or "[^") is a member
        if ch == "[" and pattern[i + 1:i + 2] == "^":
            end = pattern.find("]", i + 3)
        if ch == "*":
            out.append(".*")
        elif ch == "?":
            out.append(".")
        elif ch == "[" and end != -1:
            body = pattern[i + 1:end]
            negate, body = (True, body[1:]) if body.startswith("^") else (False, body)
            out.append("[" + ("^" if negate else "") + body.replace("\\", "\\\\") + "]")
            i = end
        else:
            out.append(re.escape(ch))
        i += 1
    return "".join(out) + "$"
