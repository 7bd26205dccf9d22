"""Crash safety: `mmsearch index` killed with SIGKILL at random points, or stopped with Ctrl-C.

After every kill the database passes SQLite's checks and the store's own, every file the run
reported as committed (``--jsonl`` commit lines) is there with its vector, and searching works.
The run after the last kill redoes no committed work, and the final store equals the store of a
run that was never interrupted.

The kill loop forks its runs from `tests/_forkserver.py` (the CLI imported once), so ten kills take
seconds instead of minutes; the Ctrl-C test runs a plain `python -m mmsearch`.
"""

from __future__ import annotations

import json
import os
import queue
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from mmsearch import Engine
from mmsearch.store.store import Store
from tests.conftest import make_tiny_model, write_images, write_texts

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
KILLS = 10
COMMIT_EVERY = 3
SEED = 20261123
WORDS = ["harbour", "lantern", "granite", "meadow", "violin", "copper", "saffron", "glacier", "orchid", "tundra"]


# ---- the world: data, and the store an uninterrupted run makes ---------------------------------------------
@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("crash")
    spec = "local-dir:" + str(make_tiny_model(root / "model", seed=5))
    data = root / "data"
    imgs = write_images(data / "a", 150, seed=11)
    write_images(data / "b", 100, seed=12, size=(24, 20))
    (data / "c").mkdir()
    for p in imgs[:8]:  # exact duplicates: one vector, several paths
        shutil.copy(p, data / "c" / p.name)
    write_texts(data / "notes", [f"note {i}: {WORDS[i % 10]} {WORDS[(i * 3) % 10]} {i}" for i in range(30)])
    (data / "bad.jpg").write_bytes(b"not an image at all")
    (data / "empty.png").write_bytes(b"")
    os.symlink(data / "nowhere.png", data / "dangling.png")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "MMSEARCH_CONFIG": str(root / "no-config.toml")}
    env.pop("MMSEARCH_STORE", None)
    ref = root / "reference"
    with Engine.open(ref, model=spec, workers=0) as eng:
        report = eng.index([data])
    assert report.failed == 3 and not report.interrupted
    return SimpleNamespace(root=root, spec=spec, data=data, env=env, ref=_state(ref))


def _state(store: Path) -> SimpleNamespace:
    con = sqlite3.connect(store / "mmsearch.sqlite3")
    try:
        sources = dict(con.execute("SELECT s.uri, c.sha256 FROM sources s JOIN contents c ON c.id = s.content_id"))
        errors = {u for (u,) in con.execute("SELECT uri FROM errors")}
        vectors = {
            sha: np.frombuffer(blob, np.float16).astype(np.float32)
            for sha, blob in con.execute("SELECT c.sha256, v.vec FROM vectors v JOIN contents c ON c.id = v.content_id")
        }
    finally:
        con.close()
    return SimpleNamespace(sources=sources, errors=errors, vectors=vectors)


def _index_argv(world, store: Path) -> list[str]:
    return ["index", str(world.data), "--store", str(store), "--model", world.spec, "--workers", "0",
            "--commit-every", str(COMMIT_EVERY), "--jsonl"]


def _lines(path: Path) -> list[dict]:
    """The complete JSON lines a run printed (a kill may cut the last one)."""
    try:
        raw = path.read_text()
    except FileNotFoundError:
        return []
    return [json.loads(x) for x in raw.split("\n")[:-1] if x.strip()]


def _committed(lines: list[dict]) -> tuple[list[str], list[str]]:
    commits = [x for x in lines if x["event"] == "commit"]
    return [p for c in commits for p in c["committed"]], [p for c in commits for p in c["failed"]]


# ---- what must hold after any crash --------------------------------------------------------------------------
def _check_consistent(world, store: Path, committed: list[str], failed: list[str]) -> SimpleNamespace:
    db = store / "mmsearch.sqlite3"
    if not db.exists():  # killed before the store was created
        assert not committed
        return SimpleNamespace(sources={}, errors=set(), vectors={})
    con = sqlite3.connect(db)
    try:
        assert con.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        assert con.execute("PRAGMA foreign_key_check").fetchall() == []
        no_vector = con.execute(
            "SELECT count(*) FROM sources s WHERE NOT EXISTS "
            "(SELECT 1 FROM vectors v JOIN spaces sp ON sp.id = v.space_id WHERE v.content_id = s.content_id)"
        ).fetchone()[0]
        assert no_vector == 0, "a committed file has no vector"
    finally:
        con.close()
    st = Store(store)
    try:
        assert st.integrity_problems() == []
    finally:
        st.close()
    state = _state(store)
    for path in committed:  # reported committed → present, with the right content and its vector
        assert state.sources.get(path) == world.ref.sources[path], path
        np.testing.assert_allclose(state.vectors[state.sources[path]], world.ref.vectors[state.sources[path]], atol=4e-3)
    assert set(failed) <= state.errors
    assert set(state.sources) <= set(world.ref.sources)
    # a reader sees exactly the database's vectors, whatever state the index files were left in
    if state.vectors:
        with Engine.open(store, create=False) as eng:
            q = np.ones(32, np.float32) / np.sqrt(32)
            hits = eng.search(vector=q, type="any", k=10_000)
            assert len(hits) == len(state.vectors)
            assert {p for h in hits for p in h.paths} == set(state.sources)
    return state


