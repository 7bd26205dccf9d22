"""Sounds beside photos and notes, through the public Engine and CLI: a CLAP space next to the CLIP space,
sync by content, windows with timestamps, calibrated merging across spaces, and failures per file."""

from __future__ import annotations

import json
import shutil
import sqlite3

import numpy as np
import pytest

from tests.kit import LikeEncoder, ShiftedEncoder, make_tiny_clap, wrapping
from tests.kit import cli, make_pre_alembic, make_tiny_model, tone, write_images, write_sound, write_texts


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("audio-models")
    return ("local-dir:" + str(make_tiny_model(root / "clip")), "local-dir:" + str(make_tiny_clap(root / "clap", seed=5)))


def mixed(folder, sounds: int = 4):
    """Images, texts and sounds (wav, flac, ogg; one 3.5 s long) in one folder."""
    write_images(folder / "photos", 4)
    write_texts(folder / "notes", ["a rising whistle", "rain on a roof"])
    rng = np.random.default_rng(0)
    for i in range(sounds):
        x = tone(0.6 + 0.2 * i, 16000, 200.0 * (i + 1)) + 0.02 * rng.standard_normal(int((0.6 + 0.2 * i) * 16000)).astype(np.float32)
        write_sound(folder / "sounds" / f"s{i}.{('wav', 'flac', 'ogg')[i % 3]}", x, 16000)
    long = np.concatenate([np.zeros(32000, np.float32), tone(1.0, 16000, 1234.0), np.zeros(8000, np.float32)])
    write_sound(folder / "sounds" / "long.wav", long, 16000)  # the tone is in window 2.0–3.0 of 3.5 s
    return folder


@pytest.fixture
def store(tmp_path, models):
    from mmsearch import Engine

    data = mixed(tmp_path / "data")
    eng = Engine.open(tmp_path / "store", model=list(models))
    report = eng.index([data])
    yield eng, data, report
    eng.close()


def test_a_mixed_folder_fills_both_spaces_and_every_kind_is_searchable(store, models):
    eng, data, report = store
    assert report.ok and report.indexed == 4 + 2 + 5 and report.spaces == list(models)
    stats = eng.stats()
    assert stats.items == {"image": 4, "text": 2, "audio": 5}
    by_spec = {sp.spec: sp for sp in stats.spaces}
    assert set(by_spec[models[0]].index) == {"image", "text"} and set(by_spec[models[1]].index) == {"audio", "text"}
    assert by_spec[models[1]].vectors == 5 + 2  # texts are embedded in every space with a text tower
    hits = eng.search(text="a rising whistle", k=20)
    assert {h.modality for h in hits} == {"image", "audio"}  # both kinds of file, merged
    assert all(h.calibrated is not None for h in hits)
    assert [h.calibrated for h in hits] == sorted((h.calibrated for h in hits), reverse=True)
    by_sound = eng.search(audio=data / "sounds" / "s1.flac", k=3)
    assert by_sound[0].path.endswith("s1.flac") and by_sound[0].score == pytest.approx(1.0, abs=1e-3)
    assert all(h.modality == "audio" for h in by_sound)
    texts = eng.search(audio=data / "sounds" / "s1.flac", type="text", k=5)
    assert {h.text for h in texts} == {"a rising whistle", "rain on a roof"}


def test_a_long_sound_is_embedded_as_windows_and_a_hit_says_where(store):
    eng, data, _ = store
    clip = write_sound(data.parent / "query.wav", tone(1.0, 16000, 1234.0), 16000)
    hits = eng.search(audio=clip, k=10)
    long = next(h for h in hits if h.path.endswith("long.wav"))
    assert (long.start, long.end) == (2.0, 3.0) and long.duration == pytest.approx(3.5)
    short = next(h for h in hits if h.path.endswith("s0.wav"))
    assert (short.start, short.end) == (0.0, pytest.approx(0.6))


def test_sounds_sync_like_images_moved_changed_removed(store):
    eng, data, _ = store
    sounds = data / "sounds"
    shutil.move(sounds / "s0.wav", sounds / "renamed.wav")
    write_sound(sounds / "s2.ogg", tone(0.7, 16000, 3000.0), 16000)  # changed content
    (sounds / "s3.wav").unlink()
    r = eng.index([data])
    assert r.ok and (r.indexed, r.reused, r.removed) == (1, 1, 2)
    assert r.unchanged == 4 + 2 + 2  # images, texts, s1.flac, long.wav
    paths = {h.path.rsplit("/", 1)[1] for h in eng.search(text="anything", type="audio", k=50)}
    assert paths == {"renamed.wav", "s1.flac", "s2.ogg", "long.wav"}
    again = eng.index([data])
    assert (again.indexed, again.reused, again.removed, again.unchanged) == (0, 0, 0, 4 + 2 + 4)


