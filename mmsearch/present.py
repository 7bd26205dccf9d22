"""Render Engine results for people (rich tables) and scripts (json / jsonl / paths).

For people, every user- or file-system-supplied string goes through :func:`styled` (never into a
markup string or a str table cell): it prints as data. Scripts get json.dumps / print: raw.
"""

from __future__ import annotations

import json
import os
import re
import sys
from enum import Enum
from pathlib import Path
from typing import Any, Iterable, Sequence

from rich.console import Console
from rich.measure import Measurement
from rich.segment import Segments
from rich.style import Style
from rich.table import Table
from rich.text import Text

from mmsearch.types import DupCluster, ErrorInfo, Hit, IndexReport


class Format(str, Enum):
    table = "table"
    json = "json"
    jsonl = "jsonl"
    paths = "paths"


def pick_format(as_json: bool, as_jsonl: bool, as_paths: bool) -> Format:
    chosen = [f for f, on in ((Format.json, as_json), (Format.jsonl, as_jsonl), (Format.paths, as_paths)) if on]
    if len(chosen) > 1:
        from mmsearch.errors import UsageError

        raise UsageError("choose one of --json, --jsonl, --paths")
    return chosen[0] if chosen else Format.table


_SLOT = "\x00"
#: what a name must not send to a terminal: C0/C1 controls (escape sequences, newlines, bells) and the
#: bidirectional overrides that make ``gpj.exe`` read as ``exe.jpg``
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def printable(value: str) -> str:
    """``value`` with every control character shown as an escape (``\\x1b``, ``\\u202e``): a file name
    or text can neither move the cursor, retitle or recolour the terminal, nor reorder what is shown."""
    return _CONTROL.sub(lambda m: f"\\x{ord(m[0]):02x}" if ord(m[0]) < 0x100 else f"\\u{ord(m[0]):04x}", value)


def styled(template: str, *values: object) -> Text:
    """Our markup ``template`` ([dim], [red] …) with each ``{}`` filled by a value shown exactly as it is.

    Values are what users and the file system supply (paths, texts, error reasons, model specs): they
    never reach the markup parser, so ``[draft] x.png`` keeps its brackets, ``:smile:`` stays text, and
    ``[/b]`` in a folder name (or a ``[`` in a path and a ``]`` in the reason after it) cannot end the
    command with a MarkupError; control characters in it are escaped (:func:`printable`), so a name cannot
    send escape sequences to the terminal either. A value takes the style around its slot (``[dim]{}[/dim]``); a
    :class:`~rich.text.Text` value keeps its own styles too.
    """
    marked = Text.from_markup(template.replace("{}", _SLOT), emoji=False)
    slots = [i for i, ch in enumerate(marked.plain) if ch == _SLOT]
    if len(slots) != len(values):
        raise ValueError(f"{template!r} has {len(slots)} slots for {len(values)} values")
    out, todo = Text(), iter(values)
    for n, piece in enumerate(marked.divide(cut for i in slots for cut in (i, i + 1))):
        if n % 2:  # odd pieces are the one-character slots: swap in the value, keep the slot's styles
            v = next(todo)
            value = v.copy() if isinstance(v, Text) else Text(printable(str(v)))
            for span in reversed(piece.spans):
                value.stylize_before(span.style)
            piece = value
        out.append_text(piece)
    return out


def _dump(obj: Any) -> str:
    return json.dumps(obj, ensure_ascii=False)


def excerpt(text: str | None, width: int = 80) -> str:
    if not text:
        return ""
    one = " ".join(text.split())
    return one if len(one) <= width else one[: width - 1] + "…"


def clock(seconds: float | None) -> str:
    """Seconds as ``m:ss`` (``h:mm:ss`` past an hour), tenths kept under ten seconds."""
    if seconds is None:
        return ""
    if seconds < 10:
        return f"0:{seconds:04.1f}"
    whole = int(round(seconds))
    h, rest = divmod(whole, 3600)
    m, sec = divmod(rest, 60)
    return f"{h}:{m:02d}:{sec:02d}" if h else f"{m}:{sec:02d}"


def _where_in(h: Hit) -> str:
    """A sound hit's matched window and length, e.g. ``0:20–0:30 of 2:05``; a video's moments with what
    showed them, e.g. ``1:23–1:31 seen+heard of 4:02, 2:10–2:12 seen``."""
    if h.moments:
        shown = [f"{clock(m.start)}–{clock(m.end)} {m.evidence.replace('both', 'seen+heard')}" for m in h.moments]
        shown[0] += f" of {clock(h.duration)}" if h.duration is not None else ""
        return ", ".join(shown)
    if h.start is None:
        return f"({clock(h.duration)})" if h.duration is not None else ""
    span = f"{clock(h.start)}–{clock(h.end)}"
    return f"{span} of {clock(h.duration)}" if h.duration is not None else span


