"""`mmsearch watch` and Engine.watch: changes picked up in debounced batches through the sync path of
`index` (a move costs no model call), bursts coalesced, a root that goes away keeps its entries,
SIGTERM stops `watch` (and `index`) cleanly with a summary, `serve --watch` serves what it picks up.

Every wait polls the store (or the process output) with a generous deadline: nothing here sleeps
and hopes, and a loaded machine only makes it slower.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from mmsearch import Engine
from tests.kit import all_hits, stop_process, write_images

REPO = Path(__file__).resolve().parents[1]
DEADLINE = 120.0  # seconds any single wait may take on a slow, loaded machine
FAST = dict(debounce_ms=300, step_ms=50, poll_seconds=0.2)


def wait_for(cond, what: str, timeout: float = DEADLINE):
    """Poll ``cond()`` until it is truthy (and return it); fail naming ``what`` after ``timeout``."""
    end = time.monotonic() + timeout
    while True:
        got = cond()
        if got:
            return got
        assert time.monotonic() < end, f"timed out waiting for {what}"
        time.sleep(0.05)


def put_image(path: Path, seed: int) -> Path:
    """An image written under a hidden name, then renamed into place (as a downloader or copier does)."""
    tmp = write_images(path.parent / ".incoming", 1, seed=seed)[0]
    os.replace(tmp, path)
    return path


class Watching:
    """Engine.watch running in a thread on its own engine; the test reads the store through another."""

    def __init__(self, store: Path, model: str, paths: list[Path], **kw) -> None:
        self.store, self.events, self.stop = store, [], threading.Event()
        self.engine = Engine.open(store, model=model, workers=0)
        self.result: dict = {}
        self.thread = threading.Thread(target=self._run, args=(paths, {**FAST, **kw}), daemon=True)
        self.thread.start()
        wait_for(lambda: self.kinds("start") or "error" in self.result, "the initial sync")
        assert "error" not in self.result, self.result

    def _run(self, paths, kw) -> None:
        try:
            self.result["report"] = self.engine.watch(paths, on_sync=self.events.append, stop_event=self.stop, **kw)
        except BaseException as exc:  # pragma: no cover - shown by the test that waits
            self.result["error"] = exc

    def kinds(self, kind: str) -> list:
        return [e for e in list(self.events) if e.kind == kind]

    def paths(self) -> set[str]:
        with Engine.open(self.store, create=False) as eng:
            return {p for h in all_hits(eng) for p in h.paths}

    def settle(self, expected: set[str], what: str) -> None:
        wait_for(lambda: self.paths() == {str(p) for p in expected}, what)

    def finish(self):
        self.stop.set()
        self.thread.join(DEADLINE)
        assert not self.thread.is_alive(), "the watch did not stop"
        self.engine.close()
        assert "error" not in self.result, self.result
        return self.result["report"]


@pytest.fixture
def watching(tmp_path, tiny_model, counting):
    """Start a watch of ``folder`` (images already there are synced at the start); stopped at teardown."""
    started: list[Watching] = []

    def start(folder: Path, **kw) -> Watching:
        w = Watching(tmp_path / "store", counting.spec(tiny_model), [folder], **kw)
        started.append(w)
        return w

    yield start
    for w in started:
        if w.thread.is_alive():
            w.finish()


def test_new_changed_moved_and_deleted_files_are_picked_up(watching, counting, tmp_path):
    data = tmp_path / "data"
    imgs = write_images(data, 3)
    w = watching(data)
    assert w.kinds("start")[0].indexed == 3
    files = set(imgs)

    new = put_image(data / "new.png", seed=7)
    files.add(new)
    w.settle(files, "a new file")
    before = counting.items

    put_image(imgs[0], seed=8)  # changed content, same path
    wait_for(lambda: counting.items > before, "the changed file to be embedded")
    w.settle(files, "the changed file")
    embedded = counting.items

    moved = data / "sub" / "moved.png"
    moved.parent.mkdir()
    os.rename(imgs[1], moved)
    files = (files - {imgs[1]}) | {moved}
    w.settle(files, "a moved file")
    assert counting.items == embedded, "a move reached the model"

    imgs[2].unlink()
    files.discard(imgs[2])
    w.settle(files, "a deleted file")

    report = w.finish()
    assert (report.added, report.changed, report.moved, report.removed, report.failed) == (1, 1, 1, 1, 0)
    assert report.full.indexed == 3 and not report.interrupted
    assert counting.items == embedded  # nothing else was embedded


def test_a_burst_of_files_lands_in_a_few_syncs(watching, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    staged = write_images(tmp_path / "staging", 300, seed=100)
    w = watching(data, step_ms=200)  # a loaded machine may pause the copy for a moment: not the end of a batch
    files = []
    for p in staged:  # 300 files arrive within moments
        files.append(data / p.name)
        os.rename(p, files[-1])
    w.settle(set(files), "300 files copied in")
    # a sync is told once it is durable and the indexes are caught up: a moment after the store shows it
    wait_for(lambda: sum(e.added for e in w.kinds("changes")) >= 300, "the syncs to be told")
    syncs = w.kinds("changes")
    assert sum(e.added for e in syncs) == 300, [(e.kind, e.paths, e.added, e.moved, e.changed, e.notice)
                                                 for e in w.events]
    assert len(syncs) <= 8, [e.paths for e in syncs]  # a batch per quiet moment, not a sync per file
    report = w.finish()
    assert report.added == 300 and report.syncs == len(syncs)


def test_a_folder_copied_in_at_once_is_walked(watching, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    w = watching(data)
    outside = write_images(tmp_path / "elsewhere" / "trip", 5, seed=3)
    shutil.copytree(outside[0].parent, data / ".copying")
    os.rename(data / ".copying", data / "trip")  # a folder arrives with its files already in it
    w.settle({data / "trip" / p.name for p in outside}, "the files of a folder moved in")


def test_a_watched_folder_that_vanishes_keeps_its_entries_and_is_synced_when_back(watching, counting, tmp_path):
    data = tmp_path / "data"
    imgs = write_images(data, 4)
    w = watching(data)
    away = tmp_path / "unplugged"
    os.rename(data, away)  # the folder goes (as a disk's mount point does when it is unplugged)
    wait_for(lambda: w.kinds("vanished"), "the folder to be noticed gone")
    assert w.paths() == {str(p) for p in imgs}  # nothing was removed
    (away / imgs[3].name).unlink()  # changed while away: seen when it is back
    put_image(away / "while_away.png", seed=21)
    os.rename(away, data)
    wait_for(lambda: w.kinds("returned"), "the folder to be noticed back")
    w.settle(set(imgs[:3]) | {data / "while_away.png"}, "the returned folder's changes")
    report = w.finish()
    assert report.returned == 1 and report.vanished == [] and report.full.removed == 1


def test_changes_wait_while_another_writer_holds_the_store(watching, tmp_path):
    from mmsearch.store.store import Store

    data = tmp_path / "data"
    imgs = write_images(data, 2)
    w = watching(data)
    other = Store(tmp_path / "store")
    try:
        with other.writer_lock("a test writing"):  # as an `mmsearch index` on the same store would
            new = put_image(data / "new.png", seed=4)
            wait = wait_for(lambda: w.kinds("waiting"), "the watcher to find the store locked")
            assert "a test writing" in wait[0].notice
            assert str(new) not in w.paths()
    finally:
        other.close()
    w.settle(set(imgs) | {new}, "the change once the other writer is done")
    assert w.finish().added == 1


def test_a_watched_file_is_followed(watching, tmp_path):
    data = tmp_path / "data"
    img = write_images(data, 1)[0]
    w = watching(img)
    put_image(img, seed=12)  # changed in place
    wait_for(lambda: any(e.changed for e in w.kinds("changes")), "the watched file's change")
    assert w.paths() == {str(img)}


def test_without_watchfiles_watch_says_which_extra_to_install(engine_factory, tmp_path, monkeypatch):
    from mmsearch.errors import UsageError

    monkeypatch.setitem(sys.modules, "watchfiles", None)  # as if it were not installed
    write_images(tmp_path / "data", 1)
    eng = engine_factory()
    with pytest.raises(UsageError, match=r"mmsearch\[watch\]"):
        eng.watch([tmp_path / "data"], stop_event=threading.Event())
    assert eng.stats().items == {}  # nothing was synced first


def test_watching_a_missing_folder_is_a_usage_error(engine_factory, tmp_path):
    from mmsearch.errors import UsageError

    with pytest.raises(UsageError, match="no such file"):
        engine_factory().watch([tmp_path / "nowhere"], stop_event=threading.Event())


# ---- the commands, in processes of their own ---------------------------------------------------------------
def _start(args: list[str], **kw) -> subprocess.Popen:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    return subprocess.Popen([sys.executable, "-m", "mmsearch", *args], cwd=REPO, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kw)


def _sigterm(proc: subprocess.Popen) -> tuple[str, str]:
    """SIGTERM to a running `mmsearch`: (stdout, stderr) once it has exited, which held no traceback."""
    proc.send_signal(signal.SIGTERM)
    out, errs = proc.communicate(timeout=DEADLINE)
    assert "Traceback" not in errs, errs
    return out, errs


def _lines_until(stream, cond, what: str) -> list[str]:
    """Lines of ``stream`` read until one satisfies ``cond`` (a reader thread keeps the deadline)."""
    got: list[str] = []
    done, matched = threading.Event(), threading.Event()

    def read() -> None:
        for line in stream:
            got.append(line)
            if cond(line):
                matched.set()
                break
        done.set()

    threading.Thread(target=read, daemon=True).start()
    assert done.wait(DEADLINE), f"timed out waiting for {what}: {got}"
    assert matched.is_set(), f"{what} never came: {got}"
    return got


@pytest.mark.parametrize("fmt", ["jsonl", "table"])
def test_sigterm_stops_watch_with_a_summary_and_exit_0(tmp_path, tiny_model, fmt):
    data = tmp_path / "data"
    write_images(data, 2)
    args = ["watch", str(data), "--store", str(tmp_path / "store"), "--model", tiny_model, "--workers", "0",
            "--debounce", "200"] + (["--jsonl"] if fmt == "jsonl" else [])
    proc = _start(args)
    try:
        if fmt == "jsonl":
            _lines_until(proc.stdout, lambda ln: '"kind": "start"' in ln, "the start sync")
            put_image(data / "new.png", seed=5)
            _lines_until(proc.stdout, lambda ln: '"kind": "changes"' in ln, "the new file's sync")
        else:
            _lines_until(proc.stderr, lambda ln: ln.startswith("watching "), "the start line")
        out, errs = _sigterm(proc)
    finally:
        stop_process(proc)
    assert proc.returncode == 0, errs
    if fmt == "jsonl":
        report = json.loads(out.strip().splitlines()[-1])
        assert report["event"] == "report" and report["added"] == 1 and report["full"]["indexed"] == 2
    else:
        assert re.search(r"watched 1 folder for [\d.]+s: added 0, changed 0, moved 0, removed 0, failed 0 in 0 syncs;"
                         r" full syncs \(start\): indexed 2", out), out


def test_sigterm_stops_index_with_a_summary_keeps_committed_work_and_exits_143(tmp_path, tiny_model):
    data = tmp_path / "data"
    write_images(data, 60)
    store = tmp_path / "store"
    proc = _start(["index", str(data), "--store", str(store), "--model", tiny_model, "--workers", "0",
                   "--commit-every", "3", "--batch-size", "3", "--jsonl"])
    try:
        commits = 0

        def second_commit(line: str) -> bool:
            nonlocal commits
            commits += json.loads(line)["event"] == "commit"
            return commits == 2

        _lines_until(proc.stdout, second_commit, "two committed batches")
        _, errs = _sigterm(proc)
    finally:
        stop_process(proc)
    assert proc.returncode == 143, errs
    m = re.search(r"interrupted.*indexed (\d+), reused (\d+)", errs)
    assert m and "stopped by SIGTERM: work committed so far is kept" in errs, errs
    with Engine.open(store, create=False) as eng:
        kept = eng.stats().items.get("image", 0)
    assert kept == int(m.group(1)) + int(m.group(2)) and 6 <= kept < 60  # the summary counts what was kept


def test_serve_watch_serves_a_new_file(tmp_path, tiny_model):
    data = tmp_path / "data"
    write_images(data, 2)
    proc = _start(["serve", "--store", str(tmp_path / "store"), "--model", tiny_model, "--port", "0",
                   "--watch", str(data)])
    try:
        lines = _lines_until(proc.stderr, lambda ln: ln.startswith("serving "), "the server to listen")
        url = re.search(r"on (http://\S+?)/?\s", lines[-1]).group(1)

        def served() -> set[str]:
            try:
                with urllib.request.urlopen(f"{url}/api/search?q=anything&k=100&type=image", timeout=10) as r:
                    return {p for h in json.load(r) for p in h["paths"]}
            except OSError:  # the store has no model yet (the initial sync is running): asked again
                return set()

        wait_for(lambda: len(served()) == 2, "the initial sync to be served")
        new = put_image(data / "new.png", seed=11)
        wait_for(lambda: str(new) in served(), "the new file to be served")
        _, errs = _sigterm(proc)
    finally:
        stop_process(proc)
    assert proc.returncode == 0, errs
    assert re.search(r"watched 1 folder for [\d.]+s: added 1,", errs), errs


def test_an_unmounted_disk_keeps_its_entries_and_is_synced_when_mounted_again(watching, tmp_path):
    """A real unplug: the mount point stays, empty; only its being a mount point again says the disk is back."""
    disk = tmp_path / "disk"
    disk.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "none", str(disk)], capture_output=True).returncode:
        pytest.skip("mounting a tmpfs needs root and the permission to mount")
    try:
        imgs = write_images(disk / "photos", 3)
        w = watching(disk)
        subprocess.run(["umount", str(disk)], check=True)
        wait_for(lambda: w.kinds("vanished"), "the unmounted disk to be noticed gone")
        assert w.paths() == {str(p) for p in imgs}  # an empty mount point removed nothing
        subprocess.run(["mount", "-t", "tmpfs", "none", str(disk)], check=True)
        write_images(disk / "photos", 2)  # the disk back, with 2 of its 3 photos
        wait_for(lambda: w.kinds("returned"), "the disk to be noticed back")
        w.settle(set(imgs[:2]), "the disk's resync")
        assert w.finish().returned == 1
    finally:
        subprocess.run(["umount", str(disk)], capture_output=True)


def test_a_folder_named_like_a_file_is_dropped_with_everything_in_it(watching, tmp_path):
    data = tmp_path / "data"
    keep = write_images(data, 1)
    inside = write_images(data / "shoot.raw", 2, seed=5)  # a folder, though its name says camera raw
    w = watching(data)
    w.settle(set(keep + inside), "the initial sync")
    shutil.rmtree(data / "shoot.raw")
    w.settle(set(keep), "the folder's files to be dropped")
    assert w.finish().removed == 2


class _FailsOnce:
    """A source-side encoder whose first image batch fails as a driver error does (not an mmsearch error)."""

    def __init__(self, inner) -> None:
        self.inner, self.space, self.failed = inner, inner.space, False

    def image_recipe(self):
        return self.inner.image_recipe()

    def embed_image_batch(self, pixels):
        if not self.failed:
            self.failed = True
            raise RuntimeError("the device fell off the bus")
        return self.inner.embed_image_batch(pixels)

    def embed_texts(self, texts):
        return self.inner.embed_texts(texts)

    def embed_images(self, images):
        return self.inner.embed_images(images)


def test_a_sync_that_fails_keeps_its_changes_and_tries_them_again(tmp_path, tiny_model):
    from mmsearch.encoders.registry import load_encoder, registered

    data = tmp_path / "data"
    data.mkdir()
    with registered("fails-once", lambda spec, rest, **kw: _FailsOnce(load_encoder(rest, **kw))):
        w = Watching(tmp_path / "store", f"fails-once:{tiny_model}", [data])
        new = put_image(data / "new.png", seed=3)
        w.settle({new}, "the file whose first sync failed")
        report = w.finish()
    assert report.added == 1 and report.failed == 0
    assert [n for n in report.notices if "a sync failed (RuntimeError: the device fell off the bus)" in n]
    assert not [n for n in report.notices if "polling" in n]  # a failed sync is not a failed watch


def test_a_disk_mounted_on_the_empty_folder_a_watch_began_on_is_synced(watching, tmp_path, tiny_model):
    """The watch starts while the disk is away (its mount point empty): nothing is removed, and the disk
    mounted later (no event tells) is noticed and synced."""
    disk = tmp_path / "disk"
    disk.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "none", str(disk)], capture_output=True).returncode:
        pytest.skip("mounting a tmpfs needs root and the permission to mount")
    try:
        imgs = write_images(disk / "photos", 3)
        with Engine.open(tmp_path / "store", model=tiny_model, workers=0) as eng:
            assert eng.index([disk]).indexed == 3
        subprocess.run(["umount", str(disk)], check=True)
        w = watching(disk)
        assert w.paths() == {str(p) for p in imgs}  # the start sync of an empty mount point removed nothing
        subprocess.run(["mount", "-t", "tmpfs", "none", str(disk)], check=True)
        back = write_images(disk / "photos", 4)  # the disk back, with one more photo
        wait_for(lambda: w.kinds("returned"), "the mounted disk to be noticed")
        w.settle(set(back), "the disk's sync")
        report = w.finish()
        assert report.returned == 1 and [n for n in report.notices if f"{disk} is empty now" in n], report.notices
    finally:
        subprocess.run(["umount", str(disk)], capture_output=True)


def test_when_a_root_goes_the_others_are_synced_again_over_the_restart(tmp_path, tiny_model):
    """The watch restarts over the roots present: the others get a full sync, so a change made to them
    while no watch was set up is not lost."""
    a, b = tmp_path / "a", tmp_path / "b"
    imgs = write_images(a, 1) + write_images(b, 1, seed=4)
    w = Watching(tmp_path / "store", tiny_model, [a, b])
    w.settle(set(imgs), "the initial sync")
    os.rename(b, tmp_path / "b-away")
    wait_for(lambda: w.kinds("vanished"), "the folder that went")
    wait_for(lambda: w.kinds("resync"), "the other folder synced again")
    assert [e.roots for e in w.kinds("resync")][0] == (str(a),)
    new = put_image(a / "new.png", seed=9)
    w.settle(set(imgs) | {new}, "a change in the folder that stayed")
    assert w.finish().vanished == [str(b)]
