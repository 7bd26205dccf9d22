"""mmsearch against rclip 4.0.8, side by side, through each tool's own command line.

Both tools run the same seeded random open_clip ``ViT-B-32-256`` (the architecture rclip 4 ships; cost
does not depend on weight values), exported once to what each loads:

* rclip: ``$RCLIP_DATADIR/ViT-B-32-256-datacomp_s34b_b86k/{visual,textual}.onnx`` (fp32, opset 18,
  input ``input``, output ``output``, dynamic batch: as rclip's own ``scripts/convert_model.py``
  exports them), ``$RCLIP_DATADIR/tokenizer/bpe_simple_vocab_16e6.txt.gz`` (open_clip's vocabulary)
  and the model repository's legal files (``LICENSE``, ``OPENAI-CLIP-MIT.txt``, ``README.md``,
  ``THIRD_PARTY_NOTICES.md``; rclip calls the Hugging Face hub when any is missing, so placeholders
  are written). rclip keeps its database in the same folder, so each fresh rclip "store" is a new
  data dir whose model files are symlinks to the prepared ones.
* mmsearch: a ``local-dir:`` folder (``open_clip_config.json`` + ``open_clip_model.safetensors``).
  ``MMSEARCH_CACHE`` points at a benchmark-owned folder, warmed once before timing (untimed), so a
  model conversion mmsearch caches is not in the figures; rclip's files are likewise ready before.

rclip 4 needs Python >= 3.12: it gets its own venv in ``benchmarks/_data/rclip-venv`` (made on first
use). ``HF_HUB_OFFLINE=1`` for both; mmsearch runs with ``--device cpu`` (rclip on Linux is CPU only).
Threads: each tool's own default unless ``--cpus N`` pins both process trees to the first N CPUs.

Measured per tool, interleaved (rclip, mmsearch, rclip, mmsearch, ...), median of ``--runs``:

* first index of 300 JPEGs 640x480 and of 60 JPEGs 12 MP (4000x3000), procedurally generated once
  (gradients, shapes, noise; quality 90) and cached in ``benchmarks/_data/vs-rclip/``; a fresh store
  each run. rclip has no index-only command: its index is ``rclip -f QUERY`` run in the folder
  (a sync, then one query); mmsearch's is ``mmsearch index FOLDER``;
* re-sync with nothing changed (the same command again; rclip's includes its query);
* cold query ``"a red bicycle"``, a new process each time (``rclip -n -f QUERY``, ``mmsearch query``);
* peak memory while indexing: the sum of RSS over the process and all its descendants, sampled from
  /proc every 50 ms (shared pages are counted once per process, as RSS does);
* a served query: ``mmsearch query`` while ``mmsearch serve`` runs on the store, after one untimed
  query ("n/a" when the server does not start, or the query does not reach it: its access log is read);
* model-only encode rate (each tool's image tower on a preprocessed float32 batch, best of 3 after a
  warm-up: mmsearch's ``load_encoder(...).embed_image_batch`` at batch 64, rclip's ONNX session at
  its batch 8), and end-to-end files/s over that rate.

Also checks that both stored the same vectors (cosine per image, matched by path). The figures go
into a table, a PASS/FAIL list of targets, and ``benchmarks/results/vs-rclip-<UTC time>.json``.

    .venv/bin/python benchmarks/bench_vs_rclip.py [--runs 3] [--quick] [--cpus N] [--rclip-python PY]
                                                 [--only rclip|mmsearch]

``--quick`` is a trial (40 + 8 JPEGs, 1 run); ``--only`` times one tool and prints its medians (no
comparison, no result file). Generated photos, the exported model and the rclip venv are reused.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import save  # noqa: E402

RCLIP_VERSION = "4.0.8"
ARCH = "ViT-B-32-256"
SEED = 0
QUERY = "a red bicycle"
ROOT = Path(__file__).resolve().parent
DATA = ROOT / "_data" / "vs-rclip"
RCLIP_VENV = ROOT / "_data" / "rclip-venv"
MMSEARCH = Path(sys.executable).with_name("mmsearch")
RCLIP_MODEL_SUBDIR = "ViT-B-32-256-datacomp_s34b_b86k"
RCLIP_TOKENIZER = "tokenizer/bpe_simple_vocab_16e6.txt.gz"
RCLIP_LEGAL = ("LICENSE", "OPENAI-CLIP-MIT.txt", "README.md", "THIRD_PARTY_NOTICES.md")
PAGE = os.sysconf("SC_PAGE_SIZE")


@dataclass(frozen=True)
class Folder:
    key: str  # "small" or "big"
    kind: str  # how the label names the size
    n: int
    size: tuple[int, int]

    @property
    def label(self) -> str:
        return f"{self.n} JPEGs {self.kind}"

    @property
    def path(self) -> Path:
        return DATA / f"photos-{self.size[0]}x{self.size[1]}-n{self.n}"


# ---- setup: rclip venv, model export, photos ------------------------------------------------------
def find_python312(given: str | None) -> str:
    """--rclip-python, else the first of python3.12, python3.13 on PATH, else the pyenv 3.12.1."""
    for cand in ([given] if given else ["python3.12", "python3.13", "/root/.pyenv/versions/3.12.1/bin/python"]):
        path = shutil.which(cand) or (cand if Path(cand).is_file() else None)
        if path:
            return path
    sys.exit("no Python >= 3.12 for rclip 4 (pip resolves rclip 3.x on older ones): pass --rclip-python")


def ensure_rclip(python: str) -> Path:
    """rclip==4.0.8 in benchmarks/_data/rclip-venv; returns its `rclip` command."""
    exe, py = RCLIP_VENV / "bin" / "rclip", RCLIP_VENV / "bin" / "python"
    probe = [str(py), "-c", "import importlib.metadata as m; print(m.version('rclip'))"]
    if exe.exists() and subprocess.run(probe, capture_output=True, text=True).stdout.strip() == RCLIP_VERSION:
        return exe
    print(f"setting up rclip {RCLIP_VERSION} in {RCLIP_VENV} with {python} ...")
    subprocess.run([python, "-m", "venv", "--clear", str(RCLIP_VENV)], check=True)
    subprocess.run([str(py), "-m", "pip", "install", "-q", f"rclip=={RCLIP_VERSION}"], check=True)
    got = subprocess.run(probe, capture_output=True, text=True, check=True).stdout.strip()
    if got != RCLIP_VERSION:
        sys.exit(f"rclip {got} installed instead of {RCLIP_VERSION} (Python too old?)")
    return exe


def export_models(out: Path) -> tuple[Path, Path]:
    """One seeded random ViT-B-32-256 → (rclip model files dir, mmsearch local-dir). Cached by a stamp."""
    rclip_dir, local_dir, stamp = out / "rclip-model", out / "local-dir", out / "export.json"
    want = {"arch": ARCH, "seed": SEED}
    if stamp.exists() and json.loads(stamp.read_text()) == want:
        return rclip_dir, local_dir
    import open_clip
    import torch
    from safetensors.torch import save_file

    shutil.rmtree(out, ignore_errors=True)
    torch.manual_seed(SEED)
    model, _, _ = open_clip.create_model_and_transforms(ARCH, pretrained=None)
    model.eval()
    local_dir.mkdir(parents=True)
    pre = {k: list(v) if isinstance(v, tuple) else v for k, v in open_clip.get_model_preprocess_cfg(model).items()}
    (local_dir / "open_clip_config.json").write_text(
        json.dumps({"model_cfg": open_clip.get_model_config(ARCH), "preprocess_cfg": pre}, indent=2))
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(local_dir / "open_clip_model.safetensors"))
    export_rclip_onnx(model, rclip_dir)
    stamp.write_text(json.dumps(want))
    return rclip_dir, local_dir


def export_rclip_onnx(model, folder: Path) -> None:
    """visual.onnx, textual.onnx, tokenizer and legal files in rclip's data-dir layout."""
    import open_clip
    import torch

    class Textual(torch.nn.Module):
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, tokens):
            return self.m.encode_text(tokens)

    sub = folder / RCLIP_MODEL_SUBDIR
    sub.mkdir(parents=True)
    towers = [(model.visual, torch.randn(1, 3, 256, 256), "visual.onnx"),
              (Textual(model), torch.zeros(1, 77, dtype=torch.long), "textual.onnx")]
    fastpath = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)  # as rclip's convert_model.py
    try:
        for module, dummy, name in towers:
            torch.onnx.export(module, (dummy,), str(sub / name), input_names=["input"], output_names=["output"],
                              dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}}, opset_version=18,
                              dynamo=False)
    finally:
        torch.backends.mha.set_fastpath_enabled(fastpath)
    (folder / RCLIP_TOKENIZER).parent.mkdir(parents=True)
    shutil.copy2(Path(open_clip.__file__).parent / "bpe_simple_vocab_16e6.txt.gz", folder / RCLIP_TOKENIZER)
    for name in RCLIP_LEGAL:  # rclip only checks that they exist; without them it calls the hub
        (folder / name).write_text(f"placeholder {name} for an offline benchmark (random weights)\n")


