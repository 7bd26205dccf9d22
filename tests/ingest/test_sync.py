"""Re-running index syncs: unchanged skipped, changed re-embedded, removed dropped, moved linked."""

import os
import shutil

import numpy as np
import pytest
from PIL import Image

from mmsearch.errors import UsageError
from tests.kit import write_images, write_texts


@pytest.fixture
def counted(engine_factory, tiny_model, counting):
    """An engine whose model is the tiny one wrapped in a CountingEncoder (installed through the registry)."""
    eng = engine_factory(model=counting.spec(tiny_model))
    enc = eng.encoder(counting.spec(tiny_model))  # the instance this engine embeds with
    assert enc is counting.last  # made by the registered factory
    return eng, enc


def test_reindex_skips_unchanged_picks_up_changed_and_removed(counted, tmp_path):
    eng, enc = counted
    data = tmp_path / "data"
    imgs = write_images(data, 6)
    notes = write_texts(data / "notes", ["first note", "second note"])
    r1 = eng.index([data])
    assert (r1.indexed, r1.failed, r1.scanned) == (8, 0, 8)
    items_after_first = enc.items

    r2 = eng.index([data])
    assert (r2.indexed, r2.unchanged, r2.removed) == (0, 8, 0)
    assert enc.items == items_after_first  # nothing re-embedded

    Image.fromarray(np.zeros((30, 40, 3), np.uint8)).save(imgs[0])  # changed content
    os.utime(imgs[0], ns=(1, 1))  # and a different mtime for sure
    imgs[1].unlink()
    notes[0].write_text("first note, edited")
    r3 = eng.index([data])
    assert (r3.indexed, r3.removed, r3.unchanged) == (2, 1, 5)
    assert enc.items == items_after_first + 2
    st = eng.stats()
    assert st.items == {"image": 5, "text": 2}
    hits = eng.search(text="first note, edited", type="text", k=1)
    assert hits[0].path == str(notes[0])


def test_moved_renamed_and_copied_files_cost_no_encoder_call(counted, tmp_path):
    eng, enc = counted
    data = tmp_path / "data"
    imgs = write_images(data / "a", 4)
    eng.index([data])
    before = enc.items
    (data / "b").mkdir()
    shutil.move(imgs[0], data / "b" / "moved.png")
    os.rename(imgs[1], data / "a" / "renamed.png")
    shutil.copy(imgs[2], data / "b" / "copy.png")
    r = eng.index([data])
    assert enc.items == before
    assert r.indexed == 0 and r.reused == 3 and r.removed == 2
    hit = eng.search(image=data / "b" / "copy.png", k=1)[0]
    assert set(hit.paths) == {str(imgs[2]), str(data / "b" / "copy.png")}
    assert eng.stats().items == {"image": 4}


def test_bad_files_are_reported_skipped_and_the_run_goes_on(engine_factory, tmp_path):
    eng = engine_factory()
    data = tmp_path / "data"
    write_images(data, 3)
    (data / "zero.jpg").write_bytes(b"")
    (data / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 50)
    (data / "notes.txt").write_bytes(b"\xff\xfe bad utf8 \xff")
    os.symlink(data / "nowhere.png", data / "dangling.png")
    r = eng.index([data])
    assert r.indexed == 3 and r.failed == 4
    reasons = dict(r.errors)
    assert "empty file" in reasons[str(data / "zero.jpg")]
    assert "not UTF-8" in reasons[str(data / "notes.txt")]
    assert "broken symlink" in reasons[str(data / "dangling.png")]
    recorded = {e.path for e in eng.errors()}
    assert recorded == set(reasons)
    # fixing a file clears its error on the next run
    (data / "notes.txt").write_text("fine now")
    r2 = eng.index([data])
    assert r2.indexed == 1 and str(data / "notes.txt") not in {e.path for e in eng.errors()}


