"""The `mmsearch` command: parse, call Engine, render. No business logic lives here.

`query` first asks a running `mmsearch serve` on the same store (found through ``<store>/server.json``,
see :mod:`mmsearch.server.client`): that path imports no numpy, SQLAlchemy, FAISS or model code, and
prints what the in-process search prints. No server, or none that can answer this query exactly:
it searches in-process. ``--no-server`` (env ``MMSEARCH_NO_SERVER=1``) always searches in-process.

Exit codes: 0 ok · 1 index finished but some files failed, or nothing cleared ``query --min-score`` ·
2 bad arguments · 3 store problem (missing, locked, damaged) · 4 model problem · 130 interrupted
(Ctrl-C) · 143 stopped by SIGTERM. An interrupted or SIGTERMed ``index`` prints its summary first and
keeps every committed batch (run it again to resume). ``watch`` (and ``serve --watch``) runs until
stopped: Ctrl-C or SIGTERM ends it cleanly (between committed batches) with a summary and exit 0; a
second one cuts the batch being written short (committed work kept), still with the summary.
"""

from __future__ import annotations

import functools
import json
import os
import signal
import sys
import threading
import typing
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, Callable, Optional

import typer
from rich.console import Console

from mmsearch import present
from mmsearch.errors import MmsearchError

app = typer.Typer(
    name="mmsearch",
    help="Search your photos, notes and sounds by meaning. Index folders, then query by text, image or sound.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)
out = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)

# ---- shared options (one definition, reused by every command) ----------------------------------------
StoreOpt = Annotated[Optional[Path], typer.Option("--store", "-s", help="Store folder [env MMSEARCH_STORE; default indexes/default].")]
ModelOpt = Annotated[Optional[str], typer.Option("--model", "-m", help="Model spec: ARCH:TAG, hf-hub:ORG/REPO, local-dir:PATH, builtin:NAME [env MMSEARCH_MODEL].")]
ModelsOpt = Annotated[Optional[list[str]], typer.Option("--model", "-m", help="Model spec (repeat for several: an image model and a sound model): ARCH:TAG, hf-hub:ORG/REPO, local-dir:PATH, builtin:NAME [env MMSEARCH_MODEL; default: the store's models, else ViT-B-32:laion2b_s34b_b79k for images and hf-hub:laion/clap-htsat-unfused for sounds].")]
DeviceOpt = Annotated[Optional[str], typer.Option("--device", help="auto, cpu, cuda, cuda:N or mps [env MMSEARCH_DEVICE].")]
RuntimeOpt = Annotated[Optional[str], typer.Option("--runtime", help="auto, torch or onnx (auto: ONNX Runtime on the CPU, torch on CUDA/MPS) [env MMSEARCH_RUNTIME].")]
PrecisionOpt = Annotated[Optional[str], typer.Option("--precision", help="CPU runtime precision: auto, fp32 or int8 (auto: the fastest whose measured fidelity is >= 0.999; see `mmsearch cache`) [env MMSEARCH_PRECISION].")]
BatchOpt = Annotated[Optional[int], typer.Option("--batch-size", help="Encoder batch size.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON.")]
JsonlOpt = Annotated[bool, typer.Option("--jsonl", help="Print one JSON object per line.")]
PathsOpt = Annotated[bool, typer.Option("--paths", help="Print only paths, one per line.")]


def handle_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Translate library errors into one line on stderr and a documented exit code."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from mmsearch.errors import IndexInterrupted

        try:
            return fn(*args, **kwargs)
        except MmsearchError as exc:
            err.print(present.styled("[bold red]error:[/bold red] {}", exc))  # a path or hint with [brackets] prints as is
            raise typer.Exit(exc.exit_code) from None
        except IndexInterrupted as exc:
            present.report(err, exc.report, present.Format.table)
            err.print(f"{_stopped_by()}: work committed so far is kept; run the same command to resume")
            raise typer.Exit(_interrupted_code()) from None
        except KeyboardInterrupt:
            err.print(_stopped_by())
            raise typer.Exit(_interrupted_code()) from None

    return wrapper