def make_photo(rng: np.random.Generator, w: int, h: int):
    """Photo-like: a smooth colour field, soft shapes, a gradient sky, sensor-like noise."""
    from PIL import Image, ImageDraw, ImageFilter

    im = Image.fromarray(rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)).resize((w, h), Image.BICUBIC)
    d = ImageDraw.Draw(im)
    for _ in range(10):
        x, y = int(rng.integers(0, w)), int(rng.integers(0, h))
        rw, rh = (int(v) for v in rng.integers(w // 20, w // 3, 2))
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        (d.ellipse if rng.random() < 0.5 else d.rectangle)([x, y, x + rw, y + rh], fill=colour)
    im = im.filter(ImageFilter.GaussianBlur(w / 640))
    arr = np.asarray(im, dtype=np.int16)
    arr += (np.linspace(-30, 30, h, dtype=np.int16)[:, None, None]
            + rng.integers(-7, 8, (h, w, 1), dtype=np.int16) + rng.integers(-3, 4, (h, w, 3), dtype=np.int16))
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))


def ensure_photos(folder: Folder) -> float:
    """Generate the folder once (a stamp file beside it marks it complete); returns the mean size in KB."""
    done = folder.path.with_suffix(".done")
    if not done.exists():
        shutil.rmtree(folder.path, ignore_errors=True)
        folder.path.mkdir(parents=True)
        t0 = time.perf_counter()
        for i in range(folder.n):
            rng = np.random.default_rng([SEED, folder.size[0], i])
            make_photo(rng, *folder.size).save(folder.path / f"photo_{i:04d}.jpg", quality=90)
        done.write_text(f"{time.perf_counter() - t0:.1f}s\n")
    files = sorted(folder.path.glob("*.jpg"))
    return sum(f.stat().st_size for f in files) / len(files) / 1024