def test_calibrated_scores_order_across_spaces_where_raw_cosines_would_not(tmp_path, models):
    """Space A's model scores everything near 0.9; space B's best match scores 0.75 but far above its
    background. Raw cosines would rank every photo first; the calibrated score ranks the sound first."""
    from mmsearch import Engine
    from mmsearch.encoders.registry import registered

    data = mixed(tmp_path / "data")
    with registered("shifted", wrapping("shifted", ShiftedEncoder)), registered("like", wrapping("like", LikeEncoder)):
        with Engine.open(tmp_path / "store", model=["shifted:" + models[0], "like:" + models[1]]) as eng:
            assert eng.index([data]).ok
            target = data / "sounds" / "s2.ogg"
            hits = eng.search(text=f"like:{target}", k=30)
    raw_first = max(hits, key=lambda h: h.score)
    assert raw_first.modality == "image" and raw_first.score > 0.8  # raw cosines: a photo first
    assert hits[0].modality == "audio" and hits[0].score < 0.8 < raw_first.score  # calibrated: a sound first
    assert hits[0].calibrated > max(h.calibrated for h in hits if h.modality == "image")
    sounds = [h for h in hits if h.modality == "audio"]
    assert [h.id for h in sounds] == [h.id for h in sorted(sounds, key=lambda h: -h.score)]  # one space: raw order kept


def test_min_score_makes_nothing_relevant_an_answer(store, models):
    eng, data, _ = store
    everything = eng.search(text="a rising whistle", k=50)
    top = everything[0].calibrated
    assert [h.id for h in eng.search(text="a rising whistle", k=50, min_score=top - 1e-6)] == [everything[0].id]
    assert eng.search(text="a rising whistle", k=50, min_score=top + 1) == []
    r = cli("query", "a rising whistle", "--store", str(eng.store.root), "--min-score", str(top + 1), "--no-server")
    assert r.exit_code == 1 and "no results" in r.stdout


def test_cli_sound_query_table_json_and_explain(store):
    eng, data, _ = store
    root = str(eng.store.root)
    r = cli("query", "--audio", str(data / "sounds" / "long.wav"), "--store", root, "--no-server")
    assert r.exit_code == 0, r.output
    assert "long.wav" in r.stdout and "0:00.0–0:01.0 of 0:03.5" in r.stdout
    e = cli("query", "--audio", str(data / "sounds" / "long.wav"), "--store", root, "--no-server", "--explain")
    assert e.exit_code == 0 and "background" in e.stdout and "±" in e.stdout
    j = cli("query", "--audio", str(data / "sounds" / "long.wav"), "--store", root, "--no-server", "--json")
    first = json.loads(j.stdout)[0]
    assert first["modality"] == "audio" and first["start"] == 0.0 and first["why"]["raw"] == pytest.approx(first["score"], abs=1e-5)
    bad = cli("query", "--audio", str(data / "notes" / "note_0.txt"), "--store", root, "--no-server")
    assert bad.exit_code == 2 and "note_0.txt" in bad.output


def test_sounds_fail_per_file_when_no_sound_model_loads_and_photos_still_index(tmp_path, models):
    from mmsearch import Engine

    data = mixed(tmp_path / "data", sounds=2)
    with Engine.open(tmp_path / "store", model=models[0]) as eng:  # the default sound model is not on this machine
        r = eng.index([data])
        assert r.failed == 3 and all("hf-hub:laion/clap-htsat-unfused" in why for _, why in r.errors)
        assert eng.stats().items == {"image": 4, "text": 2}
        assert any("could not load" in n for n in r.notices)
        assert {e.path.rsplit("/", 1)[1] for e in eng.errors()} == {"s0.wav", "s1.flac", "long.wav"}


def test_a_store_from_before_sounds_upgrades_in_place(tmp_path, models):
    from mmsearch import Engine

    data = tmp_path / "data"
    write_images(data, 3)
    with Engine.open(tmp_path / "store", model=models[0]) as eng:
        eng.index([data])
    make_pre_alembic(tmp_path / "store" / "mmsearch.sqlite3", 1)  # make it a version-1 store
    write_sound(data / "beep.wav", tone(0.5, 16000, 880.0), 16000)
    with Engine.open(tmp_path / "store", model=list(models)) as eng:
        r = eng.index([data])
        assert r.ok and r.unchanged == 3 and r.indexed == 1
        assert eng.search(audio=data / "beep.wav", k=1)[0].path.endswith("beep.wav")


def test_quick_paths_stay_light_with_a_sound_space(tmp_path, models):
    """A no-change re-sync and a text query over both spaces import neither torch, open_clip nor
    transformers once the models' exports are cached (text queries stay as quick as with one space)."""
    from tests.kit import cli_modules

    data = mixed(tmp_path / "data", sounds=2)
    store = str(tmp_path / "store")
    assert cli_modules("index", str(data), "--store", store, "--model", models[0], "--model", models[1])[0] == 0
    assert cli_modules("index", str(data), "--store", store) == (0, [])
    assert cli_modules("query", "a rising whistle", "--store", store, "--no-server") == (0, [])


@pytest.fixture
def own_models(tmp_path):
    """Models in this test's own folders (a test may delete one: a model that can no longer load)."""
    return ("local-dir:" + str(make_tiny_model(tmp_path / "m" / "clip")),
            "local-dir:" + str(make_tiny_clap(tmp_path / "m" / "clap", seed=5)))