_terminated = False  # the interrupt being handled came from SIGTERM (exit 143), not Ctrl-C (130)


def _stopped_by() -> str:
    return "stopped by SIGTERM" if _terminated else "interrupted"


def _interrupted_code() -> int:
    return 128 + signal.SIGTERM if _terminated else 130


@contextmanager
def _sigterm_interrupts():
    """SIGTERM during the block stops it as Ctrl-C does (committed work kept, summary), exiting 143."""
    global _terminated
    _terminated = False

    def on_term(_signum: int, _frame: Any) -> None:
        global _terminated
        _terminated = True
        raise KeyboardInterrupt

    try:
        before = signal.signal(signal.SIGTERM, on_term)
    except ValueError:  # not the main thread (an embedding app's worker): signals are not ours to take
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, before)


@contextmanager
def _stop_on_signals(stop: threading.Event):
    """Ctrl-C and SIGTERM during the block set ``stop`` (a watch ends cleanly); a second one interrupts
    what runs (a batch being written stops at once, what it committed is kept)."""
    def on_signal(_signum: int, _frame: Any) -> None:
        if stop.is_set():
            raise KeyboardInterrupt
        stop.set()

    before = {}
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            before[sig] = signal.signal(sig, on_signal)
        except ValueError:  # not the main thread
            pass
    try:
        yield
    finally:
        for sig, handler in before.items():
            signal.signal(sig, handler)


def _engine(store: Path | None, **kw: Any):
    from mmsearch.engine import Engine

    return Engine.open(store, **kw)