def test_missing_root_is_an_error_and_removes_nothing(engine_factory, tmp_path):
    eng = engine_factory()
    data = tmp_path / "data"
    write_images(data, 3)
    eng.index([data])
    shutil.rmtree(data)
    with pytest.raises(UsageError, match="no such file"):
        eng.index([data])
    assert eng.stats().items == {"image": 3}


def test_worker_processes_give_the_same_vectors(engine_factory, tmp_path):
    data = tmp_path / "data"
    write_images(data, 70)  # above the inline threshold, so the pool really starts
    a = engine_factory(tmp_path / "s1", workers=0)
    b = engine_factory(tmp_path / "s2", workers=2)
    a.index([data])
    r = b.index([data])
    assert r.indexed == 70
    for p in sorted(data.iterdir())[:5]:
        ha, hb = a.search(image=p, k=3), b.search(image=p, k=3)
        assert [h.path for h in ha] == [h.path for h in hb]
        assert ha[0].path == str(p)


def test_progress_moves_within_a_batch_and_ends_at_the_total(engine_factory, tmp_path):
    eng = engine_factory(batch_size=4)  # encoder batches of 4 inside one commit batch of up to 256
    write_images(tmp_path / "data", 20)
    calls = []
    eng.index([tmp_path / "data"], progress=lambda done, total: calls.append((done, total)))
    assert calls[-1] == (20, 20)
    assert all(t == 20 for _, t in calls)
    dones = [d for d, _ in calls]
    assert dones == sorted(dones)
    assert len(set(d for d in dones if 0 < d < 20)) >= 3  # it moved while the batch was embedded


def test_moved_files_are_hashed_but_not_decoded(engine_factory, tmp_path, monkeypatch):
    import mmsearch.ingest.decode as decode

    eng = engine_factory()
    imgs = write_images(tmp_path / "data" / "a", 5)
    eng.index([tmp_path / "data"])
    (tmp_path / "data" / "b").mkdir()
    for p in imgs[:3]:
        shutil.move(p, tmp_path / "data" / "b" / p.name)
    write_images(tmp_path / "data" / "c", 1, seed=9)  # one really new image
    calls = []
    real = decode.decode_image
    monkeypatch.setattr(decode, "decode_image", lambda data, *a, **kw: calls.append(1) or real(data, *a, **kw))
    r = eng.index([tmp_path / "data"])
    assert (r.reused, r.indexed, r.removed) == (3, 1, 3)
    assert len(calls) == 1  # only the new image was decoded


def test_copies_of_a_new_file_are_decoded_once_and_linked(engine_factory, tmp_path, monkeypatch):
    """A first run over a folder and its backup: each content is decoded once, its copies linked to it,
    even when the copies fall in later hashing batches than the first."""
    import mmsearch.ingest.decode as decode

    eng = engine_factory(batch_size=2)
    imgs = write_images(tmp_path / "data" / "a", 3)
    (tmp_path / "data" / "z").mkdir()
    for p in imgs:
        shutil.copy(p, tmp_path / "data" / "z" / p.name)
    calls = []
    real = decode.decode_image
    monkeypatch.setattr(decode, "decode_image", lambda data, *a, **kw: calls.append(1) or real(data, *a, **kw))
    r = eng.index([tmp_path / "data"])
    assert r.ok and (r.indexed, r.reused) == (3, 3), r
    assert len(calls) == 3  # one decode per content, not per file
    hit = eng.search(image=imgs[1], k=1)[0]
    assert set(hit.paths) == {str(imgs[1]), str(tmp_path / "data" / "z" / imgs[1].name)}


def test_copies_of_a_file_that_fails_to_decode_fail_each_with_their_own_path(engine_factory, tmp_path):
    data = tmp_path / "data"
    write_images(data, 1)
    (data / "bad.png").write_bytes(b"\\x89PNG\\r\\n\\x1a\\n" + b"not really a png" * 20)
    shutil.copy(data / "bad.png", data / "bad copy.png")
    r = engine_factory().index([data])
    assert r.indexed == 1 and sorted(os.path.basename(p) for p, _ in r.errors) == ["bad copy.png", "bad.png"]