# ---- the fork server ---------------------------------------------------------------------------------------------
class ForkServer:
    def __init__(self, env: dict) -> None:
        self.proc = subprocess.Popen([sys.executable, "-m", "tests._forkserver"], cwd=REPO, env=env, text=True,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        self.replies: queue.Queue = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.replies.put(json.loads(line))
        self.replies.put(None)

    def start(self, argv: list[str], out: Path, err: Path) -> int:
        self.proc.stdin.write(json.dumps({"argv": argv, "stdout": str(out), "stderr": str(err)}) + "\n")
        self.proc.stdin.flush()
        msg = self.replies.get(timeout=180)  # the first request waits for the server's imports
        assert msg is not None, "fork server died"
        return msg["pid"]

    def poll(self) -> int | None:
        try:
            msg = self.replies.get_nowait()
        except queue.Empty:
            return None
        assert msg is not None, "fork server died"
        return msg["returncode"]

    def wait(self, timeout: float = 120) -> int:
        msg = self.replies.get(timeout=timeout)
        assert msg is not None, "fork server died"
        return msg["returncode"]

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=30)


def _run_and_kill(server: ForkServer, argv: list[str], out: Path, err: Path, after: int | None, delay: float) -> int:
    """Start a run; SIGKILL it ``delay`` s after its ``after``-th commit line. Returns its exit status."""
    pid = server.start(argv, out, err)
    if after is None:
        return server.wait()
    deadline = time.monotonic() + 120
    while sum(1 for x in _lines(out) if x["event"] == "commit") < after:
        rc = server.poll()
        if rc is not None:
            return rc  # finished before the kill point
        assert time.monotonic() < deadline, "index run made no progress"
        time.sleep(0.002)
    time.sleep(delay)
    rc = server.poll()
    if rc is not None:
        return rc
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:  # it ended in this very instant
        pass
    return server.wait()


@pytest.mark.skipif(not hasattr(os, "fork"), reason="the fork server needs os.fork")
def test_sigkill_at_random_points_never_loses_or_corrupts_committed_work(world, tmp_path):
    rng = np.random.default_rng(SEED)
    store = tmp_path / "store"
    server = ForkServer(world.env)
    kills, runs, fresh_starts = 0, 0, 0
    try:
        while kills < KILLS:
            runs += 1
            assert runs <= KILLS + 6, "too many runs finished before their kill point"
            out, err = tmp_path / f"run{runs}.out", tmp_path / f"run{runs}.err"
            after, delay = int(rng.integers(1, 5)), float(rng.uniform(0, 0.04))
            rc = _run_and_kill(server, _index_argv(world, store), out, err, after, delay)
            lines = _lines(out)
            committed, failed = _committed(lines)
            if rc == -signal.SIGKILL:
                kills += 1
            else:  # it finished first: a complete, correct run (exit 1: the three bad files)
                assert rc == 1, err.read_text()
                assert lines[-1]["event"] == "report"
            _check_consistent(world, store, committed, failed)
            if rc != -signal.SIGKILL:  # nothing left to interrupt: start over on an empty store
                shutil.rmtree(store)
                fresh_starts += 1

        # The next run finishes, redoing none of the committed work.
        before = _check_consistent(world, store, [], [])
        out, err = tmp_path / "final.out", tmp_path / "final.err"
        rc = _run_and_kill(server, _index_argv(world, store), out, err, None, 0)
    finally:
        server.close()
    assert rc == 1, err.read_text()
    report = _lines(out)[-1]
    assert report["event"] == "report" and report["failed"] == 3
    assert report["indexed"] == len(world.ref.vectors) - len(before.vectors)
    final = _check_consistent(world, store, *_committed(_lines(out)))
    assert final.sources == world.ref.sources
    assert final.errors == world.ref.errors
    assert final.vectors.keys() == world.ref.vectors.keys()
    for sha, vec in world.ref.vectors.items():
        np.testing.assert_allclose(final.vectors[sha], vec, atol=4e-3)
    with Engine.open(store, create=False) as eng:
        assert eng.doctor(repair=False).ok
    assert fresh_starts <= 2


def test_ctrl_c_exits_130_with_a_summary_and_the_next_run_resumes(world, tmp_path):
    store = tmp_path / "store"
    # A job started in the background by a non-interactive shell (as CI runners may do) inherits SIGINT
    # *ignored*, and Python then never raises KeyboardInterrupt: give the child the default, as a terminal would.
    proc = subprocess.Popen([sys.executable, "-m", "mmsearch", *_index_argv(world, store)], cwd=REPO, env=world.env,
                            text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    seen = 0
    for line in proc.stdout:  # wait until two batches are committed, then press Ctrl-C
        if json.loads(line)["event"] == "commit":
            seen += 1
            if seen == 2:
                proc.send_signal(signal.SIGINT)
                break
    rest, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr
    m = re.search(r"interrupted.*indexed (\d+), reused (\d+), unchanged (\d+)", stderr)
    assert m, stderr
    assert "run the same command to resume" in stderr
    state = _check_consistent(world, store, [], [])
    indexed_before = int(m.group(1))
    assert indexed_before == len(state.vectors) > 0  # the summary counts exactly what was kept

    with Engine.open(store, model=world.spec, workers=0) as eng:
        report = eng.index([world.data])
    assert report.indexed + indexed_before == len(world.ref.vectors)
    final = _state(store)
    assert final.sources == world.ref.sources and final.errors == world.ref.errors