# ---- running a command: wall time and the peak RSS of its process tree ---------------------------
@dataclass
class Ran:
    wall_s: float
    peak_mb: float
    out: str
    err: str


def tree_rss(root: int) -> int:
    """Bytes of RSS summed over ``root`` and all its descendants (one /proc scan)."""
    children: dict[int, list[int]] = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(d))
    total, todo = 0, [root]
    while todo:
        pid = todo.pop()
        todo.extend(children.get(pid, ()))
        try:
            with open(f"/proc/{pid}/statm") as f:
                total += int(f.read().split()[1]) * PAGE
        except (OSError, IndexError, ValueError):
            pass
    return total


class Runner:
    def __init__(self, env: dict[str, str], cpus: int | None) -> None:
        self.env, self.cpus = env, cpus

    def _pin(self) -> None:
        if self.cpus:
            os.sched_setaffinity(0, sorted(os.sched_getaffinity(0))[: self.cpus])

    def popen(self, cmd: list, *, cwd: Path | None = None, env: dict | None = None, **kw) -> subprocess.Popen:
        return subprocess.Popen([str(c) for c in cmd], cwd=cwd, env={**self.env, **(env or {})},
                                preexec_fn=self._pin if self.cpus else None, text=True, **kw)

    def run(self, cmd: list, *, cwd: Path | None = None, env: dict | None = None, sample: bool = False) -> Ran:
        """Run to completion (a non-zero exit aborts the benchmark), sampling the tree's RSS every 50 ms."""
        t0 = time.perf_counter()
        p = self.popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        peak, stop = [0], threading.Event()

        def sampler() -> None:
            while not stop.wait(0.05):
                peak[0] = max(peak[0], tree_rss(p.pid))

        th = threading.Thread(target=sampler, daemon=True)
        if sample:
            th.start()
        out, err = p.communicate()
        wall = time.perf_counter() - t0
        stop.set()
        if sample:
            th.join()
        if p.returncode != 0:
            sys.exit(f"command failed ({p.returncode}): {' '.join(map(str, cmd))}\n{err[-3000:]}")
        return Ran(wall, peak[0] / 2**20, out, err)


