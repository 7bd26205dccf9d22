"""A store whose truth is a PostgreSQL database (``--db``): the same answers as SQLite, shared by several
machines' store folders, one writer across them, readers never blocking it.

The server is a throwaway cluster the fixture starts (``initdb``/``pg_ctl``); without one these skip, saying why.
"""

from __future__ import annotations

import json
import os
import shutil
import threading

import numpy as np
import pytest
from sqlalchemy.engine import make_url

from mmsearch import Engine
from mmsearch.errors import StoreError, StoreLockedError, UsageError
from tests.kit import cli, index_pointer, unit, write_exif_jpeg, write_images, write_texts


def _hits(eng: Engine, **kw) -> list[tuple[str, float]]:
    return [(os.path.basename(h.path), round(h.score, 4)) for h in eng.search(vector=unit(32), k=20, **kw)]


def _folder(tmp_path):
    data = tmp_path / "data"
    write_images(data, 6)
    write_exif_jpeg(data / "canon.jpg", make="Canon", model="EOS R5", taken="2023:06:15 10:11:12", gps=(10.5, 20.25))
    write_texts(data, ["a red bicycle", "ein grünes Straßenschild"])
    return data


@pytest.mark.parametrize("where", [[], ["make~canon"], ["make~CANON"], ["width>=40", "!gps"], ["size<1MB"]])
def test_postgres_answers_as_sqlite_does(tmp_path, tiny_model, postgres_url, where):
    data = _folder(tmp_path)
    with Engine.open(tmp_path / "lite", model=tiny_model, workers=0) as lite, \
            Engine.open(tmp_path / "pg", model=tiny_model, workers=0, db=postgres_url) as pg:
        a, b = lite.index([data]), pg.index([data])
        assert (a.indexed, a.ok) == (b.indexed, b.ok) == (9, True)
        assert _hits(pg, where=where) == _hits(lite, where=where) != []
        assert _hits(pg, path=str(data / "img_*")) == _hits(lite, path=str(data / "img_*"))
        assert len(_hits(pg, path=str(data / "img_0_00[12].png"))) == 2
        assert [h.text for h in pg.search("a red bicycle", type="text", k=1)] == \
               [h.text for h in lite.search("a red bicycle", type="text", k=1)]
        assert pg.store.db_path is None and not list((tmp_path / "pg").glob("*.sqlite3"))


def test_sync_on_postgres_recognises_moves_and_applies_removals(tmp_path, tiny_model, postgres_url):
    data = _folder(tmp_path)
    with Engine.open(tmp_path / "pg", model=tiny_model, workers=0, db=postgres_url) as eng:
        eng.index([data])
        shutil.move(data / "img_0_001.png", data / "moved.png")
        (data / "img_0_002.png").unlink()
        again = eng.index([data])
        assert again.ok and again.indexed == 0 and again.reused == 1 and again.removed == 2  # the old path too
        names = {os.path.basename(h.path) for h in eng.search(vector=unit(32), k=20, type="image")}
        assert "moved.png" in names and not {"img_0_001.png", "img_0_002.png"} & names


def test_a_second_machine_shares_the_database_and_its_folder_remembers_it(tmp_path, tiny_model, postgres_url):
    data = _folder(tmp_path)
    with Engine.open(tmp_path / "one", model=tiny_model, workers=0, db=postgres_url) as one:
        one.index([data])
        expected = _hits(one)
    with Engine.open(tmp_path / "two", db=postgres_url, create=False) as two:  # its own folder, no caches yet
        assert _hits(two) == expected
    with Engine.open(tmp_path / "two", create=False) as two:  # the folder names its database
        assert _hits(two) == expected
    record = json.loads((tmp_path / "two" / "database.json").read_text())
    assert make_url(record["url"]) == make_url(postgres_url)


def _pointer_generation(store) -> int:
    return json.loads(index_pointer(store).read_text())["generation"]


def test_a_query_machine_keeps_its_index_files_current(tmp_path, tiny_model, postgres_url):
    data = _folder(tmp_path)
    with Engine.open(tmp_path / "one", model=tiny_model, workers=0, db=postgres_url) as one:
        one.index([data])
    with Engine.open(tmp_path / "two", db=postgres_url, create=False) as two:
        _hits(two)
    built = _pointer_generation(tmp_path / "two")  # the reader saved what it built: the next one loads it
    write_images(data / "more", 3, seed=5)
    with Engine.open(tmp_path / "one", model=tiny_model, workers=0) as one:
        one.index([data])
        expected = _hits(one)
    with Engine.open(tmp_path / "two", create=False) as two:
        assert _hits(two) == expected  # caught up from the database ...
    assert _pointer_generation(tmp_path / "two") > built  # ... and saved, so no later query catches up again
    with Engine.open(tmp_path / "two", create=False) as two:
        assert _hits(two) == expected and not two.notices


