"""Commands that inspect, check, serve or measure a store: dups, stats, errors, doctor, downgrade, serve,
config, cache, eval."""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Annotated, Optional

import typer

from mmsearch import present, reports
from mmsearch.commands.common import (BatchOpt, DbOpt, DeviceOpt, JsonlOpt, JsonOpt, ModelOpt, ModelsOpt, RuntimeOpt,
                                      StoreOpt, _engine, _notices, _stop_on_signals, app, err, handle_errors, out)
from mmsearch.commands.writing import _watch_event, _watch_summary


@app.command()
@handle_errors
def dups(
    paths: Annotated[Optional[list[Path]], typer.Argument(help="Only files below these folders [default: the whole store].", show_default=False)] = None,
    threshold: Annotated[Optional[float], typer.Option("--threshold", min=0.0, max=1.0, help="Cosine at or above which two items are near-duplicates [default: 0.95]; higher: only closer copies.")] = None,
    type_: Annotated[str, typer.Option("--type", "-t", help="What to compare: image, audio or video.")] = "image",
    store: StoreOpt = None,
    db: DbOpt = None,
    model: ModelOpt = None,
    as_json: JsonOpt = False,
    as_jsonl: JsonlOpt = False,
    as_paths: Annotated[bool, typer.Option("--paths", help="Print only the files besides the first (kept) of each cluster, one per line.")] = False,
    null: Annotated[bool, typer.Option("-0", "--null", help="As --paths, each path ended by a NUL byte (for `xargs -0`).")] = False,
) -> None:
    """Near-duplicate images (or sounds): clusters of resized, recompressed or cropped copies and exact copies,
    the largest first (the one to keep). Files are never touched."""
    from mmsearch.query.dups import DEFAULT_THRESHOLD

    fmt = present.pick_format(as_json, as_jsonl, as_paths or null)
    with _engine(store, model=model, create=False, db=db) as eng:
        clusters = eng.dups(threshold, type=type_, under=paths or None)
        _notices(eng.notices)
    present.dups(out, clusters, fmt, threshold=DEFAULT_THRESHOLD if threshold is None else threshold, null=null)


@app.command()
@handle_errors
def stats(store: StoreOpt = None, db: DbOpt = None, as_json: JsonOpt = False) -> None:
    """Items per type, models (spaces), index kinds and store size."""
    with _engine(store, create=False, db=db) as eng:
        s = eng.stats()
    reports.stats(out, s, present.Format.json if as_json else present.Format.table)


@app.command()
@handle_errors
def errors(store: StoreOpt = None, db: DbOpt = None, as_json: JsonOpt = False, as_jsonl: JsonlOpt = False) -> None:
    """Files that could not be indexed, with the reason."""
    fmt = present.pick_format(as_json, as_jsonl, False)
    with _engine(store, create=False, db=db) as eng:
        items = eng.errors()
    if fmt is present.Format.table and not items:
        out.print("no errors recorded")
        return
    present.errors(out, items, fmt)


@app.command()
@handle_errors
def doctor(
    store: StoreOpt = None,
    db: DbOpt = None,
    repair: Annotated[bool, typer.Option("--repair/--no-repair", help="Repair what can be repaired (takes the writer lock).")] = True,
    as_json: JsonOpt = False,
) -> None:
    """Check the store (database, index files vs database, files on disk) and repair what it can. Exit 3: problems remain."""
    with _engine(store, create=False, db=db) as eng:
        report = eng.doctor(repair=repair)
    reports.doctor(out, report, present.Format.json if as_json else present.Format.table)
    if not report.ok:
        raise typer.Exit(3)