# ---- the two tools behind one interface ----------------------------------------------------------
@dataclass
class Tool:
    name: str
    runner: Runner
    stores: dict[str, Path] = field(default_factory=dict)
    made: int = 0

    def fresh(self, folder: Folder) -> None:
        """A new, empty store (database) for ``folder``; the previous one is deleted."""
        if folder.key in self.stores:
            shutil.rmtree(self.stores[folder.key], ignore_errors=True)
        self.made += 1
        path = DATA / "work" / f"{self.name}-{folder.key}-{self.made}"
        shutil.rmtree(path, ignore_errors=True)
        self.stores[folder.key] = path
        self._prepare(path)

    def _prepare(self, path: Path) -> None:
        """Make what a new store needs before the tool runs on it (nothing by default)."""

    # each tool: index(folder), resync(folder), query(folder) -> Ran; vectors(folder) -> {real path: vector}


@dataclass
class Rclip(Tool):
    exe: Path = Path()
    model_dir: Path = Path()

    def _prepare(self, path: Path) -> None:
        path.mkdir(parents=True)
        for name in (RCLIP_MODEL_SUBDIR, RCLIP_TOKENIZER.split("/")[0], *RCLIP_LEGAL):
            (path / name).symlink_to(self.model_dir / name)

    def _run(self, folder: Folder, *args: str, sample: bool = False) -> Ran:
        env = {"RCLIP_DATADIR": str(self.stores[folder.key])}
        return self.runner.run([self.exe, *args, QUERY], cwd=folder.path, env=env, sample=sample)

    def index(self, folder: Folder) -> Ran:
        return self._run(folder, "-f", sample=True)

    def resync(self, folder: Folder) -> Ran:
        return self._run(folder, "-f")

    def query(self, folder: Folder) -> Ran:
        return self._run(folder, "-n", "-f")

    def vectors(self, folder: Folder) -> dict[str, np.ndarray]:
        with closing(sqlite3.connect(self.stores[folder.key] / "db.sqlite3")) as con:
            rows = con.execute("SELECT filepath, vector FROM images WHERE deleted IS NULL").fetchall()
        return {os.path.realpath(p): np.frombuffer(v, np.float32) for p, v in rows}


@dataclass
class Mmsearch(Tool):
    model: str = ""

    def _index_cmd(self, folder: Folder) -> list:
        return [MMSEARCH, "index", folder.path, "--store", self.stores[folder.key], "--model", self.model,
                "--device", "cpu", "--json"]

    def index(self, folder: Folder) -> Ran:
        return self.runner.run(self._index_cmd(folder), sample=True)

    def resync(self, folder: Folder) -> Ran:
        return self.runner.run(self._index_cmd(folder))

    def query_cmd(self, folder: Folder) -> list:
        return [MMSEARCH, "query", QUERY, "--store", self.stores[folder.key], "--device", "cpu", "--paths"]

    def query(self, folder: Folder) -> Ran:
        return self.runner.run(self.query_cmd(folder))

    def vectors(self, folder: Folder) -> dict[str, np.ndarray]:
        from mmsearch import Engine

        with Engine.open(self.stores[folder.key], create=False) as eng:
            space = eng.store.spaces()[0]
            ids, _, vecs = eng.store.vectors_under(space.id, str(folder.path), ["image"])
            return {os.path.realpath(eng.file_of(int(i))): v.astype(np.float32) for i, v in zip(ids, vecs)}