def shown_path(path: str) -> str:
    """A path as people read it: relative to the current folder when it lies below it (and that is
    shorter), else as stored (a ``../../`` path is harder to read than the absolute one)."""
    try:
        rel = os.path.relpath(path)
    except (ValueError, OSError):  # another drive (Windows), or the current folder was deleted
        return path
    return rel if len(rel) < len(path) and rel != os.pardir and not rel.startswith(os.pardir + os.sep) else path


def path_text(path: str, style: str = "") -> Text:
    """A file path for a terminal: shown relative when shorter, control characters escaped, and a link to
    the file (OSC 8: terminals that support links make it clickable; others show the text, and
    output to a file or pipe carries no escape codes at all)."""
    text = Text(printable(shown_path(path)), style=style)
    if os.path.isabs(path):
        text.stylize(Style(link=Path(path).as_uri()))
    return text


def print_unwrapped(out: Console, renderable: Any) -> None:
    """Print a table whose cells must never wrap (paths people copy) even when it is wider than the
    terminal: laid out at the width it needs, each line sent whole (the terminal may fold it for the
    eye, but no newline is put inside a name)."""
    need = Measurement.get(out, out.options.update(width=1 << 20), renderable).maximum
    if need <= out.width:
        out.print(renderable)
        return
    for line in out.render_lines(renderable, out.options.update(width=need), pad=False, new_lines=True):
        out.print(Segments(line), end="", crop=False)


def hits(out: Console, items: Sequence[Hit], fmt: Format, *, explain: bool = False, null: bool = False) -> None:
    """Hits as a table (people), JSON / JSON lines, or bare paths (``null``: NUL-separated, for names
    holding newlines; bare paths printed to a terminal have their control characters escaped)."""
    if fmt is Format.json:
        out.print_json(_dump([h.to_dict() for h in items])) if out.is_terminal else print(_dump([h.to_dict() for h in items]))
        return
    if fmt is Format.jsonl:
        for h in items:
            print(_dump(h.to_dict()))
        return
    if fmt is Format.paths:
        _paths(out, [h.path or (h.paths[0] if h.paths else str(h.id)) for h in items], null=null)
        return
    table = Table(box=None, header_style="bold")
    table.add_column("#", justify="right")
    table.add_column("score", justify="right")
    if explain:
        for col in ("cosine", "background", "model"):
            table.add_column(col, justify="right" if col != "model" else "left")
    table.add_column("type")
    sounds = any(h.modality in ("audio", "video") for h in items)
    if sounds:
        table.add_column("at", no_wrap=True)  # a sound's best-matching stretch, a video's moments, and their length
    table.add_column("result", no_wrap=True, overflow="ignore")  # never cut or fold a name
    for h in items:
        where = h.path or (h.paths[0] if h.paths else "")
        shown = path_text(where) if where and not where.startswith("text:") else Text(printable(where))
        if h.modality == "text":
            shown.stylize("dim")
            what = styled("{}  {}", excerpt(h.text), shown)
        else:
            what = shown
        if len(h.paths) > 1:
            what.append_text(styled("  [dim](+{} copies)[/dim]", len(h.paths) - 1))
        if h.duplicates:
            what.append_text(styled("  [dim](+{} near-duplicates folded)[/dim]", len(h.duplicates)))
        score = f"{h.calibrated:+.2f}" if h.calibrated is not None else f"{h.score:.3f}"
        extra = []
        if explain:
            why = h.why or {}
            mu, sd = why.get("background_mean"), why.get("background_std")
            extra = [f"{h.score:.3f}", f"{mu:.3f}±{sd:.3f}" if mu is not None else "none", styled("{}", h.space)]
        at = [styled("[cyan]{}[/cyan]", _where_in(h) if h.modality in ("audio", "video") else "")] if sounds else []
        table.add_row(str(h.rank), score, *extra, styled("{}", h.modality), *at, what)  # str cells are markup
    if not items:
        out.print("[dim]no results[/dim]")
    else:
        print_unwrapped(out, table)
        if explain:
            out.print("[dim]score = (cosine − background mean) / background spread: standard deviations above what "
                      "unrelated queries score against that model's items (see README, Scores)[/dim]")


