"""Decode workers are light (no torch, no open_clip) and die with their parent, even after ``kill -9``."""

from __future__ import annotations

import os
import signal
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import pytest

from mmsearch.ingest.pipeline import INLINE_BELOW, DecodePool, default_workers

HEAVY = ("torch", "open_clip", "torchvision", "transformers", "onnxruntime", "faiss")


def _probe() -> dict:
    """Runs in a worker: what it has imported, and the death signal it was given (Linux)."""
    import threading

    heavy = sorted(m for m in sys.modules if m.split(".")[0] in HEAVY)
    pdeathsig = None
    if sys.platform.startswith("linux"):
        import ctypes

        sig = ctypes.c_int(0)
        ctypes.CDLL(None).prctl(2, ctypes.byref(sig), 0, 0, 0)  # PR_GET_PDEATHSIG
        pdeathsig = sig.value
    return {"heavy": heavy, "pdeathsig": pdeathsig, "threads": [t.name for t in threading.enumerate()],
            "decoded": "PIL.Image" in sys.modules and "mmsearch.ingest.pixels" in sys.modules}


def test_workers_import_neither_torch_nor_open_clip(tmp_path, tiny_model):
    from mmsearch.encoders.registry import load_encoder
    from tests.kit import write_images

    recipe = load_encoder(tiny_model, device="cpu").image_recipe()  # the parent has torch loaded: workers must not
    paths = write_images(tmp_path / "img", INLINE_BELOW, size=(90, 70))
    with DecodePool(2, len(paths)) as pool:
        assert pool.workers == 2
        loaded = list(pool.map((str(p), "image", recipe, None) for p in paths))
        probes = [pool._pool.submit(_probe).result(timeout=60) for _ in range(4)]
    assert all(x.error is None and x.pixels.dtype.name == "uint8" for x in loaded)
    assert any(probe["decoded"] for probe in probes)  # a probe met a worker that had decoded
    for probe in probes:
        assert probe["heavy"] == []
        assert "mmsearch-parent-watch" in probe["threads"]
        if sys.platform.startswith("linux"):
            assert probe["pdeathsig"] == signal.SIGKILL


def test_default_workers_leave_the_cores_to_the_encoder(monkeypatch):
    for cores, want in ((1, 1), (2, 1), (4, 1), (8, 2), (16, 4), (64, 8)):
        monkeypatch.setattr(os, "cpu_count", lambda c=cores: c)
        assert default_workers() == want


# ---- kill -9 of the parent -------------------------------------------------------------------------------
def _slow_pngs(folder: Path, n: int, side: int = 2500) -> None:
    """Tiny files (~20 KB) that take a worker tens of ms each to decode and resize: side × side pixels
    (no reduced decode for PNGs), the same pixels in each, made distinct files by a text chunk."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    head = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0))
    tail = chunk(b"IDAT", zlib.compress((b"\x00" + bytes([40, 90, 160]) * side) * side, 6)) + chunk(b"IEND", b"")
    for i in range(n):
        (folder / f"slow_{i:03d}.png").write_bytes(head + chunk(b"tEXt", b"n\x00" + str(i).encode()) + tail)


def _children(pid: int) -> set[int]:
    out: set[int] = set()
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            out.update(int(x) for x in (task / "children").read_text().split())
        except OSError:
            pass
    return out


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _alive(pid: int) -> bool:
    """Running (a zombie is dead: with its parent gone, nobody here may reap it)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


def _threads(pid: int) -> int:
    try:
        return len(os.listdir(f"/proc/{pid}/task"))
    except OSError:
        return 0


@pytest.mark.skipif(not Path(f"/proc/{os.getpid()}/task/{os.getpid()}/children").exists(),
                    reason="needs Linux /proc/PID/task/TID/children")
def test_workers_die_when_the_index_process_is_killed(tmp_path, tiny_model):
    data = tmp_path / "data"
    data.mkdir()
    n = 240  # ~50 ms of work each: well over the seconds this test needs the run to last
    _slow_pngs(data, n)
    cmd = [sys.executable, "-m", "mmsearch", "index", str(data), "--store", str(tmp_path / "store"),
           "--model", tiny_model, "--workers", "2"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    log = open(tmp_path / "index.log", "wb")
    parent = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
    workers: set[int] = set()
    others: set[int] = set()
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and parent.poll() is None:
            kids = _children(parent.pid)
            workers = {k for k in kids if "spawn_main" in _cmdline(k)}
            others = kids - workers
            if len(workers) == 2 and all(_threads(w) >= 2 for w in workers):  # initialised: watchdog running
                break
            time.sleep(0.02)
        assert parent.poll() is None, f"the run ended before its workers were seen:\n{(tmp_path / 'index.log').read_text()}"
        assert len(workers) == 2, f"no 2 initialised workers within the deadline: {workers}"
        parent.send_signal(signal.SIGKILL)
        parent.wait(timeout=30)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and any(_alive(p) for p in workers | others):
            time.sleep(0.05)
        left = {p: _cmdline(p) for p in workers | others if _alive(p)}
        assert not left, f"still running after the parent was killed: {left}"
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait()
        for pid in workers | others:  # only what this test started
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
        log.close()
