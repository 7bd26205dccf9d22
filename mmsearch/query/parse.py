"""The query language: a text query as signed, weighted terms ("beach + sunset - people", "2:dog + cat").

Grammar (columns in messages count from 1)::

    query    := term (SPACE op SPACE term)*
    op       := "+" | "-"                       an operator stands alone, whitespace on both sides
    term     := [weight ":"] words | [weight ":"] '"' anything but a quote '"'
    weight   := digits ["." digits] | "." digits   above 0; the ":" is followed by a term, not a digit

* A ``+`` or ``-`` is an operator only when it stands alone between spaces: ``t-shirt``, ``x-ray``,
  ``C++``, ``-20%``, ``dog+cat`` and ``dog -cat`` are plain words.
* A weight is a number and a colon at the start of a term, followed by something other than a digit:
  ``2:dog``, ``0.5: cat``; ``10:30`` and ``2:1`` are plain words.
* Double quotes keep operators literal: ``"1 + 1"`` searches for the text ``1 + 1``. Enclosing quotes of
  a term are removed when the query is combined, or when they hide an operator; otherwise quotes stay
  part of the text.
* A query with neither operator nor weight (outside quotes) is one term: exactly the text as typed,
  so a query without a spaced ``+``/``-`` or a leading weight is embedded exactly as before.
* An unclosed quote is an error in a combined query; in any other it is text (``5" floppy``).

Errors point at the offending term: ``query "dog + + cat": empty term at column 7``.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from mmsearch.errors import UsageError

OPERATORS = {"+": 1.0, "-": -1.0}
_WEIGHT = re.compile(r"(\d+(?:\.\d+)?|\.\d+):(?!\d)(?=\s*\S)\s*")
_HINT = 'an operator + or - stands between two terms, with spaces around it; quote literal text: "1 + 1"'


@dataclass(frozen=True)
class Term:
    """One term of a query: its text, signed weight (negative after ``-``) and column (from 1)."""

    text: str
    weight: float = 1.0
    column: int = 1


class QuerySyntaxError(UsageError):
    """A query text the grammar does not accept; ``column`` (from 1) is where the problem is."""

    def __init__(self, query: str, column: int, problem: str, hint: str | None = _HINT) -> None:
        super().__init__(f'query "{query}": {problem} at column {column}', hint=hint)
        self.query = query
        self.column = column


def parse(query: str) -> tuple[Term, ...]:
    """The terms of a query text (a plain query: one term, the text exactly as given)."""
    ops, open_quote = _operators(query)
    weighted = _WEIGHT.match(query.lstrip()) is not None
    if not ops and not weighted:
        inner = query.strip()
        if _quoted(inner) and _operators(inner[1:-1])[0]:  # quotes that hide an operator have done their job
            return (Term(inner[1:-1], 1.0, query.index('"') + 2),)
        return (Term(query, 1.0, 1),)
    if open_quote is not None:
        raise QuerySyntaxError(query, open_quote + 1, "unclosed quote", hint="close it, or leave quotes out")
    terms = []
    starts = [(-1, 1.0)] + [(i, OPERATORS[query[i]]) for i in ops]
    for n, (at, sign) in enumerate(starts):
        end = ops[n] if n < len(ops) else len(query)
        terms.append(_term(query, at + 1, end, sign))
    return tuple(terms)


def _operators(query: str) -> tuple[list[int], int | None]:
    """Offsets of the operators outside quotes, and of a quote left open (None: all closed)."""
    ops: list[int] = []
    open_quote = None
    for i, ch in enumerate(query):
        if ch == '"':
            open_quote = i if open_quote is None else None
        elif (open_quote is None and ch in OPERATORS and (i == 0 or query[i - 1].isspace())
              and (i + 1 == len(query) or query[i + 1].isspace())):
            ops.append(i)
    if open_quote is not None:  # everything after an unclosed quote is inside it
        ops = [i for i in ops if i < open_quote]
    return ops, open_quote


def _term(query: str, start: int, end: int, sign: float) -> Term:
    """The term in ``query[start:end]`` (between operators), weighed and unquoted."""
    raw = query[start:end]
    column = start + len(raw) - len(raw.lstrip()) + 1
    text, weight = raw.strip(), 1.0
    if not text:
        raise QuerySyntaxError(query, end + 1 if end < len(query) else len(query) + 1, "empty term")
    found = _WEIGHT.match(text)
    if found is not None:
        weight = float(found.group(1))
        if weight <= 0:
            raise QuerySyntaxError(query, column, f'zero weight "{found.group(1)}:"',
                                    hint="a weight is a number above 0; write - before a term to subtract it")
        if not math.isfinite(weight):
            raise QuerySyntaxError(query, column, f'weight "{found.group(1)[:20]}…:" is too large')
        text = text[found.end():]
    if _quoted(text):
        text = text[1:-1].strip()
        if not text:
            raise QuerySyntaxError(query, column, "empty term")
    return Term(text, sign * weight, column)


def _quoted(text: str) -> bool:
    return len(text) >= 2 and text[0] == text[-1] == '"' and '"' not in text[1:-1]