def _notices(notices: list[str]) -> None:
    for n in notices:
        err.print(present.styled("[yellow]note:[/yellow] {}", n))


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
    workers: Annotated[Optional[int], typer.Option("--workers", help="Decode processes (0: decode in this process).")] = None,
    max_audio_seconds: Annotated[Optional[float], typer.Option("--max-audio-seconds", min=0.001, help="Longer sounds are indexed by their first this-many seconds (recorded as such) [default: 600].")] = None,
    index_kind: Annotated[Optional[str], typer.Option("--index", help="ANN index: auto, flat, ivf, hnsw, pq.")] = None,
    commit_every: Annotated[Optional[int], typer.Option("--commit-every", min=1, help="Files per committed batch [default: 256]; an interrupted run keeps every committed batch.")] = None,
    as_json: JsonOpt = False,
    as_jsonl: Annotated[bool, typer.Option("--jsonl", help="Print a JSON line per committed batch, then the report.")] = False,
) -> None:
    """Add new files, re-embed changed ones, link moved ones, drop removed ones."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    fmt = present.pick_format(as_json, as_jsonl, False)
    machine = fmt is not present.Format.table
    with _sigterm_interrupts(), _engine(store, model=model or None, device=device, batch_size=batch_size,
                                        workers=workers, index=index_kind, runtime=runtime, precision=precision,
                                        max_audio_seconds=max_audio_seconds) as eng:
        bar = Progress(TextColumn("indexing"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[rate]}"),
                       TimeRemainingColumn(), console=err, disable=machine or not err.is_terminal, transient=True)
        with bar:
            task = bar.add_task("index", total=None, rate="")

            def progress(done: int, total: int) -> None:
                elapsed = bar.tasks[0].elapsed or 0
                rate = f"{done / elapsed:.0f} files/s" if elapsed > 0.5 else ""
                bar.update(task, completed=done, total=total, rate=rate)

            on_commit = present.commit_event if as_jsonl else None
            report = eng.index(paths, progress=progress, commit_every=commit_every, on_commit=on_commit)
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
    workers: Annotated[Optional[int], typer.Option("--workers", help="Decode processes (0: decode in this process).")] = None,
    max_audio_seconds: Annotated[Optional[float], typer.Option("--max-audio-seconds", min=0.001, help="Longer sounds are indexed by their first this-many seconds [default: 600].")] = None,
    index_kind: Annotated[Optional[str], typer.Option("--index", help="ANN index: auto, flat, ivf, hnsw, pq.")] = None,
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
                                         max_audio_seconds=max_audio_seconds) as eng:
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
) -> None:
    """Add texts that are not files (captions, notes, labels) to the store (into every model with a text tower)."""
    with _engine(store, model=model or None, device=device) as eng:
        n = eng.add_texts(texts or None, file=file)
    out.print(f"added {n} texts")


@app.command()
@handle_errors
def query(
    text: Annotated[Optional[str], typer.Argument(help="What to look for, in words; terms combine: \"beach + sunset - people\", \"2:dog + cat\" (+ and - need spaces around them; quote literal text).", show_default=False)] = None,
    texts: Annotated[Optional[list[str]], typer.Option("--text", metavar="<str>", help="Text to search with (repeatable; combines with the query text, images and examples; same language).")] = None,
    image: Annotated[Optional[list[Path]], typer.Option("--image", "-i", metavar="<path>", help="Search with an image (repeatable; combines with text and examples).")] = None,
    audio: Annotated[Optional[Path], typer.Option("--audio", "-a", help="Search with a sound file (combines with text and examples).")] = None,
    like: Annotated[Optional[list[Path]], typer.Option("--like", metavar="<path>", help="More like this file (repeatable): an indexed one by its stored vectors, any other embedded like --image/--audio.")] = None,
    unlike: Annotated[Optional[list[Path]], typer.Option("--unlike", metavar="<path>", help="Less like this file (repeatable; counts -0.5 where --like counts +1).")] = None,
    k: Annotated[Optional[int], typer.Option("-k", "--top", help="How many results [default: k in the config file, MMSEARCH_K, else 10].", min=1, show_default=False)] = None,
    type_: Annotated[Optional[str], typer.Option("--type", "-t", help="What to return: image, audio, text or any [default: every kind of file the store holds that the query reaches; texts when it holds only texts].")] = None,
    min_score: Annotated[Optional[float], typer.Option("--min-score", help="Only results whose calibrated score (standard deviations above unrelated queries) is at least this; exit 1 when none is.")] = None,
    explain: Annotated[bool, typer.Option("--explain", help="Show how each score came about: raw cosine, the background it is calibrated against, the model.")] = False,
    under: Annotated[Optional[Path], typer.Option("--under", help="Only results below this folder.")] = None,
    collapse_dups: Annotated[bool, typer.Option("--collapse-dups", help="Fold near-duplicates (cosine >= 0.95 to a higher-ranked result) into that result; still -k distinct results.")] = False,
    where: Annotated[Optional[list[str]], typer.Option("--where", "-w", help="Only results where this holds, e.g. 'width>=3000', 'make~canon', 'taken>=2023-06-01', 'gps', '!gps', 'size<5MB', 'duration<30' (repeatable: all must hold; fields: taken mtime width height size duration make model camera gps lat lon orientation).", show_default=False)] = None,
    since: Annotated[Optional[str], typer.Option("--since", help="Only results taken on or after this date (YYYY[-MM[-DD]]); the file's mtime when it has no EXIF date.", show_default=False)] = None,
    until: Annotated[Optional[str], typer.Option("--until", help="Only results taken on or before this date (the whole day or month given).", show_default=False)] = None,
    path: Annotated[Optional[str], typer.Option("--path", help="Only files whose path matches this glob ('*/2023/*.jpg'; * also crosses folders) or starts with it.", show_default=False)] = None,
    store: StoreOpt = None,
    model: ModelOpt = None,
    device: DeviceOpt = None,
    runtime: RuntimeOpt = None,
    precision: PrecisionOpt = None,
    nprobe: Annotated[Optional[int], typer.Option("--nprobe", help="IVF lists to visit (recall vs speed).")] = None,
    ef_search: Annotated[Optional[int], typer.Option("--ef-search", help="HNSW search breadth.")] = None,
    no_server: Annotated[bool, typer.Option("--no-server", envvar="MMSEARCH_NO_SERVER", help="Search in this process even when `mmsearch serve` runs on the store [env MMSEARCH_NO_SERVER=1].")] = False,
    as_json: JsonOpt = False,
    as_jsonl: JsonlOpt = False,
    as_paths: PathsOpt = False,
    null: Annotated[bool, typer.Option("-0", "--null", help="Print only paths, each ended by a NUL byte instead of a newline (for `xargs -0`; names may hold newlines). Implies --paths.")] = False,
) -> None:
    """Search by text (mmsearch query "a red bicycle"), by image (--image cat.jpg) or by sound (--audio bark.wav),
    or by several at once ("beach + sunset - people", --image a.jpg --text "at night", --like a.jpg --unlike b.jpg)."""
    fmt = present.pick_format(as_json, as_jsonl, as_paths or null)
    texts = ([text] if text is not None else []) + list(texts or ())
    if not (texts or image or audio is not None or like):
        from mmsearch.errors import UsageError

        raise UsageError("--unlike needs something to search for: a query text, --image, --audio or --like" if unlike
                         else "give a query text, --image PATH or --audio PATH (or several, or --like PATH)")
    if k is None:
        from mmsearch.config import Settings

        k = Settings.resolve(store=os.fspath(store) if store is not None else None).k
    served = not no_server and runtime is None and precision is None and _servable(texts, image, audio, like, unlike)
    if served and _served(fmt, store, model=model, device=device, text=texts, image=image[0] if image else None,
                          audio=audio, k=k, type=type_, under=under, nprobe=nprobe, ef_search=ef_search,
                          min_score=min_score, where=where or (), since=since, until=until, path=path,
                          collapse_dups=collapse_dups, explain=explain, null=null):
        return
    if texts:  # the model loads on a thread while the store and index code import
        from mmsearch.query.prefetch import text_model

        text_model(store, model=model, device=device, runtime=runtime, precision=precision)
    with _engine(store, model=model, device=device, runtime=runtime, precision=precision, create=False) as eng:
        results = eng.search(text=texts or None, image=image or None, audio=audio, like=like or (), unlike=unlike or (),
                             k=k, type=type_, under=under, nprobe=nprobe, ef_search=ef_search, min_score=min_score,
                             where=where or (), since=since, until=until, path=path, collapse_dups=collapse_dups)
        _notices(eng.notices)
    present.hits(out, results, fmt, explain=explain, null=null)
    if min_score is not None and not results:
        raise typer.Exit(1)


def _servable(texts: list[str], images: list[Path] | None, audio: Path | None, like: Any, unlike: Any) -> bool:
    """Whether the server's protocol carries this query: query texts with at most one image or one sound, no
    examples (--like/--unlike and several images search in-process rather than losing a part of the query)."""
    media = len(images or ()) + (audio is not None)
    return not like and not unlike and media <= 1 and bool(texts or media)


_served_tried = False  # main() asked the store's server already and none answered: do not ask twice


def _served(fmt: present.Format, store: Path | None, *, explain: bool = False, null: bool = False,
            **search: Any) -> bool:
    """Print the query's hits as a running `mmsearch serve` on the store answers them; False: none can."""
    if _served_tried:
        return False
    from mmsearch.server import client  # standard library only

    served = client.search(store, **search)
    if served is None:
        return False
    _notices(served.notices)
    present.hits(out, served.hits, fmt, explain=explain, null=null)
    if search.get("min_score") is not None and not served.hits:
        raise typer.Exit(1)
    return True


