"""Texts added directly (not files): from Python, or from a CSV / JSONL file of texts."""

from __future__ import annotations

import csv
import io
import hashlib
import json
from pathlib import Path
from typing import Iterable, Mapping

from mmsearch.errors import UsageError

MAX_TEXT_CHARS = 100_000


def text_sha(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def normalise_items(texts: Iterable[str] | Mapping[str, str]) -> list[tuple[str, str]]:
    """(key, text) pairs; keys default to the text's hash so re-adding the same text is a no-op."""
    if isinstance(texts, str):
        raise UsageError("add_texts takes a list of strings or a {id: text} mapping, not one string")
    pairs = list(texts.items()) if isinstance(texts, Mapping) else [(None, t) for t in texts]
    out = []
    for n, (key, text) in enumerate(pairs):
        if not isinstance(text, str):
            raise UsageError(f"text #{n} is {type(text).__name__}, not str")
        text = text.strip()
        if not text:
            raise UsageError(f"text #{n}{f' ({key})' if key else ''} is empty")
        if len(text) > MAX_TEXT_CHARS:
            raise UsageError(f"text #{n} is longer than {MAX_TEXT_CHARS:,} characters")
        out.append((str(key) if key is not None else text_sha(text)[:16], text))
    return out


def read_text_file(path: str | Path) -> list[tuple[str, str]]:
    """Read a ``.csv`` (column ``text``, optional ``id``) or ``.jsonl`` (``{"text": …, "id": …}``) file."""
    p = Path(path)
    try:
        raw = p.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise UsageError("no such file", path=str(p)) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"cannot read: {exc}", path=str(p)) from None
    rows: list[dict] = []
    if p.suffix.lower() == ".csv":
        reader = csv.DictReader(io.StringIO(raw, newline=""))  # keeps newlines inside quoted fields
        if not reader.fieldnames or "text" not in reader.fieldnames:
            raise UsageError("CSV needs a 'text' column (and optionally 'id')", path=str(p))
        rows = list(reader)
    elif p.suffix.lower() in (".jsonl", ".ndjson"):
        for n, line in enumerate(raw.splitlines(), 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except ValueError as exc:
                raise UsageError(f"line {n}: not JSON ({exc.msg})", path=str(p)) from None
            if not isinstance(obj, dict) or not isinstance(obj.get("text"), str):
                raise UsageError(f"line {n}: expected an object with a string 'text'", path=str(p))
            rows.append(obj)
    else:
        raise UsageError("expected a .csv or .jsonl file of texts", path=str(p))
    mapping: dict[str, str] = {}
    plain: list[str] = []
    for row in rows:
        if row.get("id") not in (None, ""):
            mapping[str(row["id"])] = row["text"]
        else:
            plain.append(row["text"])
    return normalise_items(mapping) + normalise_items(plain)
