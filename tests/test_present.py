"""Every path, text, reason and model spec prints as data, never as rich markup or :emoji: codes.

A file named ``[draft] star.png`` used to print as `` star.png``, ``:smile:`` as an emoji, and a path
holding ``[/b]`` (folder ``holiday [``, file ``b] 2024.png``) ended ``mmsearch query`` with a MarkupError.
"""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

import pytest
from rich.console import Console
from typer.testing import CliRunner

from mmsearch import present
from mmsearch.cli import app
from tests.conftest import make_tiny_model, write_images

runner = CliRunner()
TEXT = "remember [bold]x[/bold] and [/ this :smile: \\"  # markup, an unclosed tag, an emoji code, a backslash
IMAGES = ("[draft] star.png", "holiday [/b] 2024.png", ":smile: face.png", "[i]copy[/i] of a [draft].png")


def _run(*args):
    # wide: rich folds long table cells, which would cut a name in two
    return runner.invoke(app, [str(a) for a in args], env={"COLUMNS": "400"})


@pytest.fixture(autouse=True)
def _elsewhere(elsewhere):
    """Paths print as stored, wherever the suite is run from."""


@pytest.fixture(autouse=True)
def _wide_consoles(monkeypatch):
    """A COLUMNS set when mmsearch.cli was imported fixes its consoles' width: pin both wide here."""
    from mmsearch import cli

    for console in (cli.out, cli.err):
        monkeypatch.setattr(console, "_width", 400)


@pytest.fixture(scope="module")
def odd_model(tmp_path_factory) -> str:
    """The tiny model in a folder whose name is markup and an emoji code: the spec shows in stats and doctor."""
    return "local-dir:" + str(make_tiny_model(tmp_path_factory.mktemp("models") / "[m] :smile: tiny"))


@pytest.fixture
def corpus(tmp_path) -> dict:
    """Files with markup-like names and text, one of them an undecodable image, one image twice."""
    data = tmp_path / "data"
    made = write_images(tmp_path / "raw", 3)
    files = {}
    for name, src in zip(IMAGES, (*made, made[0])):  # the last one is a copy of the first
        f = data / name  # "holiday [/b] 2024.png": folder "holiday [", file "b] 2024.png"
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_bytes(src.read_bytes())
        files[name] = f
    note = data / "notes" / "[todo] list :x:.txt"
    note.parent.mkdir()
    note.write_text(TEXT, encoding="utf-8")
    bad = data / "[bad] :smile:.png"
    bad.write_bytes(b"[/b] not a png")
    return {"data": data, "images": files, "note": note, "bad": bad}


@pytest.fixture
def store(tmp_path, corpus, engine_factory, odd_model) -> Path:
    s = tmp_path / "[s] :smile: store"
    eng = engine_factory(s, model=odd_model)
    rep = eng.index([corpus["data"]])
    assert rep.indexed == 4 and rep.reused == 1 and rep.failed == 1, rep
    eng.close()
    return s


def _flat(text: str) -> str:
    return re.sub(r"\s+", " ", text)


def test_query_table_shows_every_name_and_text_as_is_and_machine_output_stays_raw(store, corpus):
    everything = ("--type", "any", "-k", "20", "--store", store)
    r = _run("query", "a star", *everything, "--json")
    assert r.exit_code == 0, r.output
    got = json.loads(r.stdout)
    wanted = {str(p) for p in corpus["images"].values()} | {str(corpus["note"])}
    assert {p for h in got for p in h["paths"]} == wanted  # exact paths: no escaping in JSON
    assert [h["text"] for h in got if h["modality"] == "text"] == [TEXT]

    r = _run("query", "a star", *everything, "--jsonl")
    assert [json.loads(line) for line in r.stdout.splitlines()] == got
    r = _run("query", "a star", *everything, "--paths")
    assert r.stdout.splitlines() == [h["path"] for h in got]

    r = _run("query", "a star", *everything)
    assert r.exit_code == 0, r.output
    assert "Traceback" not in r.output and "😄" not in r.output
    for h in got:
        assert h["path"] in r.stdout, (h["path"], r.stdout)
    assert _flat(TEXT) in _flat(r.stdout)
    assert "(+1 copies)" in r.stdout and "[dim]" not in r.stdout  # our own markup still styles


