"""Shared fixtures, built on tests/kit.py (the helpers themselves live there).

Nothing here downloads: models are built locally and loaded through `local-dir:`.
The kit's builders are re-exported for files that still import them from here.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from tests.kit import (  # noqa: E402  (re-exported: `from tests.conftest import ...` keeps working)
    TINY_CFG,
    Corpus,
    Indexed,
    build_indexed,
    counting_encoders,
    make_tiny_model,
    write_images,
    write_texts,
)

__all__ = ["TINY_CFG", "make_tiny_model", "write_images", "write_texts"]


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> str:
    return "local-dir:" + str(make_tiny_model(tmp_path_factory.mktemp("models") / "tiny"))


@pytest.fixture(scope="session")
def runtime_cache(tmp_path_factory) -> Path:
    """One ONNX export cache for the session: each test model is exported once, never into the user's cache."""
    return tmp_path_factory.mktemp("runtime-cache")


@pytest.fixture(autouse=True)
def _isolate(tmp_path, monkeypatch, runtime_cache):
    """Every test gets its own config/store location: no test sees the user's files."""
    monkeypatch.setenv("MMSEARCH_CACHE", str(runtime_cache))
    monkeypatch.setenv("MMSEARCH_CONFIG", str(tmp_path / "no-config.toml"))
    monkeypatch.setenv("MMSEARCH_STORE", str(tmp_path / "store"))
    monkeypatch.delenv("MMSEARCH_MODEL", raising=False)
    from dataclasses import fields

    from mmsearch.config import Settings

    for name in {f"MMSEARCH_{f.name.upper()}" for f in fields(Settings)} - {"MMSEARCH_STORE"} | {"MMSEARCH_THREADS"}:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def elsewhere(tmp_path, monkeypatch) -> Path:
    """The current folder moved to an empty one beside the test's files: tables show their paths as
    stored (a path is shown relative only when it lies below the current folder)."""
    cwd = tmp_path / "cwd"
    cwd.mkdir(exist_ok=True)
    monkeypatch.chdir(cwd)
    return cwd


@pytest.fixture
def engine_factory(tmp_path, tiny_model):
    """Open engines on a temp store with the tiny model; closed at teardown."""
    from mmsearch import Engine

    opened = []

    def make(store: Path | None = None, **kw):
        kw.setdefault("model", tiny_model)
        kw.setdefault("workers", 0)
        eng = Engine.open(store or tmp_path / "store", **kw)
        opened.append(eng)
        return eng

    yield make
    for e in opened:
        e.close()


@pytest.fixture
def counting():
    """``counting:<spec>`` loads <spec> wrapped in a CountingEncoder, through the real registry.

    Yields the recorder (:class:`tests.kit.Counting`): ``counting.spec(tiny_model)`` is the spec to
    open an engine with, ``counting.last.items`` what reached the model. Unregistered at teardown.
    """
    with counting_encoders("counting") as rec:
        yield rec


@pytest.fixture
def corpus() -> Corpus:
    """What `indexed` writes; a test module overrides this fixture for another corpus."""
    return Corpus()


@pytest.fixture
def indexed(tmp_path, tiny_model, corpus) -> Indexed:
    """A store with ``corpus`` indexed by the tiny model (engine closed): see :class:`tests.kit.Indexed`."""
    return build_indexed(tmp_path, tiny_model, corpus)


@pytest.fixture(scope="session")
def postgres_server():
    """A PostgreSQL server for the session's tests, started here; the tests skip, saying why, where none can."""
    pytest.importorskip("psycopg", reason="psycopg is not installed (pip install 'mmsearch[postgres]')")
    from tests.kit import Postgres

    try:
        server = Postgres()
    except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
        pytest.skip(f"cannot start a PostgreSQL server: {exc}")
    yield server
    server.stop()


@pytest.fixture
def postgres_url(postgres_server) -> str:
    """The URL of a new, empty database on the session's PostgreSQL server."""
    return postgres_server.database()