def _paths(out: Console, paths: Sequence[str], *, null: bool = False) -> None:
    """Bare paths, exactly as stored, for scripts; on a terminal with control characters escaped."""
    if null:
        sys.stdout.write("".join(f"{p}\0" for p in paths))
        sys.stdout.flush()
        return
    for p in paths:
        print(printable(p) if out.is_terminal else p)


def report(out: Console, r: IndexReport, fmt: Format) -> None:
    if fmt in (Format.json, Format.jsonl):
        print(_dump(r.to_dict()))
        return
    parts = [f"indexed {r.indexed}", f"reused {r.reused}", f"unchanged {r.unchanged}", f"removed {r.removed}",
             f"failed {r.failed}"]
    status = "[yellow]interrupted[/yellow]: " if r.interrupted else ""
    out.print(f"{status}{', '.join(parts)}  ({r.scanned} files scanned in {r.seconds:.1f}s)")


def errors(out: Console, items: Iterable[tuple[str, str]] | Sequence[ErrorInfo], fmt: Format, *, limit: int | None = None) -> None:
    rows = [(e.path, e.reason, e.space) if isinstance(e, ErrorInfo) else (*e, None) for e in items]
    if fmt in (Format.json, Format.jsonl):
        data = [{"path": p, "reason": r, **({"space": sp} if sp is not None else {})} for p, r, sp in rows]
        if fmt is Format.json:
            print(_dump(data))
        else:
            for d in data:
                print(_dump(d))
        return
    shown = rows if limit is None else rows[:limit]
    for p, r, sp in shown:  # a model's space named when the file failed only there (a soundtrack, not the frames)
        out.print(styled("[red]skipped[/red] {} [dim]({})[/dim]: {}", p, sp, r) if sp is not None
                  else styled("[red]skipped[/red] {}: {}", p, r))
    if limit is not None and len(rows) > limit:
        out.print(f"… and {len(rows) - limit} more (see `mmsearch errors`)")


def commit_event(ev: Any) -> None:
    """``index --jsonl``: one line per durable batch, flushed at once (a script may kill us any time)."""
    print(_dump({"event": "commit", **ev.to_dict()}), flush=True)


def report_event(r: IndexReport) -> None:
    print(_dump({"event": "report", **r.to_dict()}), flush=True)




def _bytes(n: int | None) -> str:
    if n is None:
        return ""
    for unit, step in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= step:
            return f"{n / step:.1f} {unit}"
    return f"{n} B"


def dups(out: Console, clusters: Sequence[DupCluster], fmt: Format, *, threshold: float, null: bool = False) -> None:
    """``mmsearch dups``: each cluster with the file to keep first, then the others (``same bytes``: an exact
    copy of the file above it; else the cosine to the first), one line per file, the path last and whole."""
    if fmt is Format.json:
        print(_dump([c.to_dict() for c in clusters]))
        return
    if fmt is Format.jsonl:
        for c in clusters:
            print(_dump(c.to_dict()))
        return
    if fmt is Format.paths:  # every file but the one to keep
        _paths(out, [p for c in clusters for p in c.duplicates], null=null)
        return
    for n, c in enumerate(clusters, 1):
        kind = "exact copies" if c.exact else f"similarity {c.similarity:.3f}"
        out.print(styled("[bold]{}.[/bold] {} files, {}", n, len(c.duplicates) + 1, kind))
        for i, m in enumerate(c.members):
            shape = clock(m.duration) if c.modality == "audio" else (f"{m.width}×{m.height}" if m.width else "")
            for j, p in enumerate(m.paths):
                mark = "keep" if i == j == 0 else ("same bytes" if j else f"{m.similarity:.3f}")
                style = "green" if i == j == 0 else "dim" if j else "yellow"
                out.print(styled(f"   [{style}]{{}}[/{style}]  {{}}  {{}}  {{}}", f"{mark:>10}", f"{shape:>9}",
                                 f"{_bytes(m.size):>9}", path_text(p)))
    files = sum(len(c.duplicates) for c in clusters)
    if clusters:
        out.print(styled("[dim]{} {}, {} {} besides the first of each (threshold {})[/dim]", len(clusters),
                         "cluster" if len(clusters) == 1 else "clusters", files, "file" if files == 1 else "files",
                         threshold))
    else:
        out.print(styled("[dim]no duplicates at threshold {}[/dim]", threshold))