# (command, extra args, exit code, what must appear as is); values name keys of the `where` dict below
CASES = [
    ("stats", (), 0, ("store ${store}", "space 1: ${model}")),
    ("errors", (), 0, ("skipped ${bad}: ",)),
    ("doctor", (), 0, ("store ${store}", "model ${model}")),
    ("query", ("--image", "${bad}"), 2, ("${bad}",)),
]


@pytest.mark.parametrize("command, args, code, expected", CASES, ids=[c[0] for c in CASES])
def test_human_output_shows_paths_and_specs_as_is(store, corpus, odd_model, command, args, code, expected):
    where = {"store": str(store), "model": odd_model, "bad": str(corpus["bad"])}

    def fill(s: str) -> str:
        return re.sub(r"\$\{(\w+)\}", lambda m: where[m.group(1)], s)

    r = _run(command, *(fill(a) for a in args), "--store", store)
    assert r.exit_code == code, r.output
    assert "😄" not in r.output
    for e in expected:
        assert fill(e) in r.output, (fill(e), r.output)


def test_index_lists_failed_files_as_is(tmp_path, corpus, odd_model):
    r = _run("index", corpus["data"], "--store", tmp_path / "[new] store", "--model", odd_model, "--workers", "0")
    assert r.exit_code == 1, r.output
    assert f"skipped {corpus['bad']}: " in r.stderr, r.stderr
    assert "failed 1" in r.stdout
    r = _run("errors", "--store", tmp_path / "[new] store", "--json")
    assert [e["path"] for e in json.loads(r.stdout)] == [str(corpus["bad"])]


# the bracket cases printed right before too (the error line escaped them): kept as guards
@pytest.mark.parametrize("name", [":smile: store", "[s] store", "holiday [/b] store", "back\\slash [x]\\"])
def test_error_lines_show_the_path_as_is(tmp_path, name):
    missing = tmp_path / name
    r = _run("stats", "--store", missing)
    assert r.exit_code == 3, r.output
    assert str(missing) in r.stderr and "Traceback" not in r.output


def test_serve_names_the_store_as_is(tmp_path, monkeypatch):
    import mmsearch.server

    root = tmp_path / "[s] :smile: holiday [/b] store"
    monkeypatch.setattr(mmsearch.server, "serve",
                        lambda store, *, on_ready, **kw: on_ready(root, "http://127.0.0.1:8765/"))
    r = _run("serve", "--store", root)
    assert r.exit_code == 0, r.output
    assert f"serving {root} on http://127.0.0.1:8765/" in r.stderr


def test_eval_report_shows_dataset_and_model_as_is(tmp_path, odd_model):
    imgs = write_images(tmp_path / "[i] imgs", 4)
    ds = tmp_path / "[set] :smile: d.csv"
    ds.write_text("image,caption\n" + "".join(f"{p},caption {i}\n" for i, p in enumerate(imgs)))
    r = _run("eval", ds, "--model", odd_model, "--index", "flat")
    assert r.exit_code == 0, r.output
    assert "😄" not in r.output
    assert f"{ds.name}: 4 images, 4 captions, model {odd_model}" in r.stdout, r.stdout


@pytest.mark.parametrize("path, reason", [
    ("/x/notes [draft", "v2] broken"),  # a tag only when path and reason are read together
    ("/x/a [b", "c:smile:] d"),
    ("/x/ends with \\", "[red]r[/red]"),
    ("/x/[/]", "[bold]"),
])
def test_skipped_lines_are_data_even_when_brackets_span_path_and_reason(path, reason):
    console = Console(file=io.StringIO(), width=300, force_terminal=False)
    present.errors(console, [(path, reason)], present.Format.table)
    assert console.file.getvalue() == f"skipped {path}: {reason}\n"
