import pytest

from mmsearch.config import DEFAULT_STORE, Settings
from mmsearch.errors import UsageError


def test_precedence_defaults_file_env_arguments(tmp_path, monkeypatch):
    monkeypatch.delenv("MMSEARCH_STORE")
    assert Settings.resolve().store == DEFAULT_STORE
    cfg = tmp_path / "c.toml"
    cfg.write_text('store = "/from/file"\nbatch_size = 8\nmodel = "builtin:shapes"\n')
    monkeypatch.setenv("MMSEARCH_CONFIG", str(cfg))
    s = Settings.resolve()
    assert (s.store, s.batch_size, s.model) == ("/from/file", 8, "builtin:shapes")
    monkeypatch.setenv("MMSEARCH_STORE", "/from/env")
    monkeypatch.setenv("MMSEARCH_BATCH_SIZE", "16")
    s = Settings.resolve()
    assert (s.store, s.batch_size) == ("/from/env", 16)
    s = Settings.resolve(store="/from/arg", batch_size=None)
    assert (s.store, s.batch_size) == ("/from/arg", 16)


def test_bad_settings_name_their_source(tmp_path, monkeypatch):
    cfg = tmp_path / "c.toml"
    cfg.write_text("colour = 'red'\n")
    monkeypatch.setenv("MMSEARCH_CONFIG", str(cfg))
    with pytest.raises(UsageError, match="unknown settings"):
        Settings.resolve()
    cfg.write_text("batch_size = [\n")
    with pytest.raises(UsageError, match="c.toml"):
        Settings.resolve()
    cfg.unlink()
    monkeypatch.setenv("MMSEARCH_BATCH_SIZE", "lots")
    with pytest.raises(UsageError, match="MMSEARCH_BATCH_SIZE"):
        Settings.resolve()
    monkeypatch.delenv("MMSEARCH_BATCH_SIZE")
    with pytest.raises(UsageError, match="--batch-size"):
        Settings.resolve(batch_size=0)


def test_each_setting_says_where_it_came_from(tmp_path, monkeypatch):
    cfg = tmp_path / "c.toml"
    cfg.write_text('k = 3\nstore = "/from/file"\ndevice = "cuda"\n')
    monkeypatch.setenv("MMSEARCH_CONFIG", str(cfg))
    monkeypatch.setenv("MMSEARCH_DEVICE", "cpu")
    monkeypatch.delenv("MMSEARCH_STORE")
    s, sources = Settings.layered(store=None, model="builtin:shapes")
    assert (s.k, s.store, s.device, s.model, s.batch_size) == (3, "/from/file", "cpu", "builtin:shapes", 64)
    assert sources["k"] == sources["store"] == str(cfg)
    assert (sources["device"], sources["model"], sources["batch_size"]) == ("MMSEARCH_DEVICE", "argument", "default")
    with pytest.raises(UsageError, match="-k 0"):
        Settings.resolve(k=0)


def test_query_takes_k_from_config_unless_given_and_config_command_reports_it(tmp_path, monkeypatch, engine_factory):
    import json

    from typer.testing import CliRunner

    from mmsearch.cli import app
    from tests.kit import write_images

    eng = engine_factory(tmp_path / "store")
    eng.index([write_images(tmp_path / "imgs", 6)[0].parent])
    eng.close()
    cfg = tmp_path / "c.toml"
    cfg.write_text(f'k = 2\nstore = "{tmp_path / "store"}"\n')
    monkeypatch.setenv("MMSEARCH_CONFIG", str(cfg))
    monkeypatch.delenv("MMSEARCH_STORE")
    run = CliRunner().invoke
    r = run(app, ["query", "a photo", "--json", "--no-server"])
    assert r.exit_code == 0, r.output
    assert len(json.loads(r.stdout)) == 2
    monkeypatch.setenv("MMSEARCH_K", "4")
    assert len(json.loads(run(app, ["query", "a photo", "--json", "--no-server"]).stdout)) == 4
    assert len(json.loads(run(app, ["query", "a photo", "--json", "--no-server", "-k", "5"]).stdout)) == 5
    got = json.loads(run(app, ["config", "--json"]).stdout)
    assert got["config_file"] == str(cfg)
    assert got["settings"]["k"] == {"value": 4, "from": "MMSEARCH_K"}
    assert got["settings"]["store"] == {"value": str(tmp_path / "store"), "from": str(cfg)}