def test_a_query_machine_leaves_its_files_to_a_writer_holding_the_folder(tmp_path, tiny_model, postgres_url):
    data = _folder(tmp_path)
    with Engine.open(tmp_path / "one", model=tiny_model, workers=0, db=postgres_url) as one:
        one.index([data])
        expected = _hits(one)
    with Engine.open(tmp_path / "two", db=postgres_url, create=False) as two, two.store.writer_lock("a test"):
        with Engine.open(tmp_path / "two", create=False) as reader:
            assert _hits(reader) == expected
    assert not index_pointer(tmp_path / "two").exists()


def test_the_folder_keeps_no_password_and_refuses_another_database(tmp_path, tiny_model, postgres_url):
    with_password = postgres_url.replace("://mm@", "://mm:s3cret@", 1) if "://mm@" in postgres_url else None
    if with_password is None:
        pytest.skip("the test server's user is not `mm`")
    with Engine.open(tmp_path / "pg", model=tiny_model, workers=0, db=with_password) as eng:  # trust: any password
        eng.index([_folder(tmp_path)])
    assert "s3cret" not in (tmp_path / "pg" / "database.json").read_text()
    other = postgres_url.rsplit("/", 1)[0] + "/other" + postgres_url[postgres_url.index("?"):]
    with pytest.raises(StoreError, match="bound to .*not .*other"):
        Engine.open(tmp_path / "pg", db=other)
    with Engine.open(tmp_path / "lite", model=tiny_model, workers=0) as lite:
        lite.index([_folder(tmp_path)])
    with pytest.raises(StoreError, match="holds a SQLite store"):
        Engine.open(tmp_path / "lite", db=postgres_url)


@pytest.mark.parametrize("url, message", [
    ("nonsense", "not a database URL"),
    ("mysql://u@h/db", "mysql is not supported"),
    ("sqlite:////tmp/x.sqlite3", "pass --store"),
])
def test_a_bad_db_url_is_a_usage_error_naming_it(tmp_path, url, message):
    with pytest.raises(UsageError, match=f"--db .*{message}"):
        Engine.open(tmp_path / "s", db=url)


def test_an_unreachable_server_is_a_clear_store_error_without_the_password(tmp_path, postgres_server):
    url = f"postgresql+psycopg://mm:s3cret@/nodb?host={tmp_path}&port=1"
    with pytest.raises(StoreError) as caught:
        Engine.open(tmp_path / "s", db=url)
    assert "cannot open database" in str(caught.value) and "s3cret" not in str(caught.value)
    assert not (tmp_path / "s" / "database.json").exists()


def test_one_writer_across_machines_and_readers_never_block_it(tmp_path, tiny_model, postgres_url):
    data = _folder(tmp_path)
    with Engine.open(tmp_path / "one", model=tiny_model, workers=0, db=postgres_url) as one, \
            Engine.open(tmp_path / "two", model=tiny_model, workers=0, db=postgres_url) as two:
        one.index([data])
        with one.store.writer_lock("index"):  # another folder, so only the database can tell
            with pytest.raises(StoreLockedError, match=r"pid \d+ on .*\(index"):
                two.index([data])
        with two.store.snapshot():  # a reader holding one snapshot open ...
            before = _hits(two)
            write_images(data / "more", 2, seed=5)
            done = threading.Event()
            threading.Thread(target=lambda: (one.index([data]), done.set()), daemon=True).start()
            assert done.wait(120)  # ... does not hold the writer up
            assert _hits(two) == before  # and keeps seeing its snapshot
        assert len(_hits(two)) == len(before) + 2


def test_cli_index_with_db_then_query_without_it(tmp_path, tiny_model, postgres_url):
    data = _folder(tmp_path)
    store = tmp_path / "pg"
    r = cli("index", data, "--store", store, "--db", postgres_url, "--model", tiny_model, "--workers", "0", "--json")
    assert r.exit_code == 0, r.output
    r = cli("query", "a red bicycle", "--type", "text", "--store", store, "--json", "--no-server")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)[0]["text"] == "a red bicycle"
    r = cli("stats", "--store", store, "--json")
    assert r.exit_code == 0 and json.loads(r.stdout)["items"]["image"] == 7


@pytest.mark.parametrize("command", [["query", "a red bicycle", "--type", "text", "--no-server"], ["stats"], ["errors"],
                                     ["doctor"], ["dups"]])
