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
