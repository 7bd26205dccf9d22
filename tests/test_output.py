"""What `mmsearch query` prints for people and scripts: paths whole, relative when shorter, links,
control characters escaped, and NUL-separated paths (``-0``)."""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import pytest
from rich.console import Console
from typer.testing import CliRunner

from mmsearch import present
from mmsearch.cli import app
from mmsearch.types import Hit
from tests.kit import write_images

runner = CliRunner()
LONG = "a folder whose name goes on and on past any terminal width/" * 2 + "holiday photo of the beach 2024.png"
ODD = ("line\nbreak.png", "esc\x1b]0;owned\x07\x1b[31mred.png", "rtl \u202eevil.png")


@pytest.fixture(autouse=True)
def _elsewhere(elsewhere):
    """Paths print as stored, wherever the suite is run from (tests that want relative paths chdir)."""


@pytest.fixture
def narrow(monkeypatch):
    """The CLI's consoles 40 columns wide, as a small terminal is."""
    from mmsearch import cli

    for console in (cli.out, cli.err):
        monkeypatch.setattr(console, "_width", 40)


@pytest.fixture
def store(tmp_path, engine_factory) -> tuple[Path, dict[str, Path]]:
    src = write_images(tmp_path / "raw", len(ODD) + 1)
    files = {}
    for name, made in zip((LONG, *ODD), src):
        f = tmp_path / "data" / name
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_bytes(made.read_bytes())
        files[name] = f
    eng = engine_factory(tmp_path / "store")
    assert eng.index([tmp_path / "data"]).indexed == len(files)
    eng.close()
    return tmp_path / "store", files


def _query(store: Path, *args: str):
    r = runner.invoke(app, ["query", "a photo", "-k", "10", "--store", str(store), "--no-server", *args])
    assert r.exit_code == 0, r.output
    return r


def test_a_long_path_is_printed_whole_on_one_line_in_a_narrow_terminal(store, narrow):
    root, files = store
    r = _query(root)
    (line,) = [line for line in r.stdout.splitlines() if "holiday photo" in line]
    assert str(files[LONG]) in line and len(line) > 40


def test_paths_under_the_current_folder_are_shown_relative(store, monkeypatch, tmp_path):
    root, files = store
    monkeypatch.chdir(tmp_path / "data")
    r = _query(root)
    rel = os.path.relpath(files[LONG])
    assert any(line.rstrip().endswith(rel) for line in r.stdout.splitlines())
    assert str(files[LONG]) not in r.stdout  # the longer absolute form is not shown
    got = json.loads(_query(root, "--json").stdout)
    assert str(files[LONG]) in {h["path"] for h in got}  # scripts keep absolute paths
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")  # outside the current folder: absolute, never ../data/...
    r = _query(root)
    assert str(files[LONG]) in r.stdout and "../" not in r.stdout


def test_control_characters_in_names_are_escaped_for_people_and_exact_for_scripts(store):
    root, files = store
    r = _query(root)
    assert "\x1b" not in r.stdout and "\u202e" not in r.stdout and "\x07" not in r.stdout
    for shown in ("line\\x0abreak.png", "esc\\x1b]0;owned\\x07\\x1b[31mred.png", "rtl \\u202eevil.png"):
        assert shown in r.stdout, r.stdout
    got = json.loads(_query(root, "--json").stdout)
    assert {str(files[n]) for n in ODD} <= {h["path"] for h in got}


def test_null_separated_paths_keep_names_with_newlines_whole(store):
    root, files = store
    r = _query(root, "-0")
    listed = r.stdout.split("\0")
    assert listed[-1] == "" and set(listed[:-1]) == {str(f) for f in files.values()}
    assert _query(root, "--paths", "--null").stdout == r.stdout
    bad = runner.invoke(app, ["query", "a photo", "--store", str(root), "--no-server", "-0", "--json"])
    assert bad.exit_code == 2 and "--paths" in bad.output


def _hit(path: str) -> Hit:
    return Hit(rank=1, id=1, score=0.5, modality="image", path=path, paths=(path,), calibrated=1.0)


@pytest.mark.parametrize("terminal", [True, False])
def test_paths_link_to_the_file_on_a_terminal_and_carry_no_escape_codes_elsewhere(tmp_path, terminal):
    path = str(tmp_path / "a b#c.png")
    buf = io.StringIO()
    console = Console(file=buf, width=200, force_terminal=terminal, soft_wrap=True)
    present.hits(console, [_hit(path)], present.Format.table)
    if terminal:
        assert "\x1b]8;id=" in buf.getvalue() and Path(path).as_uri() in buf.getvalue()
        assert Path(path).as_uri().endswith("a%20b%23c.png")  # the link is a URL, the name stays data
    else:
        assert "\x1b" not in buf.getvalue() and path in buf.getvalue()


def test_bare_paths_on_a_terminal_are_escaped(tmp_path, capsys):
    console = Console(file=io.StringIO(), force_terminal=True)
    present.hits(console, [_hit("/x/esc\x1b[2Jwipe.png")], present.Format.paths)
    assert capsys.readouterr().out == "/x/esc\\x1b[2Jwipe.png\n"


def test_a_query_from_a_deleted_current_folder_still_prints(store, monkeypatch, tmp_path):
    root, files = store
    gone = tmp_path / "gone"
    gone.mkdir()
    monkeypatch.chdir(gone)
    gone.rmdir()  # the shell's folder deleted under it: no current folder to be relative to
    r = _query(root)
    assert str(files[LONG]) in r.stdout


def test_dups_paths_are_escaped_on_a_terminal_and_nul_separated_on_request(tmp_path, capsys):
    from mmsearch.types import DupCluster, DupMember

    odd = "/x/esc\x1b[2Jcopy.png"
    cluster = DupCluster("image", "m", 0.95, 0.99, (DupMember(1, ("/x/a.png",), 1.0, 8, 8, None, 10),
                                                   DupMember(2, (odd,), 0.99, 8, 8, None, 10)))
    present.dups(Console(file=io.StringIO(), force_terminal=True), [cluster], present.Format.paths, threshold=0.95)
    assert capsys.readouterr().out == "/x/esc\\x1b[2Jcopy.png\n"
    present.dups(Console(file=io.StringIO()), [cluster], present.Format.paths, threshold=0.95, null=True)
    assert capsys.readouterr().out == odd + "\0"
