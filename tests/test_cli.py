"""The CLI is a thin layer: its JSON equals the API's answer; errors are one line and an exit code."""

import json
from pathlib import Path

import pytest

from mmsearch import Engine
from mmsearch.cli import app
from tests.kit import cli, write_images, write_texts


def test_index_query_stats_json_matches_the_api(tmp_path, tiny_model):
    store = tmp_path / "s"
    imgs = write_images(tmp_path / "data", 8)
    write_texts(tmp_path / "data" / "n", ["hello there", "general kenobi"])
    r = cli("index", tmp_path / "data", "--store", store, "--model", tiny_model, "--workers", "0", "--json")
    assert r.exit_code == 0, r.output
    rep = json.loads(r.stdout)
    assert rep["indexed"] == 10 and rep["ok"] is True

    r = cli("query", "--image", imgs[2], "--store", store, "-k", "3", "--json")
    assert r.exit_code == 0, r.output
    got = json.loads(r.stdout)
    with Engine.open(store) as eng:
        expected = [h.to_dict() for h in eng.search(image=imgs[2], k=3)]
    assert [g["path"] for g in got] == [e["path"] for e in expected]
    assert [round(g["score"], 5) for g in got] == [round(e["score"], 5) for e in expected]

    r = cli("query", "hello there", "--type", "text", "--store", store, "--jsonl")
    lines = [json.loads(x) for x in r.stdout.splitlines()]
    assert lines[0]["text"] == "hello there" and len(lines) == 2

    r = cli("query", "hello", "--store", store, "--paths", "-k", "2")
    assert len(r.stdout.splitlines()) == 2

    r = cli("stats", "--store", store, "--json")
    st = json.loads(r.stdout)
    assert st["items"] == {"image": 8, "text": 2} and st["spaces"][0]["dim"] == 32

    r = cli("query", "hello", "--store", store)  # human table
    assert r.exit_code == 0 and "score" in r.stdout


def test_failed_files_give_exit_code_1_and_are_listed(tmp_path, tiny_model):
    data = tmp_path / "data"
    write_images(data, 2)
    (data / "broken.jpg").write_bytes(b"nope")
    r = cli("index", data, "--store", tmp_path / "s", "--model", tiny_model, "--workers", "0")
    assert r.exit_code == 1
    assert "broken.jpg" in r.output and "failed 1" in r.output
    r = cli("errors", "--store", tmp_path / "s", "--json")
    assert [e["path"] for e in json.loads(r.stdout)] == [str(data / "broken.jpg")]


@pytest.mark.parametrize("args, code, says", [
    (("query", "x", "--store", "{tmp}/missing"), 3, "no mmsearch store"),
    (("query", "--store", "{tmp}/missing"), 2, "give a query text, --image PATH or --audio PATH"),
    (("index", "{tmp}/nope", "--store", "{tmp}/s", "--model", "{model}"), 2, "no such file"),
    (("index", "{tmp}", "--store", "{tmp}/s", "--model", "local-dir:/no/model"), 4, "model folder not found"),
    (("query", "x", "-k", "0", "--store", "{tmp}/s"), 2, "'-k'"),
], ids=["no-store", "no-query", "no-such-path", "no-such-model", "bad-k"])
def test_usage_errors_are_one_line_with_documented_codes(tmp_path, tiny_model, args, code, says):
    r = cli(*(a.format(tmp=tmp_path, model=tiny_model) for a in args))
    assert r.exit_code == code, r.output
    assert says in r.output and "Traceback" not in r.output


def test_add_text_from_jsonl(tmp_path, tiny_model):
    f = tmp_path / "t.jsonl"
    f.write_text('{"id": "a", "text": "alpha"}\n{"text": "beta"}\n')
    r = cli("add-text", "--file", f, "--store", tmp_path / "s", "--model", tiny_model)
    assert r.exit_code == 0 and "added 2" in r.output
    bad = tmp_path / "bad.jsonl"
    bad.write_text("{not json}\n")
    r = cli("add-text", "--file", bad, "--store", tmp_path / "s", "--model", tiny_model)
    assert r.exit_code == 2 and "line 1" in r.output


def test_every_command_is_documented_in_the_readme():
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    names = [cmd.name or cmd.callback.__name__ for cmd in app.registered_commands]
    assert len(names) >= 5, names  # the commands really were found
    assert [n for n in names if f"mmsearch {n}" not in readme] == [], "README does not mention these commands"


def test_csv_texts_keep_newlines_inside_quoted_fields(tmp_path, tiny_model):
    f = tmp_path / "t.csv"
    f.write_bytes(b'id,text\r\nn1,"line one\r\nline two"\r\n')
    r = cli("add-text", "--file", f, "--store", tmp_path / "s", "--model", tiny_model)
    assert r.exit_code == 0, r.output
    with Engine.open(tmp_path / "s") as eng:
        hit = eng.search(text="line one", type="text", k=1)[0]
    assert hit.text.splitlines() == ["line one", "line two"]


def test_help_and_import_stay_light():
    """`mmsearch --help` (and `import mmsearch`) load neither numpy nor SQLAlchemy (nor torch, faiss)."""
    import subprocess
    import sys

    code = ("import sys, mmsearch\nfrom typer.testing import CliRunner\nfrom mmsearch.cli import app\n"
            "assert CliRunner().invoke(app, ['--help']).exit_code == 0\n"
            "print(sorted(m for m in ('numpy', 'sqlalchemy', 'torch', 'faiss', 'open_clip') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
    from mmsearch import Engine, IndexInterrupted  # the lazy names still resolve

    assert Engine.__name__ == "Engine" and issubclass(IndexInterrupted, KeyboardInterrupt)
