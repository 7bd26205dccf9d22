"""The CLI is a thin layer: its JSON equals the API's answer; errors are one line and an exit code."""

import json

from typer.testing import CliRunner

from mmsearch import Engine
from mmsearch.cli import app
from tests.conftest import write_images, write_texts

runner = CliRunner()


def _run(*args):
    return runner.invoke(app, [str(a) for a in args])


def test_index_query_stats_json_matches_the_api(tmp_path, tiny_model):
    store = tmp_path / "s"
    imgs = write_images(tmp_path / "data", 8)
    write_texts(tmp_path / "data" / "n", ["hello there", "general kenobi"])
    r = _run("index", tmp_path / "data", "--store", store, "--model", tiny_model, "--workers", "0", "--json")
    assert r.exit_code == 0, r.output
    rep = json.loads(r.stdout)
    assert rep["indexed"] == 10 and rep["ok"] is True

    r = _run("query", "--image", imgs[2], "--store", store, "-k", "3", "--json")
    assert r.exit_code == 0, r.output
    got = json.loads(r.stdout)
    with Engine.open(store) as eng:
        expected = [h.to_dict() for h in eng.search(image=imgs[2], k=3)]
    assert [g["path"] for g in got] == [e["path"] for e in expected]
    assert [round(g["score"], 5) for g in got] == [round(e["score"], 5) for e in expected]

    r = _run("query", "hello there", "--type", "text", "--store", store, "--jsonl")
    lines = [json.loads(x) for x in r.stdout.splitlines()]
    assert lines[0]["text"] == "hello there" and len(lines) == 2

    r = _run("query", "hello", "--store", store, "--paths", "-k", "2")
    assert len(r.stdout.splitlines()) == 2

    r = _run("stats", "--store", store, "--json")
    st = json.loads(r.stdout)
    assert st["items"] == {"image": 8, "text": 2} and st["spaces"][0]["dim"] == 32

    r = _run("query", "hello", "--store", store)  # human table
    assert r.exit_code == 0 and "score" in r.stdout


def test_failed_files_give_exit_code_1_and_are_listed(tmp_path, tiny_model):
    data = tmp_path / "data"
    write_images(data, 2)
    (data / "broken.jpg").write_bytes(b"nope")
    r = _run("index", data, "--store", tmp_path / "s", "--model", tiny_model, "--workers", "0")
    assert r.exit_code == 1
    assert "broken.jpg" in r.output and "failed 1" in r.output
    r = _run("errors", "--store", tmp_path / "s", "--json")
    assert [e["path"] for e in json.loads(r.stdout)] == [str(data / "broken.jpg")]


def test_usage_errors_are_one_line_with_documented_codes(tmp_path, tiny_model):
    r = _run("query", "x", "--store", tmp_path / "missing")
    assert r.exit_code == 3 and "no mmsearch store" in r.output and "Traceback" not in r.output
    r = _run("query", "--store", tmp_path / "missing")
    assert r.exit_code == 2
    r = _run("index", tmp_path / "nope", "--store", tmp_path / "s", "--model", tiny_model)
    assert r.exit_code == 2 and "no such file" in r.output
    r = _run("index", tmp_path, "--store", tmp_path / "s", "--model", "local-dir:/no/model")
    assert r.exit_code == 4
    r = _run("query", "x", "-k", "0", "--store", tmp_path / "s")
    assert r.exit_code == 2


def test_add_text_from_jsonl(tmp_path, tiny_model):
    f = tmp_path / "t.jsonl"
    f.write_text('{"id": "a", "text": "alpha"}\n{"text": "beta"}\n')
    r = _run("add-text", "--file", f, "--store", tmp_path / "s", "--model", tiny_model)
    assert r.exit_code == 0 and "added 2" in r.output
    bad = tmp_path / "bad.jsonl"
    bad.write_text("{not json}\n")
    r = _run("add-text", "--file", bad, "--store", tmp_path / "s", "--model", tiny_model)
    assert r.exit_code == 2 and "line 1" in r.output


def test_every_command_is_documented_in_the_readme():
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    for cmd in app.registered_commands:
        name = cmd.name or cmd.callback.__name__
        assert f"mmsearch {name}" in readme, f"README does not mention `mmsearch {name}`"


def test_csv_texts_keep_newlines_inside_quoted_fields(tmp_path, tiny_model):
    f = tmp_path / "t.csv"
    f.write_bytes(b'id,text\r\nn1,"line one\r\nline two"\r\n')
    r = _run("add-text", "--file", f, "--store", tmp_path / "s", "--model", tiny_model)
    assert r.exit_code == 0, r.output
    with Engine.open(tmp_path / "s") as eng:
        hit = eng.search(text="line one", type="text", k=1)[0]
    assert hit.text.splitlines() == ["line one", "line two"]