def _fast_query(argv: list[str]) -> bool | None:
    """`mmsearch query ARGS` answered by a server, without typer's parameter coercion.

    That coercion imports pydantic (a few tenths of a second, more than the whole served query), so
    ``main`` parses ARGS with the query command's own parser (raw strings) and converts them by the
    function's annotations. True: served and printed; False: asked, no server; None: not asked
    (``--help``, ``--no-server``, a value that does not convert …): the full CLI decides.
    """
    import inspect

    import typer.main

    alone = typer.Typer(add_completion=False)  # the query command alone: building every command costs more
    alone.command("query")(query)
    cmd = typer.main.get_command(alone)
    try:
        opts, extra, _ = cmd.make_parser(cmd.context_class(cmd, info_name="query")).parse_args(list(argv))
        hints = typing.get_type_hints(query, include_extras=True)
        defaults = {n: p.default for n, p in inspect.signature(query).parameters.items()}
        kw = {}
        for p in (p for p in cmd.params if p.name in defaults):  # anything else left in opts: not ours to parse
            raw = opts.pop(p.name, None)
            if raw is None and isinstance(p.envvar, str):
                raw = os.environ.get(p.envvar) or None
            kw[p.name] = defaults[p.name] if raw is None else _convert(raw, hints[p.name])
    except Exception:  # whatever it is, the full CLI reports it
        return None
    texts = ([kw["text"]] if kw["text"] is not None else []) + list(kw.pop("texts") or ())
    if opts or extra or kw["no_server"] or not _servable(texts, kw["image"], kw["audio"], kw.pop("like"), kw.pop("unlike")):
        return None
    kw["text"], kw["image"] = texts, (kw["image"][0] if kw["image"] else None)
    kw["where"] = kw["where"] or ()
    if kw.pop("runtime") is not None or kw.pop("precision") is not None:
        return None  # this process's own runtime was asked for: search in-process
    try:
        if kw["k"] is None:  # the config file's or environment's, as the full CLI resolves it
            from mmsearch.config import Settings

            kw["k"] = Settings.resolve(store=os.fspath(kw["store"]) if kw["store"] is not None else None).k
        null = bool(kw["null"])
        fmt = present.pick_format(bool(kw.pop("as_json")), bool(kw.pop("as_jsonl")), bool(kw.pop("as_paths")) or null)
    except MmsearchError:
        return None
    del kw["no_server"]
    return handle_errors(_served)(fmt, kw.pop("store"), type=kw.pop("type_"), **kw)


