"""The `mmsearch` command: parse, call Engine, render. No business logic lives here.

This module holds `query` (and its fast path to a running server) and the entry point; the other
commands live in :mod:`mmsearch.commands` (``writing``: index, watch, add-text, remove; ``admin``:
stats, errors, doctor, dups, serve, config, cache, eval), on the one typer ``app`` of
:mod:`mmsearch.commands.common` with the options and error handling they share.

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

import os
import sys
import typing
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from mmsearch import present
from mmsearch.commands.common import (DbOpt, DeviceOpt, JsonlOpt, JsonOpt, ModelOpt, PathsOpt, PrecisionOpt, RuntimeOpt,
                                      StoreOpt, _engine, _notices, app, err, handle_errors, out)  # noqa: F401 (cli.err)
from mmsearch.commands import writing  # noqa: F401  (registers index, watch, add-text, remove on app, first)
from mmsearch.errors import MmsearchError


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
    type_: Annotated[Optional[str], typer.Option("--type", "-t", help="What to return: image, audio, video, text or any [default: every kind of file the store holds that the query reaches; texts when it holds only texts].")] = None,
    moments: Annotated[int, typer.Option("--moments", help="Moments listed per video (where in it the query matched, seen and/or heard).", min=1)] = 1,
    pooling: Annotated[str, typer.Option("--pooling", help="How a video scores: peak (its best moment) or mean (the mean of its frames/windows).")] = "peak",
    min_score: Annotated[Optional[float], typer.Option("--min-score", help="Only results whose calibrated score (standard deviations above unrelated queries) is at least this; exit 1 when none is.")] = None,
    explain: Annotated[bool, typer.Option("--explain", help="Show how each score came about: raw cosine, the background it is calibrated against, the model.")] = False,
    under: Annotated[Optional[Path], typer.Option("--under", help="Only results below this folder.")] = None,
    collapse_dups: Annotated[bool, typer.Option("--collapse-dups", help="Fold near-duplicates (cosine >= 0.95 to a higher-ranked result) into that result; still -k distinct results.")] = False,
    where: Annotated[Optional[list[str]], typer.Option("--where", "-w", help="Only results where this holds, e.g. 'width>=3000', 'make~canon', 'taken>=2023-06-01', 'gps', '!gps', 'size<5MB', 'duration<30' (repeatable: all must hold; fields: taken mtime width height size duration make model camera gps lat lon orientation).", show_default=False)] = None,
    since: Annotated[Optional[str], typer.Option("--since", help="Only results taken on or after this date (YYYY[-MM[-DD]]); the file's mtime when it has no EXIF date.", show_default=False)] = None,
    until: Annotated[Optional[str], typer.Option("--until", help="Only results taken on or before this date (the whole day or month given).", show_default=False)] = None,
    path: Annotated[Optional[str], typer.Option("--path", help="Only files whose path matches this glob ('*/2023/*.jpg'; * also crosses folders) or starts with it.", show_default=False)] = None,
    store: StoreOpt = None,
    db: DbOpt = None,
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
    served = not no_server and db is None and runtime is None and precision is None and _servable(texts, image, audio, like, unlike)
    if served and _served(fmt, store, model=model, device=device, text=texts, image=image[0] if image else None,
                          audio=audio, k=k, type=type_, under=under, nprobe=nprobe, ef_search=ef_search,
                          min_score=min_score, where=where or (), since=since, until=until, path=path,
                          collapse_dups=collapse_dups, moments=moments, pooling=pooling, explain=explain, null=null):
        return
    if texts:  # the model loads on a thread while the store and index code import
        from mmsearch.query.prefetch import text_model

        text_model(store, model=model, device=device, runtime=runtime, precision=precision)
    with _engine(store, model=model, device=device, runtime=runtime, precision=precision, create=False, db=db) as eng:
        results = eng.search(text=texts or None, image=image or None, audio=audio, like=like or (), unlike=unlike or (),
                             k=k, type=type_, under=under, nprobe=nprobe, ef_search=ef_search, min_score=min_score,
                             where=where or (), since=since, until=until, path=path, collapse_dups=collapse_dups,
                             moments=moments, pooling=pooling)
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
    if kw.pop("runtime") is not None or kw.pop("precision") is not None or kw.pop("db") is not None:
        return None  # this process's own runtime (or a database named here) was asked for: search in-process
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


from mmsearch.commands import admin  # noqa: E402,F401  (registers the inspecting commands on app, after query)


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
