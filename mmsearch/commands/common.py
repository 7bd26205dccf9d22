"""What every command shares: the typer app, the consoles, the option definitions, and the
translation of library errors (and Ctrl-C / SIGTERM) into one line and a documented exit code
(see :mod:`mmsearch.cli`)."""

from __future__ import annotations

import functools
import signal
import threading
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
WorkersOpt = Annotated[Optional[int], typer.Option("--workers", help="Decode processes (0: decode in this process).")]
GpuDecodeOpt = Annotated[Optional[str], typer.Option("--gpu-decode", help="auto, on or off: decode JPEGs with nvJPEG and resize them on the GPU (auto: when the image model runs on torch on CUDA; on: also a torch model on the CPU, the same tensor path there; off: CPU decode workers only) [env MMSEARCH_GPU_DECODE].")]
MaxAudioOpt = Annotated[Optional[float], typer.Option("--max-audio-seconds", min=0.001, help="Longer sounds are indexed by their first this-many seconds (recorded as such) [default: 600].")]
IndexOpt = Annotated[Optional[str], typer.Option("--index", help="ANN index: auto, flat, ivf, hnsw, pq, ondisk (IVF-PQ lists memory-mapped from disk).")]
RecallOpt = Annotated[Optional[float], typer.Option("--recall-target", min=0.01, max=1.0, help="Recall@10 against exact search that approximate indexes are tuned to (`mmsearch stats` shows what was measured); a store's indexes keep it for later writers [default: the target each index was tuned to, 0.95 for a new one].")]
DbOpt = Annotated[Optional[str], typer.Option("--db", metavar="URL", help="The PostgreSQL database holding the store's truth (postgresql+psycopg://user@host/name; password from PGPASSWORD or ~/.pgpass), shared by several machines; the store folder then holds this machine's indexes and remembers the URL, so later commands need no --db [env MMSEARCH_DB; default: the URL the folder remembers, else its own SQLite file].", show_default=False)]
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