_TRUE, _FALSE = {"1", "true", "t", "yes", "y", "on"}, {"0", "false", "f", "no", "n", "off"}


def _convert(raw: Any, hint: Any) -> Any:
    """A raw command-line value as the parameter's type (bool, int with min/max, str, Path); else ValueError."""
    base, info = typing.get_args(hint)[:2] if typing.get_origin(hint) is Annotated else (hint, None)
    options = [a for a in typing.get_args(base) if a is not type(None)]
    base = options[0] if len(options) == 1 else base  # Optional[X] -> X
    if typing.get_origin(base) is list and isinstance(raw, (list, tuple)):  # a repeatable option
        return [_convert(x, typing.get_args(base)[0]) for x in raw]
    if base is bool:
        if isinstance(raw, bool) or str(raw).lower() in _TRUE | _FALSE:
            return raw if isinstance(raw, bool) else str(raw).lower() in _TRUE
    elif base is float and isinstance(raw, str):
        value = float(raw)
        if value == value and (getattr(info, "min", None) is None or value >= info.min):
            return value
    elif base is int and isinstance(raw, str):
        value = int(raw)
        if (getattr(info, "min", None) is None or value >= info.min) and (getattr(info, "max", None) is None or value <= info.max):
            return value
    elif base in (str, Path) and isinstance(raw, str):
        return base(raw)
    raise ValueError(f"{raw!r} for {hint!r}")


@app.command()
@handle_errors
def dups(
    paths: Annotated[Optional[list[Path]], typer.Argument(help="Only files below these folders [default: the whole store].", show_default=False)] = None,
    threshold: Annotated[Optional[float], typer.Option("--threshold", min=0.0, max=1.0, help="Cosine at or above which two items are near-duplicates [default: 0.95]; higher: only closer copies.")] = None,
    type_: Annotated[str, typer.Option("--type", "-t", help="What to compare: image or audio.")] = "image",
    store: StoreOpt = None,
    model: ModelOpt = None,
    as_json: JsonOpt = False,
    as_jsonl: JsonlOpt = False,
    as_paths: Annotated[bool, typer.Option("--paths", help="Print only the files besides the first (kept) of each cluster, one per line.")] = False,
) -> None:
    """Near-duplicate images (or sounds): clusters of resized, recompressed or cropped copies and exact copies,
    the largest first (the one to keep). Files are never touched."""
    from mmsearch.query.dups import DEFAULT_THRESHOLD

    fmt = present.pick_format(as_json, as_jsonl, as_paths)
    with _engine(store, model=model, create=False) as eng:
        clusters = eng.dups(threshold, type=type_, under=paths or None)
        _notices(eng.notices)
    present.dups(out, clusters, fmt, threshold=DEFAULT_THRESHOLD if threshold is None else threshold)