def test_a_second_machine_reads_with_db_on_any_command(tmp_path, tiny_model, postgres_url, command):
    data = _folder(tmp_path)
    r = cli("index", data, "--store", tmp_path / "one", "--db", postgres_url, "--model", tiny_model, "--workers", "0")
    assert r.exit_code == 0, r.output
    two = tmp_path / "two"  # another machine's empty folder: --db names the truth, the folder remembers it
    r = cli(*command, "--store", two, "--db", postgres_url, "--json")
    assert r.exit_code == 0, r.output
    assert json.loads((two / "database.json").read_text())["url"] == make_url(postgres_url).render_as_string(False)
    if command[0] == "query":
        assert json.loads(r.stdout)[0]["text"] == "a red bicycle"
    if command[0] == "stats":
        assert json.loads(r.stdout)["items"]["image"] == 7
    r = cli(*command, "--store", two, "--json")  # and later commands need no --db
    assert r.exit_code == 0, r.output


def test_db_naming_another_database_than_the_folder_is_refused_on_any_command(tmp_path, tiny_model, postgres_url):
    store = tmp_path / "pg"
    assert cli("index", _folder(tmp_path), "--store", store, "--db", postgres_url, "--model", tiny_model,
               "--workers", "0").exit_code == 0
    other = make_url(postgres_url).set(database="another").render_as_string(False)
    r = cli("query", "a red bicycle", "--store", store, "--db", other)
    assert r.exit_code != 0 and "bound to" in r.output, r.output


def test_config_shows_the_db_url_without_its_password(monkeypatch):
    monkeypatch.setenv("MMSEARCH_DB", "postgresql+psycopg://mm:s3cret@db.example/photos")
    r = cli("config", "--json")
    assert r.exit_code == 0
    shown = json.loads(r.stdout)["settings"]["db"]
    assert shown == {"value": "postgresql+psycopg://mm:***@db.example/photos", "from": "MMSEARCH_DB"}


def test_doctor_and_stats_name_the_server(tmp_path, tiny_model, postgres_url):
    store = tmp_path / "pg"
    with Engine.open(store, model=tiny_model, workers=0, db=postgres_url) as eng:
        eng.index([_folder(tmp_path)])
        assert eng.stats().database == eng.store.database and "postgresql" in eng.stats().database
    r = cli("doctor", "--store", store)
    assert r.exit_code == 0 and "healthy" in r.output and "SQLite" not in r.output, r.output
    r = cli("stats", "--store", store)
    assert r.exit_code == 0 and "database: postgresql+psycopg://" in r.output


def _big_batch(n: int, seed: int, *, shift: int = 0, segments: bool = False):
    from mmsearch.store.write import Upsert

    rng = np.random.default_rng(seed)
    vecs = rng.standard_normal((n, 16)).astype(np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    segs = ((np.array([[0.0, 1.0], [1.0, 2.0]]), np.stack([v, v])) for v in vecs) if segments else iter(lambda: None, 0)
    return [Upsert(uri=f"/data/{i:04d}.jpg", kind="file", size=1000 + i, mtime_ns=10**18 + i,
                   sha256=f"{i + shift:064x}", modality="image", width=40, height=30, vector=vecs[i],
                   exif={"make": "Canon"} if i % 2 else None, segments=next(segs)) for i in range(n)]


def _rows(store) -> tuple:
    space = store.spaces()[0]
    uris = sorted(store.file_uris())
    states = store.lookup_sources(uris)
    by_cid = {}
    for ids, vecs in store.iter_vectors(space.id, "image"):
        by_cid.update({int(i): v.round(3).tolist() for i, v in zip(ids, vecs)})
    meta = store.content_meta(sorted(by_cid))
    return ([(u, states[u].size, states[u].mtime_ns, by_cid[states[u].content_id],
              getattr(meta[states[u].content_id], "make", None)) for u in uris],
            len(store.segments(sorted(by_cid), space.id)))


def test_large_batches_copy_into_postgres_as_sqlite_writes_them(tmp_path, postgres_url):
    from mmsearch.encoders.base import SpaceInfo
    from mmsearch.store.store import Store

    results = []
    for name, db in (("lite", None), ("pg", postgres_url)):
        store = Store(tmp_path / name, create=True, db=db)
        space = store.ensure_space(SpaceInfo("t", "t", "0", 16, ("image",)))
        first = store.apply(_big_batch(300, 0, segments=True), space.id)
        again = store.apply(_big_batch(300, 0), space.id)  # the same files: every row conflicts
        moved = store.apply(_big_batch(300, 1, shift=150), space.id)  # half the paths now hold other contents
        results.append(((first.added_contents, first.added_vectors), (again.added_contents, again.added_vectors),
                        (moved.added_contents, moved.added_vectors, moved.removed_contents), _rows(store)))
        store.close()
    assert results[0] == results[1]
    assert results[1][0] == (300, 300) and results[1][1] == (0, 0) and results[1][2][:2] == (150, 150)