def check_indexed(tool: Tool, folder: Folder, ran: Ran) -> None:
    """The index run must have stored every file of the folder."""
    if isinstance(tool, Mmsearch):
        report = json.loads(ran.out[ran.out.index("{"):])
        got = report.get("indexed", 0) + report.get("reused", 0)
        ok = got == folder.n and not report.get("failed")
    else:
        got = len(tool.vectors(folder))
        ok = got == folder.n
    if not ok:
        sys.exit(f"{tool.name} indexed {got} of {folder.n} files in {folder.path}\n{ran.out[-2000:]}{ran.err[-2000:]}")


# ---- measurements --------------------------------------------------------------------------------
def measure(tools: list[Tool], folders: list[Folder], runs: int) -> tuple[dict, dict]:
    """Timings per tool and metric (lists over runs), interleaving the tools; vectors from the first run."""
    t: dict = {tool.name: {} for tool in tools}
    vectors: dict = {}

    def add(tool: Tool, metric: str, value: float) -> None:
        t[tool.name].setdefault(metric, []).append(value)

    small = folders[0]
    for r in range(runs):
        for folder in folders:
            for tool in tools:
                tool.fresh(folder)
                ran = tool.index(folder)
                check_indexed(tool, folder, ran)
                add(tool, f"index_{folder.key}_s", ran.wall_s)
                add(tool, f"peak_{folder.key}_mb", ran.peak_mb)
                print(f"  run {r + 1}: {tool.name:8} index {folder.label}: {ran.wall_s:6.2f} s, "
                      f"peak {ran.peak_mb:,.0f} MB")
                if r == 0:
                    vectors.setdefault(folder.key, {})[tool.name] = tool.vectors(folder)
        for metric, fn in (("resync_s", "resync"), ("query_s", "query")):
            for tool in tools:
                ran = getattr(tool, fn)(small)
                add(tool, metric, ran.wall_s)
                print(f"  run {r + 1}: {tool.name:8} {fn} ({small.label}): {ran.wall_s:6.2f} s")
    return t, vectors