@app.command()
@handle_errors
def stats(store: StoreOpt = None, as_json: JsonOpt = False) -> None:
    """Items per type, models (spaces), index kinds and store size."""
    with _engine(store, create=False) as eng:
        s = eng.stats()
    present.stats(out, s, present.Format.json if as_json else present.Format.table)


@app.command()
@handle_errors
def remove(
    targets: Annotated[list[str], typer.Argument(help="Files, folders (everything below) or text:ID items to forget.", show_default=False)],
    store: StoreOpt = None,
) -> None:
    """Forget files or folders (the files themselves are not touched)."""
    with _engine(store, create=False) as eng:
        n = eng.remove(targets)
    out.print(f"removed {n} sources")


@app.command()
@handle_errors
def errors(store: StoreOpt = None, as_json: JsonOpt = False, as_jsonl: JsonlOpt = False) -> None:
    """Files that could not be indexed, with the reason."""
    fmt = present.pick_format(as_json, as_jsonl, False)
    with _engine(store, create=False) as eng:
        items = eng.errors()
    if fmt is present.Format.table and not items:
        out.print("no errors recorded")
        return
    present.errors(out, items, fmt)


@app.command()
@handle_errors
def doctor(
    store: StoreOpt = None,
    repair: Annotated[bool, typer.Option("--repair/--no-repair", help="Repair what can be repaired (takes the writer lock).")] = True,
    as_json: JsonOpt = False,
) -> None:
    """Check the store (database, index files vs database, files on disk) and repair what it can. Exit 3: problems remain."""
    with _engine(store, create=False) as eng:
        report = eng.doctor(repair=repair)
    present.doctor(out, report, present.Format.json if as_json else present.Format.table)
    if not report.ok:
        raise typer.Exit(3)