def _drop(spec: str) -> None:
    shutil.rmtree(spec.split(":", 1)[1])


def test_a_moved_sound_keeps_its_vector_when_the_sound_model_cannot_load(tmp_path, own_models):
    from mmsearch import Engine

    data = mixed(tmp_path / "data", sounds=2)
    with Engine.open(tmp_path / "store", model=list(own_models)) as eng:
        assert eng.index([data]).ok
    _drop(own_models[1])
    shutil.move(data / "sounds" / "s0.wav", data / "sounds" / "moved.wav")
    with Engine.open(tmp_path / "store") as eng:
        r = eng.index([data])
        assert r.ok and r.reused == 1 and r.removed == 1  # linked by content: no model needed
        assert eng.stats().items["audio"] == 3
        write_texts(data / "notes", ["rain on a tin roof"])  # a changed note: its sound-model vector waits
        r = eng.index([data])
        assert r.ok and r.indexed == 1 and any("could not load" in n for n in r.notices)


def test_texts_always_land_in_a_model(tmp_path, own_models):
    """A folder of notes (and photos) given only a sound model: the notes go into it; the photos fail
    with the image model's reason (it is not on this machine), not silently."""
    from mmsearch import Engine

    data = tmp_path / "data"
    write_texts(data / "notes", ["a rising whistle", "rain"])
    write_images(data / "photos", 2)
    with Engine.open(tmp_path / "store", model=own_models[1]) as eng:
        r = eng.index([data])
        assert r.indexed == 2 and r.failed == 2 and eng.stats().items == {"text": 2}
        assert all("ViT-B-32" in why for _, why in r.errors)
    with Engine.open(tmp_path / "fresh") as eng:  # no model at all: the default image model reads texts
        r = eng.index([data / "notes"])
        assert r.failed == 2 and all("ViT-B-32" in why for _, why in r.errors)


def test_type_any_merges_kinds_on_calibrated_scores(store):
    eng, _, _ = store
    for q in ("a rising whistle", "rain on a roof", "something else"):
        alone = [h for t in ("image", "audio", "text") for h in eng.search(text=q, type=t, k=4)]
        best = {}
        for h in alone:
            if h.id not in best or h.calibrated > best[h.id].calibrated:
                best[h.id] = h
        want = [h.id for h in sorted(best.values(), key=lambda h: (-h.calibrated, -h.score, h.id))[:4]]
        assert [h.id for h in eng.search(text=q, type="any", k=4)] == want


def test_a_config_file_may_list_several_models(tmp_path, models, monkeypatch):
    data = mixed(tmp_path / "data", sounds=2)
    config = tmp_path / "config.toml"
    config.write_text(f"model = [{json.dumps(models[0])}, {json.dumps(models[1])}]\n", encoding="utf-8")
    monkeypatch.setenv("MMSEARCH_CONFIG", str(config))
    store = str(tmp_path / "store")
    assert cli("index", str(data), "--store", store).exit_code == 0
    r = cli("query", "a rising whistle", "--store", store, "--no-server", "--json")
    assert r.exit_code == 0, r.output
    assert {h["modality"] for h in json.loads(r.stdout)} == {"image", "audio"}


def test_writes_never_load_a_model_for_calibration_nor_fail_after_committing(tmp_path, own_models):
    from mmsearch import Engine
    from mmsearch.errors import ModelError

    data = mixed(tmp_path / "data", sounds=2)
    with Engine.open(tmp_path / "store", model=list(own_models)) as eng:
        assert eng.index([data]).ok
    db = sqlite3.connect(tmp_path / "store" / "mmsearch.sqlite3")  # as a store from before calibration was kept
    db.execute("DELETE FROM meta WHERE key LIKE 'calibration:%'")
    db.commit()
    db.close()
    _drop(own_models[1])
    with Engine.open(tmp_path / "store") as eng:
        assert eng.remove([data / "sounds" / "s1.flac"]) == 1  # no sound model needed to forget a sound
        with pytest.raises(ModelError):
            eng.add_texts(["a new note"])  # the store's sound model cannot load: nothing is written
        assert eng.stats().items == {"image": 4, "text": 2, "audio": 2}


def test_doctor_drops_windows_whose_sound_lost_its_vector(store):
    eng, data, _ = store
    assert next(c for c in eng.doctor(repair=False).checks if c.name == "segments").status == "ok"
    db = sqlite3.connect(eng.store.db_path)  # a vector lost, its windows left behind
    db.execute("DELETE FROM vectors WHERE content_id = (SELECT content_id FROM segments LIMIT 1) AND space_id = "
               "(SELECT space_id FROM segments LIMIT 1)")
    db.commit()
    db.close()
    seen = next(c for c in eng.doctor(repair=False).checks if c.name == "segments")
    assert seen.status == "problem" and "1 segments (sound windows" in seen.detail
    fixed = next(c for c in eng.doctor(repair=True).checks if c.name == "segments")
    assert fixed.status == "repaired"
    assert next(c for c in eng.doctor(repair=False).checks if c.name == "segments").status == "ok"