def agreement(vectors: dict) -> dict:
    """Per folder: the minimum cosine between both tools' vectors of the same file."""
    out = {}
    for key, by_tool in vectors.items():
        a, b = by_tool["rclip"], by_tool["mmsearch"]
        common = sorted(set(a) & set(b))
        if not common:
            out[key] = {"matched": 0, "min_cosine": None}
            continue
        x = np.stack([a[p] for p in common])
        y = np.stack([b[p] for p in common])
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        y /= np.linalg.norm(y, axis=1, keepdims=True)
        cos = np.sum(x * y, 1)
        others = (x @ x.T)[~np.eye(len(x), dtype=bool)]  # how alike different images are: the baseline
        out[key] = {"matched": len(common), "min_cosine": float(cos.min()), "median_cosine": float(np.median(cos)),
                    "different_images_median_cosine": float(np.median(others)) if len(others) else None}
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_ready(server: subprocess.Popen, url: str, timeout: float = 120.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end and server.poll() is None:
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                return resp.status == 200
        except OSError:
            time.sleep(0.2)
    return False


def served_query(runner: Runner, mms: Mmsearch, folder: Folder, runs: int) -> dict:
    """`mmsearch query` while `mmsearch serve` runs on the store; n/a unless the query reaches the server."""
    log = DATA / "work" / "serve.log"
    port = free_port()
    cmd = [MMSEARCH, "serve", "--store", mms.stores[folder.key], "--device", "cpu", "--port", port]
    with open(log, "w") as logf:
        server = runner.popen(cmd, stdout=logf, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        if not wait_ready(server, f"http://127.0.0.1:{port}/api/stats"):
            return {"status": "n/a: the server did not start (see serve.log)", "times_s": []}
        mms.query(folder)  # one untimed query: the server's first search loads the model and index
        before = log.read_text().count("HTTP/1.1")
        times = [mms.query(folder).wall_s for _ in range(runs)]
        if log.read_text().count("HTTP/1.1") - before < runs:
            return {"status": "n/a: `mmsearch query` did not use the running server", "times_s": times}
        return {"status": "ok", "times_s": times}
    finally:
        os.killpg(server.pid, signal.SIGINT)
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()


MMSEARCH_ENCODE = r"""
import json, sys, time
import numpy as np
from mmsearch.encoders.registry import load_encoder
enc = load_encoder(sys.argv[1], device="cpu")
x = np.random.default_rng(0).standard_normal((64, 3, 256, 256), dtype=np.float32)
enc.embed_image_batch(x[:8])
times = []
for _ in range(int(sys.argv[2])):
    t0 = time.perf_counter(); enc.embed_image_batch(x); times.append(time.perf_counter() - t0)
import torch
print(json.dumps({"img_s": 64 / min(times), "batch": 64, "encoder": type(enc).__name__,
                  "torch_threads": torch.get_num_threads()}))
"""

RCLIP_ENCODE = r"""
import json, sys, time
import numpy as np
from rclip import model_download
s = model_download.load_visual_query_session()
x = np.random.default_rng(0).standard_normal((8, 3, 256, 256), dtype=np.float32)
s.run(None, {"input": x})
times = []
for _ in range(int(sys.argv[1])):
    t0 = time.perf_counter()
    for _ in range(8):
        s.run(None, {"input": x})
    times.append(time.perf_counter() - t0)
print(json.dumps({"img_s": 64 / min(times), "batch": 8, "intra_op_threads": s.get_session_options().intra_op_num_threads}))
"""


def model_only(runner: Runner, rclip: Rclip, mms: Mmsearch, folder: Folder, reps: int) -> dict:
    """Images/s of each tool's image tower alone on preprocessed batches (best of ``reps``)."""
    ran = runner.run([sys.executable, "-c", MMSEARCH_ENCODE, mms.model, reps])
    m = json.loads(ran.out.strip().splitlines()[-1])
    ran = runner.run([RCLIP_VENV / "bin" / "python", "-c", RCLIP_ENCODE, reps],
                     env={"RCLIP_DATADIR": str(rclip.stores[folder.key])})
    return {"mmsearch": m, "rclip": json.loads(ran.out.strip().splitlines()[-1])}


def warm_up(tools: list[Tool], folder: Folder) -> None:
    """One untimed index + query per tool: mmsearch fills MMSEARCH_CACHE, both get their files cached."""
    for tool in tools:
        tool.fresh(folder)
        check_indexed(tool, folder, tool.index(folder))
        tool.query(folder)


# ---- report --------------------------------------------------------------------------------------
def medians(timings: dict) -> dict:
    return {tool: {k: statistics.median(v) for k, v in by.items()} for tool, by in timings.items()}


def derived(med: dict, folders: list[Folder], enc: dict, served: dict) -> dict:
    """files/s and end-to-end over model-only per tool and folder; the served-query median."""
    d: dict = {}
    for tool in ("rclip", "mmsearch"):
        for f in folders:
            fps = f.n / med[tool][f"index_{f.key}_s"]
            d[f"{tool}_index_{f.key}_files_s"] = fps
            d[f"{tool}_e2e_over_model_{f.key}"] = fps / enc[tool]["img_s"]
    d["served_s"] = statistics.median(served["times_s"]) if served["status"] == "ok" else None
    return d


def table(med: dict, d: dict, folders: list[Folder], enc: dict) -> list[str]:
    r, m = med["rclip"], med["mmsearch"]
    rows = [f"| | rclip {RCLIP_VERSION} | mmsearch | mmsearch / rclip |", "|---|---|---|---|"]
    for f in folders:
        fr, fm = d[f"rclip_index_{f.key}_files_s"], d[f"mmsearch_index_{f.key}_files_s"]
        rows.append(f"| first index, {f.label} | {r[f'index_{f.key}_s']:.2f} s ({fr:.1f} files/s) | "
                    f"{m[f'index_{f.key}_s']:.2f} s ({fm:.1f} files/s) | {fm / fr:.2f}× files/s |")
    for label, key in (("re-sync, nothing changed", "resync_s"), (f'cold query "{QUERY}"', "query_s")):
        rows.append(f"| {label} | {r[key]:.2f} s | {m[key]:.2f} s | {m[key] / r[key]:.2f}× time |")
    served = f"{d['served_s']:.2f} s" if d["served_s"] is not None else "n/a"
    rows.append(f"| served query (`mmsearch serve` running) | — | {served} | — |")
    for f in folders:
        pr, pm = r[f"peak_{f.key}_mb"], m[f"peak_{f.key}_mb"]
        rows.append(f"| peak memory while indexing, {f.label} | {pr:,.0f} MB | {pm:,.0f} MB | {pm / pr:.2f}× |")
    er, em = enc["rclip"]["img_s"], enc["mmsearch"]["img_s"]
    rows.append(f"| model-only encode rate | {er:.1f} img/s (batch 8) | {em:.1f} img/s (batch 64) | {em / er:.2f}× |")
    for f in folders:
        rows.append(f"| end to end / model-only, {f.label} | {d[f'rclip_e2e_over_model_{f.key}']:.0%} | "
                    f"{d[f'mmsearch_e2e_over_model_{f.key}']:.0%} | — |")
    return rows


def targets(med: dict, d: dict, folders: list[Folder], cosines: dict) -> list[tuple[str, bool | None]]:
    r, m = med["rclip"], med["mmsearch"]
    out: list[tuple[str, bool | None]] = []
    for f in folders:
        out.append((f"first index >= 1.5x rclip's files/s, {f.label}",
                    d[f"mmsearch_index_{f.key}_files_s"] >= 1.5 * d[f"rclip_index_{f.key}_files_s"]))
    out += [("re-sync (nothing changed) no slower than rclip", m["resync_s"] <= r["resync_s"]),
            ("cold query no slower than rclip", m["query_s"] <= r["query_s"]),
            ("served query <= 0.3 s", None if d["served_s"] is None else d["served_s"] <= 0.3)]
    for f in folders:
        out.append((f"peak memory <= rclip's, {f.label}", m[f"peak_{f.key}_mb"] <= r[f"peak_{f.key}_mb"]))
        out.append((f"end to end >= 0.9x model-only encode rate, {f.label}",
                    d[f"mmsearch_e2e_over_model_{f.key}"] >= 0.9))
    for f in folders:
        c = cosines[f.key]["min_cosine"]
        out.append((f"same vectors as rclip (min cosine >= 0.999), {f.label}", None if c is None else c >= 0.999))
    return out


def print_report(rows: list[str], checks: list[tuple[str, bool | None]], cosines: dict, folders: list[Folder],
                 served: dict) -> None:
    print("\n" + "\n".join(rows) + "\n")
    for f in folders:
        c = cosines[f.key]
        if c["min_cosine"] is None:
            print(f"vectors, rclip vs mmsearch, {f.label}: no files matched by path")
            continue
        print(f"vectors, rclip vs mmsearch, {f.label}: {c['matched']} files, same-file cosine min "
              f"{c['min_cosine']:.6f}, median {c['median_cosine']:.6f} (different files: median "
              f"{c['different_images_median_cosine']:.3f})")
    if served["status"] != "ok":
        print(f"served query: {served['status']}")
    print()
    for label, ok in checks:
        print(f"{'n/a ' if ok is None else 'PASS' if ok else 'FAIL'}  {label}")


# ---- main ----------------------------------------------------------------------------------------
def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=3, help="runs per measurement (median)")
    ap.add_argument("--quick", action="store_true", help="a trial: 40 small + 8 big JPEGs, 1 run")
    ap.add_argument("--cpus", type=int, default=None, help="pin both tools to the first N CPUs (default: no pinning)")
    ap.add_argument("--rclip-python", default=None, help="Python >= 3.12 for rclip's venv")
    ap.add_argument("--only", choices=["rclip", "mmsearch"], default=None,
                    help="measure one tool only (no comparison, no result file)")
    args = ap.parse_args()
    if args.quick:
        args.runs = 1
    return args


def bench_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MMSEARCH_", "RCLIP_"))}
    env.update(HF_HUB_OFFLINE="1", MMSEARCH_CACHE=str(DATA / "mmsearch-cache"))
    return env


def setup(args: argparse.Namespace, runner: Runner) -> list[Tool]:
    rclip_exe = ensure_rclip(find_python312(args.rclip_python))
    t0 = time.perf_counter()
    rclip_model, local_dir = export_models(DATA / "model")
    print(f"model: seeded random open_clip {ARCH} (seed {SEED}) as rclip ONNX files and a mmsearch local-dir "
          f"({time.perf_counter() - t0:.1f}s)")
    shutil.rmtree(DATA / "work", ignore_errors=True)
    (DATA / "work").mkdir(parents=True)
    tools: list[Tool] = [Rclip("rclip", runner, exe=rclip_exe, model_dir=rclip_model),
                         Mmsearch("mmsearch", runner, model=f"local-dir:{local_dir}")]
    return [t for t in tools if args.only in (None, t.name)]


def main() -> None:
    args = parse_args()
    folders = [Folder("small", "640×480", 40 if args.quick else 300, (640, 480)),
               Folder("big", "12 MP", 8 if args.quick else 60, (4000, 3000))]
    runner = Runner(bench_env(), args.cpus)
    tools = setup(args, runner)
    kb = {f.key: ensure_photos(f) for f in folders}
    warm = Folder("warm", "640×480 (warm-up)", 4, (640, 480))
    ensure_photos(warm)
    print("photos: " + ", ".join(f"{f.label} (avg {kb[f.key]:,.0f} KB)" for f in folders))
    print(f"machine: os.cpu_count() = {os.cpu_count()}, usable CPUs = {len(os.sched_getaffinity(0))}, "
          f"pinned to {args.cpus or 'none'}; runs = {args.runs}; HF_HUB_OFFLINE=1; mmsearch --device cpu")
    print(f"untimed warm-up first: {MMSEARCH_CACHE_NOTE}")
    warm_up(tools, warm)
    timings, vectors = measure(tools, folders, args.runs)
    if len(tools) < 2:
        for metric, value in medians(timings)[tools[0].name].items():
            print(f"{tools[0].name} {metric}: median {value:.2f}")
        return
    report(args, runner, tools, folders, timings, vectors, kb)


MMSEARCH_CACHE_NOTE = ("one index + query per tool on 4 images (mmsearch converts and caches its model in "
                       "MMSEARCH_CACHE=benchmarks/_data/vs-rclip/mmsearch-cache; rclip's model files are "
                       "prepared in its data dir)")


def report(args, runner: Runner, tools: list[Tool], folders: list[Folder], timings: dict, vectors: dict,
           kb: dict) -> None:
    rclip, mms = tools
    served = served_query(runner, mms, folders[0], args.runs)
    enc = model_only(runner, rclip, mms, folders[0], reps=3)
    med, cosines = medians(timings), agreement(vectors)
    d = derived(med, folders, enc, served)
    checks = targets(med, d, folders, cosines)
    print_report(table(med, d, folders, enc), checks, cosines, folders, served)
    path = save("vs-rclip", {
        "rclip": RCLIP_VERSION, "model": f"open_clip {ARCH}, random init, seed {SEED}", "query": QUERY,
        "runs": args.runs, "quick": args.quick, "cpus_pinned": args.cpus,
        "usable_cpus": len(os.sched_getaffinity(0)), "os_cpu_count": os.cpu_count(),
        "folders": {f.key: {"label": f.label, "n": f.n, "size": list(f.size), "avg_kb": round(kb[f.key], 1)}
                    for f in folders},
        "threads": {"rclip_onnx_intra_op": enc["rclip"].get("intra_op_threads"),
                    "rclip_loader_threads": min(16, os.cpu_count() or 1),
                    "mmsearch_torch_threads": enc["mmsearch"].get("torch_threads")},
        "timings": timings, "medians": med, "derived": d, "model_only": enc, "served_query": served,
        "vector_agreement": cosines, "targets": {label: ok for label, ok in checks},
        "notes": ["rclip's index and re-sync runs are `rclip -f QUERY` in the folder (a sync plus one query)",
                  "untimed warm-up first: " + MMSEARCH_CACHE_NOTE],
    })
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
