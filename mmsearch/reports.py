"""What the store-keeping commands print (``stats``, ``config``, ``cache``, ``eval``, ``doctor``): tables for
people, JSON for programs. Names from a file system or a user are escaped as in :mod:`mmsearch.present`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

from rich.console import Console
from rich.table import Table
from rich.text import Text

from mmsearch.present import Format, _dump, styled
from mmsearch.types import CachedExport, Stats

_DOCTOR_STYLE = {"ok": "green", "note": "cyan", "repaired": "yellow", "problem": "bold red"}


def stats(out: Console, s: Stats, fmt: Format) -> None:
    if fmt in (Format.json, Format.jsonl):
        print(_dump(s.to_dict()))
        return
    out.print(styled("[bold]store[/bold] {}  (generation {}, {} MB)", s.store, s.generation, f"{s.size_bytes / 1e6:.1f}"))
    if s.database:
        out.print(styled("database: {}  (this folder: its indexes)", s.database))
    items = ", ".join(f"{n} {m}" for m, n in sorted(s.items.items())) or "empty"
    sources = ", ".join(f"{n} {k}" for k, n in sorted(s.sources.items())) or "none"
    out.print(styled("items: {}   sources: {}   errors: {}", items, sources, s.errors))
    out.print(styled("search: {}", ", ".join(sorted({p for sp in s.spaces for p in sp.search.values() if p != "none"}))
                     or "no index yet") + styled("   ({})", s.faiss))
    for sp in s.spaces:
        idx = ", ".join(f"{m}={k}" + (f" ({sp.index_bytes[m] / 1e6:.1f} MB)" if sp.index_bytes.get(m) else "")
                        for m, k in sp.index.items())
        out.print(styled("space {}: {}  dim {}  vectors {}  index {}", sp.id, sp.spec, sp.dim, sp.vectors, idx))
        for m, t in sp.tuning.items():
            out.print(styled("  {} index tuned: {}", m, tuning_line(m, t)))


def tuning_line(modality: str, t: dict[str, Any]) -> str:
    """``nprobe 24: R@10 image→image 0.970, text→image 0.951; same ids 0.962, 0.930 (target 0.95, at 6000
    vectors)``: recall with ties within 0.001 counted, then by ids alone (:mod:`mmsearch.ann.tuning`)."""
    recall = ", ".join(f"{q}→{modality} {r:.3f}" for q, r in t.get("recall", {}).items())
    strict = t.get("strict") or {}
    same = f"; same ids {', '.join(f'{strict[q]:.3f}' for q in t.get('recall', {}) if q in strict)}" if strict else ""
    met = "" if t.get("met", True) else ", target not reached at the widest search"
    return (f"{t.get('param', '').replace('_', '')} {t.get('value')}: R@10 {recall}{same} "
            f"(target {t.get('target')}, at {t.get('n')} vectors{met})")


def settings(out: Console, s: Any, sources: dict[str, str], config_file: Any, fmt: Format) -> None:
    """``mmsearch config``: each setting, its value, and where that value came from."""
    from mmsearch.config import without_password

    rows = [(name, without_password(getattr(s, name)) if name == "db" else getattr(s, name), sources[name])
            for name in sources]
    if fmt in (Format.json, Format.jsonl):
        print(_dump({"config_file": str(config_file), "settings": {n: {"value": list(v) if isinstance(v, tuple) else v,
                                                                        "from": src} for n, v, src in rows}}))
        return
    exists = "" if Path(config_file).is_file() else "  [dim](not present)[/dim]"
    out.print(styled("config file {}" + exists, config_file))
    table = Table(box=None, header_style="bold")
    for col in ("setting", "value", "from"):
        table.add_column(col)
    for name, value, source in rows:
        shown = ", ".join(value) if isinstance(value, tuple) else ("" if value is None else value)
        table.add_row(name, styled("{}", shown), styled("[dim]{}[/dim]", source))
    out.print(table)


def downgraded(out: Console, had: str, revision: str, fmt: Format) -> None:
    if fmt in (Format.json, Format.jsonl):
        print(_dump({"from": had, "to": revision}))
    elif had == revision:
        out.print(styled("the store is at revision {} already: nothing to do", revision))
    else:
        out.print(styled("store taken from schema revision {} to {}; opening it with this mmsearch upgrades it again",
                         had, revision))


def runtime_cache(out: Console, items: Sequence[CachedExport], fmt: Format, *, cleared: bool = False) -> None:
    if fmt in (Format.json, Format.jsonl):
        print(_dump({"cleared": cleared, "exports": [c.to_dict() for c in items]}))
        return
    for c in items:
        if not c.usable:
            out.print(styled("[dim]{}  unusable (partial or old format; re-exported on next use)  {} MB[/dim]",
                             c.folder, f"{c.size_bytes / 1e6:.0f}"))
            continue
        towers = "   ".join(
            f"{name} {t['auto']} (" + ", ".join(f"{p} cos {f:.5f}" for p, f in sorted(t["fidelity"].items())) + ")"
            for name, t in sorted(c.towers.items()))
        out.print(styled("{}  {} MB  {}\n  {}", c.exported_from, f"{c.size_bytes / 1e6:.0f}", c.folder, towers))
    total = sum(c.size_bytes for c in items) / 1e6
    verb = "removed" if cleared else "cached"
    out.print(styled("{} {} exports, {} MB", verb, len(items), f"{total:.0f}"))


def eval_report(out: Console, r: Any, fmt: Format) -> None:
    """``mmsearch eval``: a retrieval report (Recall@K rows) or a classification one (:func:`classification_report`)."""
    if fmt in (Format.json, Format.jsonl):
        print(_dump(r.to_dict()))
        return
    if hasattr(r, "accuracy"):
        classification_report(out, r)
        return
    if getattr(r, "modality", "") == "video":
        video_report(out, r)
        return
    noun = "sounds" if getattr(r, "modality", "image") == "audio" else "images"
    out.print(styled("[bold]{}[/bold]: {} {}, {} captions, model {}", r.dataset, r.images, noun, r.captions, r.model))
    table, ks = _recall_table(("direction", "search"), r.rows)
    table.add_column("queries/s", justify="right")
    for row in r.rows:
        table.add_row(styled("{}", row.direction), styled("{}", row.method), *(f"{100 * row.recall[k]:.1f}" for k in ks),
                      f"{row.qps:,.0f}")
    out.print(table)
    for note in getattr(r, "notes", ()):
        out.print(styled("[yellow]note:[/yellow] {}", note))
    _left_out(out, r.failed_images, noun)


def _recall_table(first: tuple[str, ...], rows: Sequence[Any]) -> tuple[Table, list[int]]:
    """An eval table's columns: ``first``, then R@K for each K the rows measured (and those Ks)."""
    table = Table(box=None, header_style="bold")
    for col in first:
        table.add_column(col)
    ks = list(rows[0].recall) if rows else []
    for k in ks:
        table.add_column(f"R@{k}", justify="right")
    return table, ks