@app.command()
@handle_errors
def serve(
    store: StoreOpt = None,
    model: ModelOpt = None,
    device: DeviceOpt = None,
    host: Annotated[str, typer.Option("--host", help="Address to listen on (0.0.0.0: every interface; anything but loopback requires a token).")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", min=0, max=65535, help="Port to listen on (0: any free port).")] = 8765,
    token: Annotated[Optional[str], typer.Option("--token", envvar="MMSEARCH_TOKEN", help="Require this token of every request (header Authorization: Bearer TOKEN, or open the printed URL ending in ?token=TOKEN once) [env MMSEARCH_TOKEN; default: none on loopback, a generated one on any other address].")] = None,
    cors: Annotated[Optional[list[str]], typer.Option("--cors", help="Let web pages from this origin call the API (repeat for several), e.g. https://example.org [default: none].")] = None,
    watch: Annotated[Optional[list[Path]], typer.Option("--watch", help="Keep the store in sync with this folder while serving, as `mmsearch watch` does (repeat for several).")] = None,
) -> None:
    """Serve the store over HTTP: a search page at / and a JSON API under /api (needs the server extra).

    While it runs, `mmsearch query` on the same store sends its queries here (a file server.json in the store says where).
    With --watch, it also keeps the store in sync with folders as `mmsearch watch` does (stopping prints its summary).
    """
    from mmsearch.server import serve as run_server  # imports FastAPI/uvicorn only now

    def ready(root: Path, url: str) -> None:
        err.print(present.styled("serving {} on {}  (Ctrl-C to stop)", root, url))

    if not watch:
        run_server(store, model=model, device=device, host=host, port=port, on_ready=ready, token=token, cors=cors)
        return
    # uvicorn raises the signal that stopped it again once it has: here it ends the watch too, cleanly
    with _stop_on_signals(threading.Event()):
        watched = run_server(store, model=model, device=device, host=host, port=port, on_ready=ready, token=token,
                             cors=cors, watch=watch, on_watch=_watch_event(present.Format.table))
    if watched is not None:
        _notices(watched.notices)
        _watch_summary(err, watched)


@app.command("config")
@handle_errors
def config_(store: StoreOpt = None, model: ModelsOpt = None, device: DeviceOpt = None, as_json: JsonOpt = False) -> None:
    """Every setting, its value and where it came from: default < config file < MMSEARCH_* environment < argument."""
    from mmsearch.config import Settings, config_path

    settings, sources = Settings.layered(store=os.fspath(store) if store is not None else None,
                                         model=model or None, device=device)
    present.settings(out, settings, sources, config_path(), present.pick_format(as_json, False, False))


@app.command()
@handle_errors
def cache(
    clear: Annotated[bool, typer.Option("--clear", help="Delete every export (each model is exported again on its next use).")] = False,
    as_json: JsonOpt = False,
) -> None:
    """The models exported for the CPU runtime (ONNX), shared by every store: size, precision, fidelity."""
    from mmsearch.engine import Engine

    present.runtime_cache(out, Engine.runtime_cache(clear=clear), present.pick_format(as_json, False, False), cleared=clear)


@app.command("eval")
@handle_errors
def eval_(
    dataset: Annotated[Path, typer.Argument(help="Captions: CSV/JSONL of (image or sound, caption), Clotho or AudioCaps CSV, COCO captions or Karpathy split JSON. Labels (zero-shot classification): ESC-50's meta/esc50.csv (or a CSV of file,category[,fold]) or a folder <label>/<files>.", show_default=False)],
    images_root: Annotated[Optional[Path], typer.Option("--images-root", "--audio-root", help="Folder the dataset's file paths are relative to [default: the dataset's folder, or the one beside it that holds them].")] = None,
    split: Annotated[Optional[str], typer.Option("--split", help="Karpathy split to use, e.g. test.")] = None,
    prompt: Annotated[Optional[str], typer.Option("--prompt", help="Classification: the text of a class, {} for its name (_ → space) [default: \"the sound of {}\"; LAION-CLAP's: \"This is a sound of {}.\"; images: \"a photo of a {}.\"].")] = None,
    fold: Annotated[Optional[int], typer.Option("--fold", help="Classification: only this fold's files (ESC-50: 1-5); every class stays a candidate.")] = None,
    store: Annotated[Optional[Path], typer.Option("--store", "-s", help="Store to index into [default: a temporary one].")] = None,
    model: ModelsOpt = None,
    device: DeviceOpt = None,
    runtime: RuntimeOpt = None,
    batch_size: BatchOpt = None,
    index_kind: Annotated[Optional[str], typer.Option("--index", help="ANN index to compare with exact search.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Retrieval quality: Recall@1/5/10 both ways on captioned images or sounds (exact search vs the ANN index),
    or zero-shot classification accuracy (top-1, top-5) on labelled sounds or images."""
    import tempfile

    with tempfile.TemporaryDirectory(prefix="mmsearch-eval-") as tmp:
        with _engine(store or Path(tmp) / "store", model=model or None, device=device, runtime=runtime,
                     batch_size=batch_size, index=index_kind) as eng:
            report = eng.evaluate(dataset, images_root=images_root, split=split, fold=fold, prompt=prompt)
            _notices(eng.notices)
    present.eval_report(out, report, present.Format.json if as_json else present.Format.table)


def main() -> None:  # console-script entry point
    import logging

    global _served_tried
    if sys.argv[1:2] == ["query"]:
        try:
            served = _fast_query(sys.argv[2:])
        except typer.Exit as exc:  # an error the server reported, printed as in-process prints it
            sys.exit(exc.exit_code)
        if served:
            return
        _served_tried = served is False
    # open_clip and huggingface_hub log download failures on the root logger; we report them ourselves.
    logging.basicConfig(level=os.environ.get("MMSEARCH_LOG_LEVEL", "CRITICAL").upper())
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
