"""`mmsearch query` on a served store: the running server answers, and prints what in-process prints.

A real uvicorn server runs in a thread of the test process (``make_server(port=0)``); the queries
go through the CLI (typer's runner, and ``mmsearch.cli.main`` in a subprocess for the light path).
Which side answered is told by the server engine's searches (``served.calls``).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("multipart")
pytest.importorskip("uvicorn")

import mmsearch  # noqa: E402
from mmsearch.server import make_server  # noqa: E402
from tests.kit import cli, stop_process  # noqa: E402

HEAVY = ("numpy", "torch", "sqlalchemy", "faiss", "open_clip")
SERVER_FILE = "server.json"


class Served:
    """A server running on ``store`` in a thread; ``calls``: the searches its engine made."""

    def __init__(self, store: Path, monkeypatch, **kw) -> None:
        self.store = store
        self.calls: list[dict] = []
        self.server = make_server(store, host="127.0.0.1", port=0, log_level="warning", **kw)
        engine = self.server.app.state.engine
        search = engine.search

        def counted(*args, **kw):
            self.calls.append(kw)
            return search(*args, **kw)

        monkeypatch.setattr(engine, "search", counted)
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 30
        while not (self.server.started and self.file.exists()):
            assert self.thread.is_alive() and time.monotonic() < deadline, "server did not start"
            time.sleep(0.02)

    @property
    def file(self) -> Path:
        return self.store / SERVER_FILE

    def info(self) -> dict:
        return json.loads(self.file.read_text())

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(30)
        assert not self.thread.is_alive()


@pytest.fixture
def served(indexed, monkeypatch):
    s = Served(indexed.store, monkeypatch)
    yield s
    s.stop()


def _both(store: Path, *args) -> tuple:
    """(served result, in-process result) of one `mmsearch query ARGS`."""
    return cli("query", *args, "--store", store), cli("query", *args, "--store", store, "--no-server")


def _same_hits(got: list[dict], want: list[dict]) -> None:
    assert want  # two empty lists prove nothing
    assert [(g["id"], g["path"], g["rank"], g["modality"]) for g in got] == \
           [(w["id"], w["path"], w["rank"], w["modality"]) for w in want]
    assert all(abs(g["score"] - w["score"]) < 1e-5 for g, w in zip(got, want))
    assert [{**g, "score": 0} for g in got] == [{**w, "score": 0} for w in want]


QUERIES = {
    "text-texts": ("hello there", "--type", "text", "-k", "3"),
    "text-images": ("a picture", "-k", "4"),
    "text-any": ("kenobi", "--type", "any", "-k", "20"),
    "nprobe": ("kenobi", "--nprobe", "4", "--ef-search", "16", "-k", "2"),
    "image-images": ("--image", "{img2}", "-k", "3"),
    "image-texts": ("--image", "{img0}", "--type", "text", "-k", "2"),
    "under": ("x", "--type", "any", "-k", "50", "--under", "{notes}"),
    "model": ("a picture", "--model", "{model}", "-k", "2"),
    "where": ("a picture", "-k", "4", "--where", "width>=40", "--where", "size<1MB", "--type", "image"),
    "since-until": ("a picture", "-k", "4", "--since", "2000-01-01", "--until", "2999"),
    "path": ("a picture", "-k", "4", "--path", "{img_glob}"),
    "where-texts": ("kenobi", "--type", "any", "-k", "20", "--where", "!width"),
    "collapse": ("a picture", "-k", "3", "--collapse-dups"),
    "combined": ("a picture + kenobi - hello", "--type", "any", "-k", "5"),
    "texts": ("a picture", "--text", "kenobi", "--type", "any", "-k", "5"),
    "text-image": ("--image", "{img2}", "--text", "a picture", "-k", "3"),
    "min-score": ("a picture", "--min-score", "-5", "-k", "3"),
}


def _args(name: str, indexed, tiny_model) -> list[str]:
    fill = {"img0": indexed.images[0], "img2": indexed.images[2], "notes": indexed.text_dir, "model": tiny_model,
            "img_glob": f"{indexed.image_dir}/*[024].png"}
    return [a.format(**fill) for a in QUERIES[name]]


@pytest.mark.parametrize("name", QUERIES)
def test_served_query_prints_what_in_process_prints(served, indexed, tiny_model, name):
    args = _args(name, indexed, tiny_model)
    got, want = _both(served.store, *args, "--json")
    assert got.exit_code == want.exit_code == 0, got.output + want.output
    assert len(served.calls) == 1  # the server answered the first, not the --no-server one
    _same_hits(json.loads(got.stdout), json.loads(want.stdout))
    for fmt in ((), ("--jsonl",), ("--paths",)):
        got, want = _both(served.store, *args, *fmt)
        if fmt == ("--jsonl",):
            _same_hits([json.loads(x) for x in got.stdout.splitlines()], [json.loads(x) for x in want.stdout.splitlines()])
        else:
            assert got.stdout == want.stdout and got.stdout.strip()
    assert len(served.calls) == 4


def test_a_relative_under_is_this_process_folder(served, indexed, monkeypatch):
    monkeypatch.chdir(indexed.data)
    got, want = _both(served.store, "x", "--type", "any", "-k", "50", "--under", "notes", "--json")
    assert len(served.calls) == 1 and sorted(h["text"] for h in json.loads(got.stdout)) == sorted(indexed.corpus.texts)
    _same_hits(json.loads(got.stdout), json.loads(want.stdout))


def test_a_relative_path_glob_is_this_process_folder(served, indexed, monkeypatch):
    monkeypatch.chdir(indexed.data)
    got, want = _both(served.store, "a picture", "-k", "10", "--path", "img/*[13].png", "--json")
    assert len(served.calls) == 1 and served.calls[0]["path"] == f"{indexed.image_dir}/*[13].png"
    hits = json.loads(got.stdout)
    _same_hits(hits, json.loads(want.stdout))
    assert len(hits) == 2


@pytest.mark.parametrize("args", [("--like", "{img0}"), ("--unlike", "{img0}", "x"), ("--image", "{img0}", "--image", "{img2}")],
                         ids=["like", "unlike", "two-images"])
def test_examples_and_several_images_search_in_process(served, indexed, args):
    args = [a.format(img0=indexed.images[0], img2=indexed.images[2]) for a in args]
    got, want = _both(served.store, *args, "--json")
    assert got.exit_code == want.exit_code == 0, got.output
    assert served.calls == [] and got.stdout == want.stdout


@pytest.mark.parametrize("args", [
    ("x", "--type", "movie"),
    ("   ",),
    ("--image", "{bad}"),
    ("x", "--model", "local-dir:/no/such/model"),
    ("x", "--where", "widht>=3"),
    ("x", "--since", "yesterday"),
    ("dog + + cat",),
    ("x", "--path", " "),
], ids=["bad-type", "empty-text", "not-an-image", "unknown-model", "bad-where", "bad-since", "bad-query", "blank-path"])
def test_server_errors_print_as_in_process_errors(served, indexed, tmp_path, args):
    bad = tmp_path / "bad [x].png"
    bad.write_bytes(b"not an image")
    args = [a.format(bad=bad) for a in args]
    got, want = _both(served.store, *args)
    assert served.calls  # the server was asked
    assert want.exit_code in (2, 4) and got.exit_code == want.exit_code
    assert got.output == want.output and "error:" in got.output and "Traceback" not in got.output


def test_a_server_pinned_to_a_model_answers_only_that_models_queries(indexed, tiny_model, monkeypatch):
    s = Served(indexed.store, monkeypatch, model=tiny_model)
    try:
        assert s.info()["model"] == tiny_model
        got, want = _both(s.store, "kenobi", "--type", "any", "--json")  # every space: not what the server reads
        assert s.calls == [] and got.stdout == want.stdout
        got, want = _both(s.store, "kenobi", "--type", "any", "--json", "--model", tiny_model)
        assert len(s.calls) == 1 and s.calls[0]["space"] is None
        _same_hits(json.loads(got.stdout), json.loads(want.stdout))
    finally:
        s.stop()


def test_no_server_never_contacts_the_server(served, indexed, monkeypatch):
    assert cli("query", "hello there", "--store", served.store, "--no-server").exit_code == 0
    monkeypatch.setenv("MMSEARCH_NO_SERVER", "1")
    assert cli("query", "hello there", "--store", served.store).exit_code == 0
    assert served.calls == []
    monkeypatch.setenv("MMSEARCH_NO_SERVER", "0")
    assert cli("query", "hello there", "--store", served.store).exit_code == 0
    assert len(served.calls) == 1


def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _write(path: Path, info: dict, mode: int = 0o600) -> None:
    path.write_text(json.dumps(info))
    os.chmod(path, mode)


@pytest.mark.parametrize("stale", ["dead-pid", "nothing-listening", "wrong-token", "world-readable", "other-store",
                                   "garbage", "other-protocol", "protocol-1", "other-device"])
def test_a_stale_or_foreign_server_file_falls_back_to_in_process(served, stale):
    info = served.info()
    mode = 0o600
    if stale == "dead-pid":
        info["pid"] = _dead_pid()  # the url and token still reach the live server: it must not be asked
    elif stale == "nothing-listening":
        info["url"] = f"http://127.0.0.1:{_free_port()}"  # pid alive (this process)
    elif stale == "wrong-token":
        info["token"] = "not-the-token"
    elif stale == "world-readable":
        mode = 0o644
    elif stale == "other-store":
        info["store"] = str(served.store.parent / "elsewhere")  # a copied store folder
    elif stale == "other-device":
        info["device"] = "cuda:7"  # a query embedded elsewhere may score differently
    elif stale == "other-protocol":
        info["protocol"] = info["protocol"] + 1
    elif stale == "protocol-1":
        info["protocol"] = 1
    if stale == "garbage":
        served.file.write_text("{not json")
    else:
        _write(served.file, info, mode)
    start = time.monotonic()
    got, want = _both(served.store, "general kenobi", "--type", "any", "--json")
    assert got.exit_code == want.exit_code == 0, got.output
    _same_hits(json.loads(got.stdout), json.loads(want.stdout))
    assert time.monotonic() - start < 60
    assert served.calls == []  # (a wrong token is refused before any search)


@pytest.mark.parametrize("args, asked", [
    (("general kenobi", "--type", "any"), True),  # what protocol 2 carried: sent
    (("general kenobi", "--type", "any", "--where", "!width"), False),  # a protocol-2 server would drop it
    (("general", "--text", "kenobi", "--type", "any"), False),
    (("general kenobi", "--type", "any", "--collapse-dups"), False),
], ids=["plain", "where", "two-texts", "collapse"])
def test_a_protocol_2_server_is_asked_only_what_protocol_2_carried(served, args, asked):
    _write(served.file, {**served.info(), "protocol": 2})
    got, want = _both(served.store, *args, "--json")
    assert got.exit_code == want.exit_code == 0, got.output
    _same_hits(json.loads(got.stdout), json.loads(want.stdout))
    assert len(served.calls) == int(asked)


def test_server_file_is_private_and_removed_on_shutdown(indexed, monkeypatch):
    s = Served(indexed.store, monkeypatch)
    try:
        assert s.file.stat().st_mode & 0o777 == 0o600
        info = s.info()
        assert info["pid"] == os.getpid() and info["store"] == str(indexed.store)
        assert info["url"].startswith("http://127.0.0.1:") and len(info["token"]) >= 32
        assert {"started_at", "version", "protocol"} <= set(info) and info["version"] == mmsearch.__version__
        assert not list(indexed.store.glob(".*.tmp"))
    finally:
        s.stop()
    assert not s.file.exists()


def test_a_server_leaves_a_newer_servers_file_alone(indexed, monkeypatch):
    s = Served(indexed.store, monkeypatch)
    newer = {**s.info(), "pid": os.getpid(), "token": "a-second-server"}
    _write(s.file, newer)
    s.stop()
    assert json.loads(s.file.read_text()) == newer


def _run_main(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    """`mmsearch ARGS` through mmsearch.cli.main in a fresh interpreter; stderr ends with the heavy modules loaded."""
    code = ("import sys, atexit\n"
            f"atexit.register(lambda: print('HEAVY', sorted(m for m in {HEAVY!r} if m in sys.modules), file=sys.stderr))\n"
            f"sys.argv = ['mmsearch', *{list(args)!r}]\n"
            "from mmsearch.cli import main\nmain()\n")
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                          env={**os.environ, **(env or {})})


def test_the_served_query_process_imports_nothing_heavy(served, indexed):
    store = str(served.store)
    for args in (("hello there", "--type", "text", "-k", "2", "--json"),
                 ("--image", str(indexed.images[2]), "-k", "3", "--json"),
                 ("a picture + kenobi", "--where", "width>=40", "--since", "2000", "--collapse-dups", "--json")):
        r = _run_main("query", *args, "--store", store)
        assert r.returncode == 0, r.stderr
        assert r.stderr.strip().splitlines()[-1] == "HEAVY []"
        _same_hits(json.loads(r.stdout), json.loads(cli("query", *args, "--store", store, "--no-server").stdout))
    assert len(served.calls) == 3
    r = _run_main("query", "hello", "--type", "movie", "--store", store)  # an error, reported by the server
    assert r.returncode == 2 and "type='movie'" in r.stderr and "video" in r.stderr and r.stderr.strip().endswith("HEAVY []")
    r = _run_main("query", "hello there", "--type", "text", "--store", store, "--paths")
    assert r.returncode == 0 and r.stdout == cli("query", "hello there", "--type", "text", "--store", store, "--paths",
                                                  "--no-server").stdout
    r = _run_main("query", "hello there", "--store", store, "--no-server")  # in-process: heavy, and no server call
    assert r.returncode == 0 and r.stderr.strip().splitlines()[-1] != "HEAVY []"
    assert len(served.calls) == 5
    r = _run_main("query", "--help", "--store", store)  # not a query: the full CLI answers
    assert r.returncode == 0 and "--no-server" in r.stdout and len(served.calls) == 5


def test_without_a_server_the_main_path_searches_in_process(indexed):
    r = _run_main("query", "hello there", "--type", "text", "-k", "1", "--json", "--store", str(indexed.store))
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)[0]["text"] == "hello there"


def test_serve_command_announces_itself_and_withdraws_on_sigterm(indexed, tmp_path):
    log = open(tmp_path / "serve.log", "w+")
    proc = subprocess.Popen([sys.executable, "-m", "mmsearch", "serve", "--store", str(indexed.store), "--port", "0"],
                            stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    file = indexed.store / SERVER_FILE
    try:
        deadline = time.monotonic() + 60
        while not file.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        log.seek(0)
        assert file.exists(), log.read()
        info = json.loads(file.read_text())
        assert info["pid"] == proc.pid and file.stat().st_mode & 0o777 == 0o600
        r = _run_main("query", "general kenobi", "--type", "any", "--json", "--store", str(indexed.store))
        assert r.returncode == 0 and r.stderr.strip().endswith("HEAVY []"), r.stderr
        _same_hits(json.loads(r.stdout),
                   json.loads(cli("query", "general kenobi", "--type", "any", "--json", "--store", indexed.store,
                                  "--no-server").stdout))
        log.seek(0)
        assert f"on {info['url']}/" in log.read()  # the real port, not 0
    finally:
        stop_process(proc)
        log.close()
    assert not file.exists()