def video_report(out: Console, r: Any) -> None:
    """``mmsearch eval`` on captioned videos: text→video Recall@K and median rank for each pooling."""
    out.print(styled("[bold]{}[/bold]: {} videos, {} captions, model {}", r.dataset, r.videos, r.captions, r.model))
    table, ks = _recall_table(("direction", "pooling"), r.rows)
    table.add_column("median rank", justify="right")
    table.add_column("queries/s", justify="right")
    for row in r.rows:
        median = f"{row.median_rank:g}" if row.median_rank is not None else f">{r.depth}"
        table.add_row(styled("{}", row.direction), styled("{}", row.pooling), *(f"{100 * row.recall[k]:.1f}" for k in ks),
                      median, f"{row.qps:,.1f}")
    out.print(table)
    ref = r.reference
    out.print(styled("[dim]reference ({}): {} zero-shot, {} pooling, {} text→video R@1 {} R@5 {} R@10 {} ({})[/dim]",
                     ref["note"], ref["model"], ref["pooling"], ref["dataset"], ref["R@1"], ref["R@5"], ref["R@10"],
                     ref["source"]))
    for note in r.notes:
        out.print(styled("[yellow]note:[/yellow] {}", note))
    _left_out(out, r.failed_videos, "videos")


def classification_report(out: Console, r: Any) -> None:
    """Zero-shot classification (``mmsearch eval`` on labelled files): accuracy and top-5 over the files."""
    noun = "sounds" if r.modality == "audio" else "images"
    fold = f", fold {r.fold}" if r.fold is not None else ""
    out.print(styled("[bold]{}[/bold]: {} {}, {} classes{}, model {}", r.dataset, r.items, noun, r.classes, fold, r.model))
    out.print(styled("prompt {}", json.dumps(r.prompt, ensure_ascii=False)))
    table = Table(box=None, header_style="bold")
    for col in ("accuracy", "top-5"):
        table.add_column(col, justify="right")
    table.add_row(f"{100 * r.accuracy:.1f}", f"{100 * r.top5:.1f}")
    out.print(table)
    _left_out(out, r.failed, noun)


def _left_out(out: Console, failed: Sequence[tuple[str, str]], noun: str, shown: int = 5) -> None:
    if not failed:
        return
    out.print(f"[yellow]{len(failed)} {noun} missing or unreadable[/yellow] (left out)")
    for p, why in failed[:shown]:
        out.print(styled("  [dim]{}: {}[/dim]", p, why))
    if len(failed) > shown:
        out.print(f"  [dim]… and {len(failed) - shown} more (--json lists them all)[/dim]")


def doctor(out: Console, r: Any, fmt: Format) -> None:
    if fmt in (Format.json, Format.jsonl):
        print(_dump(r.to_dict()))
        return
    out.print(styled("[bold]store[/bold] {}", r.store))
    for c in r.checks:
        status = Text(f"{c.status:>8}", style=_DOCTOR_STYLE.get(c.status, ""))
        out.print(styled("  {}  {}: {}", status, c.name, c.detail))
    if r.ok:
        fixed = len([c for c in r.checks if c.status == "repaired"])
        out.print(f"healthy{f' ({fixed} repaired)' if fixed else ''}")
    else:
        n = len([c for c in r.checks if c.status == "problem"])
        out.print(f"[bold red]{n} problems remain[/bold red]" + ("" if r.repair else " (run without --no-repair to fix)"))
