"""Render Engine results for people (rich tables) and scripts (json / jsonl / paths)."""

from __future__ import annotations

import json
from enum import Enum
from typing import Any, Iterable, Sequence

from rich.console import Console
from rich.table import Table

from mmsearch.types import ErrorInfo, Hit, IndexReport, Stats


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


def _dump(obj: Any) -> str:
    return json.dumps(obj, ensure_ascii=False)


def excerpt(text: str | None, width: int = 80) -> str:
    if not text:
        return ""
    one = " ".join(text.split())
    return one if len(one) <= width else one[: width - 1] + "…"


def hits(out: Console, items: Sequence[Hit], fmt: Format) -> None:
    if fmt is Format.json:
        out.print_json(_dump([h.to_dict() for h in items])) if out.is_terminal else print(_dump([h.to_dict() for h in items]))
        return
    if fmt is Format.jsonl:
        for h in items:
            print(_dump(h.to_dict()))
        return
    if fmt is Format.paths:
        for h in items:
            print(h.path or (h.paths[0] if h.paths else h.id))
        return
    table = Table(box=None, header_style="bold")
    table.add_column("#", justify="right")
    table.add_column("score", justify="right")
    table.add_column("type")
    table.add_column("result", overflow="fold")
    for h in items:
        what = h.path or (h.paths[0] if h.paths else "")
        if h.modality == "text":
            what = f"{excerpt(h.text)}  [dim]{what}[/dim]"
        if len(h.paths) > 1:
            what += f"  [dim](+{len(h.paths) - 1} copies)[/dim]"
        table.add_row(str(h.rank), f"{h.score:.3f}", h.modality, what)
    if not items:
        out.print("[dim]no results[/dim]")
    else:
        out.print(table)


def report(out: Console, r: IndexReport, fmt: Format) -> None:
    if fmt in (Format.json, Format.jsonl):
        print(_dump(r.to_dict()))
        return
    parts = [f"indexed {r.indexed}", f"reused {r.reused}", f"unchanged {r.unchanged}", f"removed {r.removed}",
             f"failed {r.failed}"]
    status = "[yellow]interrupted[/yellow]: " if r.interrupted else ""
    out.print(f"{status}{', '.join(parts)}  ({r.scanned} files scanned in {r.seconds:.1f}s)")


def errors(out: Console, items: Iterable[tuple[str, str]] | Sequence[ErrorInfo], fmt: Format, *, limit: int | None = None) -> None:
    rows = [(e.path, e.reason) if isinstance(e, ErrorInfo) else e for e in items]
    if fmt in (Format.json, Format.jsonl):
        data = [{"path": p, "reason": r} for p, r in rows]
        if fmt is Format.json:
            print(_dump(data))
        else:
            for d in data:
                print(_dump(d))
        return
    shown = rows if limit is None else rows[:limit]
    for p, r in shown:
        out.print(f"[red]skipped[/red] {p}: {r}", markup=True, highlight=False)
    if limit is not None and len(rows) > limit:
        out.print(f"… and {len(rows) - limit} more (see `mmsearch errors`)")


def stats(out: Console, s: Stats, fmt: Format) -> None:
    if fmt in (Format.json, Format.jsonl):
        print(_dump(s.to_dict()))
        return
    out.print(f"[bold]store[/bold] {s.store}  (generation {s.generation}, {s.size_bytes / 1e6:.1f} MB)")
    items = ", ".join(f"{n} {m}" for m, n in sorted(s.items.items())) or "empty"
    sources = ", ".join(f"{n} {k}" for k, n in sorted(s.sources.items())) or "none"
    out.print(f"items: {items}   sources: {sources}   errors: {s.errors}")
    for sp in s.spaces:
        idx = ", ".join(f"{m}={k}" for m, k in sp.index.items())
        out.print(f"space {sp.id}: {sp.spec}  dim {sp.dim}  vectors {sp.vectors}  index {idx}", highlight=False)


def eval_report(out: Console, r: Any, fmt: Format) -> None:
    if fmt in (Format.json, Format.jsonl):
        print(_dump(r.to_dict()))
        return
    out.print(f"[bold]{r.dataset}[/bold]: {r.images} images, {r.captions} captions, model {r.model}", highlight=False)
    table = Table(box=None, header_style="bold")
    for col in ("direction", "search"):
        table.add_column(col)
    ks = list(r.rows[0].recall) if r.rows else []
    for k in ks:
        table.add_column(f"R@{k}", justify="right")
    table.add_column("queries/s", justify="right")
    for row in r.rows:
        table.add_row(row.direction, row.method, *(f"{100 * row.recall[k]:.1f}" for k in ks), f"{row.qps:,.0f}")
    out.print(table)
    if r.failed_images:
        out.print(f"[yellow]{len(r.failed_images)} images could not be read[/yellow] (left out)")


def commit_event(ev: Any) -> None:
    """``index --jsonl``: one line per durable batch, flushed at once (a script may kill us any time)."""
    print(_dump({"event": "commit", **ev.to_dict()}), flush=True)


def report_event(r: IndexReport) -> None:
    print(_dump({"event": "report", **r.to_dict()}), flush=True)


_DOCTOR_STYLE = {"ok": "green", "note": "cyan", "repaired": "yellow", "problem": "bold red"}


def doctor(out: Console, r: Any, fmt: Format) -> None:
    if fmt in (Format.json, Format.jsonl):
        print(_dump(r.to_dict()))
        return
    out.print(f"[bold]store[/bold] {r.store}", highlight=False)
    for c in r.checks:
        style = _DOCTOR_STYLE.get(c.status, "")
        from rich.markup import escape

        out.print(f"  [{style}]{c.status:>8}[/{style}]  {escape(c.name)}: {escape(c.detail)}", highlight=False)
    if r.ok:
        fixed = len([c for c in r.checks if c.status == "repaired"])
        out.print(f"healthy{f' ({fixed} repaired)' if fixed else ''}")
    else:
        n = len([c for c in r.checks if c.status == "problem"])
        out.print(f"[bold red]{n} problems remain[/bold red]" + ("" if r.repair else " (run without --no-repair to fix)"))