@app.command()
@handle_errors
def downgrade(
    revision: Annotated[str, typer.Argument(help="The schema revision an older release reads (0001: releases before errors per model).")],
    store: StoreOpt = None,
    db: DbOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Take the store back to an older schema revision, for an older mmsearch release (this one upgrades it again when it opens it)."""
    from mmsearch.engine import Engine

    had = Engine.downgrade(revision, store, db=db)
    reports.downgraded(out, had, revision, present.Format.json if as_json else present.Format.table)


@app.command()
@handle_errors
def serve(
    store: StoreOpt = None,
    db: DbOpt = None,
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
        run_server(store, model=model, device=device, db=db, host=host, port=port, on_ready=ready, token=token,
                   cors=cors)
        return
    # uvicorn raises the signal that stopped it again once it has: here it ends the watch too, cleanly
    with _stop_on_signals(threading.Event()):
        watched = run_server(store, model=model, device=device, db=db, host=host, port=port, on_ready=ready, token=token,
                             cors=cors, watch=watch, on_watch=_watch_event(present.Format.table))
    if watched is not None:
        _notices(watched.notices)
        _watch_summary(err, watched)


@app.command("config")
@handle_errors
def config_(store: StoreOpt = None, db: DbOpt = None, model: ModelsOpt = None, device: DeviceOpt = None,
            as_json: JsonOpt = False) -> None:
    """Every setting, its value and where it came from: default < config file < MMSEARCH_* environment < argument."""
    from mmsearch.config import Settings, config_path

    settings, sources = Settings.layered(store=os.fspath(store) if store is not None else None,
                                         model=model or None, device=device, db=db)
    reports.settings(out, settings, sources, config_path(), present.pick_format(as_json, False, False))


@app.command()
@handle_errors
def cache(
    clear: Annotated[bool, typer.Option("--clear", help="Delete every export (each model is exported again on its next use).")] = False,
    as_json: JsonOpt = False,
) -> None:
    """The models exported for the CPU runtime (ONNX), shared by every store: size, precision, fidelity."""
    from mmsearch.engine import Engine

    reports.runtime_cache(out, Engine.runtime_cache(clear=clear), present.pick_format(as_json, False, False), cleared=clear)


@app.command("eval")
@handle_errors
def eval_(
    dataset: Annotated[Path, typer.Argument(help="Captions: CSV/JSONL of (image, sound or video, caption), Clotho or AudioCaps CSV, MSR-VTT test CSV (key,vid_key,video_id,sentence), COCO captions or Karpathy split JSON. Labels (zero-shot classification): ESC-50's meta/esc50.csv (or a CSV of file,category[,fold]) or a folder <label>/<files>.", show_default=False)],
    images_root: Annotated[Optional[Path], typer.Option("--images-root", "--audio-root", "--videos-root", help="Folder the dataset's file paths are relative to (MSR-VTT: the folder of <video_id>.mp4) [default: the dataset's folder, or the one beside it that holds them].")] = None,
    split: Annotated[Optional[str], typer.Option("--split", help="Karpathy split to use, e.g. test.")] = None,
    prompt: Annotated[Optional[str], typer.Option("--prompt", help="Classification: the text of a class, {} for its name (_ → space) [default: \"the sound of {}\"; LAION-CLAP's: \"This is a sound of {}.\"; images: \"a photo of a {}.\"].")] = None,
    fold: Annotated[Optional[int], typer.Option("--fold", help="Classification: only this fold's files (ESC-50: 1-5); every class stays a candidate.")] = None,
    store: Annotated[Optional[Path], typer.Option("--store", "-s", help="Store to index into [default: a temporary one].")] = None,
    db: DbOpt = None,
    model: ModelsOpt = None,
    device: DeviceOpt = None,
    runtime: RuntimeOpt = None,
    batch_size: BatchOpt = None,
    index_kind: Annotated[Optional[str], typer.Option("--index", help="ANN index to compare with exact search.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Retrieval quality: Recall@1/5/10 both ways on captioned images or sounds (exact search vs the ANN index),
    text→video Recall@1/5/10 and median rank on captioned videos (peak and mean pooling), or zero-shot
    classification accuracy (top-1, top-5) on labelled sounds or images."""
    import tempfile

    with tempfile.TemporaryDirectory(prefix="mmsearch-eval-") as tmp:
        with _engine(store or Path(tmp) / "store", model=model or None, device=device, runtime=runtime,
                     batch_size=batch_size, index=index_kind, db=db) as eng:
            report = eng.evaluate(dataset, images_root=images_root, split=split, fold=fold, prompt=prompt)
            _notices(eng.notices)
    reports.eval_report(out, report, present.Format.json if as_json else present.Format.table)
