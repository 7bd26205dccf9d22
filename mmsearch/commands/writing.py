"""Commands that write a store: index, watch, add-text, remove."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Annotated, Any, Callable, Optional

import typer
from rich.console import Console

from mmsearch import present
from mmsearch.commands.common import (BatchOpt, DbOpt, DeviceOpt, GpuDecodeOpt, IndexOpt, JsonOpt, MaxAudioOpt, ModelsOpt,
                                      PrecisionOpt, RecallOpt, RuntimeOpt, StoreOpt, WorkersOpt, _engine, _notices,
                                      _sigterm_interrupts, _stop_on_signals, app, err, handle_errors, out)
from mmsearch.errors import UsageError


@app.command()
@handle_errors
def index(
    paths: Annotated[list[Path], typer.Argument(help="Folders and files to index (re-running syncs them).", show_default=False)],
    store: StoreOpt = None,
    model: ModelsOpt = None,
    device: DeviceOpt = None,
    runtime: RuntimeOpt = None,
    precision: PrecisionOpt = None,
    batch_size: BatchOpt = None,
    workers: WorkersOpt = None,
    gpu_decode: GpuDecodeOpt = None,
    max_audio_seconds: MaxAudioOpt = None,
    index_kind: IndexOpt = None,
    recall_target: RecallOpt = None,
    db: DbOpt = None,
    commit_every: Annotated[Optional[int], typer.Option("--commit-every", min=1, help="Files per committed batch [default: 256]; an interrupted run keeps every committed batch.")] = None,
    ray: Annotated[bool, typer.Option("--ray", help="Read, hash and decode as Ray tasks and embed on Ray actors (GPU actors where the cluster has GPUs), on a local cluster unless --address; this process plans and writes. Cluster workers must see the files at the same paths and have mmsearch installed. Needs the ray extra.")] = False,
    address: Annotated[Optional[str], typer.Option("--address", metavar="ADDR", help="With --ray: the cluster to join, auto or ray://HOST:10001 [default: start one here with --workers CPUs, else all cores].", show_default=False)] = None,
    ray_actors: Annotated[Optional[int], typer.Option("--ray-actors", min=1, metavar="N", help="With --ray: embed actors [default: one per GPU of the cluster, else one per 4 CPUs].", show_default=False)] = None,
    as_json: JsonOpt = False,
    as_jsonl: Annotated[bool, typer.Option("--jsonl", help="Print a JSON line per committed batch, then the report.")] = False,
) -> None:
    """Add new files, re-embed changed ones, link moved ones, drop removed ones."""
    if address is not None and not ray:
        raise UsageError("--address needs --ray")
    if ray_actors is not None and not ray:
        raise UsageError("--ray-actors needs --ray")
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    fmt = present.pick_format(as_json, as_jsonl, False)
    machine = fmt is not present.Format.table
    with _sigterm_interrupts(), _engine(store, model=model or None, device=device, batch_size=batch_size,
                                        workers=workers, index=index_kind, runtime=runtime, precision=precision,
                                        max_audio_seconds=max_audio_seconds, recall_target=recall_target,
                                        gpu_decode=gpu_decode, db=db) as eng:
        bar = Progress(TextColumn("indexing"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[rate]}"),
                       TimeRemainingColumn(), console=err, disable=machine or not err.is_terminal, transient=True)
        with bar:
            task = bar.add_task("index", total=None, rate="")

            def progress(done: int, total: int) -> None:
                elapsed = bar.tasks[0].elapsed or 0
                rate = f"{done / elapsed:.0f} files/s" if elapsed > 0.5 else ""
                bar.update(task, completed=done, total=total, rate=rate)

            on_commit = present.commit_event if as_jsonl else None
            report = eng.index(paths, progress=progress, commit_every=commit_every, on_commit=on_commit,
                               ray=(address or "local") if ray else None, ray_actors=ray_actors)
        _notices(report.notices)  # the engine's own repairs are among them
    if not machine:
        present.errors(err, report.errors, fmt, limit=20)
    if as_jsonl:
        present.report_event(report)
    else:
        present.report(out, report, fmt)
    if report.failed:
        raise typer.Exit(1)


@app.command()
@handle_errors
def watch(
    paths: Annotated[list[Path], typer.Argument(help="Folders and files to keep in sync (synced in full at the start, as `index` does).", show_default=False)],
    store: StoreOpt = None,
    model: ModelsOpt = None,
    device: DeviceOpt = None,
    runtime: RuntimeOpt = None,
    precision: PrecisionOpt = None,
    batch_size: BatchOpt = None,
    workers: WorkersOpt = None,
    gpu_decode: GpuDecodeOpt = None,
    max_audio_seconds: MaxAudioOpt = None,
    index_kind: IndexOpt = None,
    db: DbOpt = None,
    debounce: Annotated[int, typer.Option("--debounce", min=1, help="Milliseconds a batch of changes gathers at most before it is synced.")] = 1600,
    as_json: Annotated[bool, typer.Option("--json", help="Print the session's report as JSON when it stops.")] = False,
    as_jsonl: Annotated[bool, typer.Option("--jsonl", help="Print a JSON line per sync (and per folder that goes or comes back), then the report.")] = False,
) -> None:
    """Keep the store in sync with folders while it runs: new, changed, moved and deleted files, in batches.

    A folder that goes away (an unplugged disk) keeps its entries; it is synced again when it is back.
    Ctrl-C or SIGTERM stops it with a summary of the session (exit 0).
    """
    fmt = present.pick_format(as_json, as_jsonl, False)
    stop = threading.Event()
    with _stop_on_signals(stop), _engine(store, model=model or None, device=device, batch_size=batch_size,
                                         workers=workers, index=index_kind, runtime=runtime, precision=precision,
                                         max_audio_seconds=max_audio_seconds, gpu_decode=gpu_decode, db=db) as eng:
        report = eng.watch(paths, on_sync=_watch_event(fmt), stop_event=stop, debounce_ms=debounce)
    _notices(report.notices)
    if as_jsonl:
        print(json.dumps({"event": "report", **report.to_dict()}, ensure_ascii=False), flush=True)
    elif as_json:
        print(json.dumps(report.to_dict(), ensure_ascii=False))
    else:
        _watch_summary(out, report)


def _watch_event(fmt: present.Format) -> Callable[[Any], None]:
    """What `watch` shows of each step: a JSON line (``--jsonl``), else a line on stderr."""
    def show(ev: Any) -> None:  # ev: mmsearch.types.WatchSync
        if fmt is present.Format.jsonl:
            print(json.dumps({"event": "sync", **ev.to_dict()}, ensure_ascii=False), flush=True)
            return
        roots = ", ".join(ev.roots)
        full = f"indexed {ev.indexed}, reused {ev.reused}, unchanged {ev.unchanged}, removed {ev.removed}, failed {ev.failed}"
        if ev.kind == "start":
            err.print(present.styled("watching {}: {}  (Ctrl-C to stop)", roots, full))
        elif ev.kind == "returned":
            err.print(present.styled("{} is back: {}", roots, full))
        elif ev.kind == "resync":
            err.print(present.styled("{} synced again (the watch restarted): {}", roots, full))
        elif ev.kind == "vanished":
            err.print(present.styled("{} is gone: its entries are kept; waiting for it to come back", roots))
        elif ev.kind == "waiting":
            err.print(present.styled("waiting: {}", ev.notice))
        else:
            err.print(f"synced {ev.paths} changed paths: added {ev.added}, changed {ev.changed}, moved {ev.moved}, "
                      f"removed {ev.removed}, failed {ev.failed}  ({ev.seconds:.1f}s)")
        if fmt is present.Format.table and ev.errors:
            present.errors(err, ev.errors, fmt, limit=5)

    return show


def _watch_summary(to: Console, r: Any) -> None:  # r: mmsearch.types.WatchReport
    f = r.full
    to.print(f"watched {len(r.roots)} {'folder' if len(r.roots) == 1 else 'folders'} for {r.seconds:.1f}s: "
             f"added {r.added}, changed {r.changed}, moved {r.moved}, removed {r.removed}, failed {r.failed} "
             f"in {r.syncs} syncs; full syncs (start{', returns' if r.returned else ''}): indexed {f.indexed}, "
             f"reused {f.reused}, unchanged {f.unchanged}, removed {f.removed}, failed {f.failed}")
    for root in r.vanished:
        to.print(present.styled("still gone (its entries are kept): {}", root))


@app.command("add-text")
@handle_errors
def add_text(
    texts: Annotated[Optional[list[str]], typer.Argument(help="Texts to add.", show_default=False)] = None,
    file: Annotated[Optional[Path], typer.Option("--file", help="A .csv (column 'text', optional 'id') or .jsonl of texts.")] = None,
    store: StoreOpt = None,
    model: ModelsOpt = None,
    device: DeviceOpt = None,
    db: DbOpt = None,
) -> None:
    """Add texts that are not files (captions, notes, labels) to the store (into every model with a text tower)."""
    with _engine(store, model=model or None, device=device, db=db) as eng:
        n = eng.add_texts(texts or None, file=file)
    out.print(f"added {n} texts")


@app.command()
@handle_errors
def remove(
    targets: Annotated[list[str], typer.Argument(help="Files, folders (everything below) or text:ID items to forget.", show_default=False)],
    store: StoreOpt = None,
    db: DbOpt = None,
) -> None:
    """Forget files or folders (the files themselves are not touched)."""
    with _engine(store, create=False, db=db) as eng:
        n = eng.remove(targets)
    out.print(f"removed {n} sources")
