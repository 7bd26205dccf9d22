"""Videos end to end: indexed as one item with frames (builtin:shapes) and soundtrack (builtin:tones),
found with the moment, kept in sync like any file, bad files reported while the run goes on."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from mmsearch import Engine
from mmsearch.world.videos import Cue, Shot, write_video
from tests.kit import cli, tone, write_sound

MODELS = ["builtin:shapes", "builtin:tones"]
SAMPLES = Path(__file__).resolve().parents[1] / "samples" / "videos"
TRUTH = {t["file"]: t for t in json.loads((SAMPLES / "truth.json").read_text())}


@pytest.fixture(scope="module")
def sample_store(tmp_path_factory):
    """The bundled sample videos indexed with both built-in models (read-only for the tests here)."""
    root = tmp_path_factory.mktemp("videos")
    folder = root / "videos"
    shutil.copytree(SAMPLES, folder)
    with Engine.open(root / "store", model=MODELS, workers=0) as eng:
        report = eng.index([folder])
    assert report.ok, report.errors
    return root / "store", folder


def _search(store: Path, *args, **kw):
    with Engine.open(store, create=False) as eng:
        return eng.search(*args, **kw)


def _truth_span(file: str, caption: str, kind: str = "shots") -> tuple[float, float]:
    return next((s["start"], s["end"]) for s in TRUTH[file][kind] if s["caption"] == caption)


@pytest.mark.parametrize("caption, file, kind, evidence", [
    ("a blue square", "holiday.mp4", "shots", "seen"),
    ("a red circle", "holiday.mp4", "shots", "seen"),
    ("a cyan circle", "phone.mov", "shots", "seen"),  # stored turned: read upright
    ("a pink cross", "garden.webm", "shots", "seen"),  # a video with no soundtrack
    ("a rising whistle", "holiday.mp4", "sounds", "heard"),
    ("fast beeps", "phone.mov", "sounds", "heard"),
])
def test_a_caption_finds_its_video_and_the_seconds_it_is_on_screen_or_heard(sample_store, caption, file, kind, evidence):
    store, folder = sample_store
    hits = _search(store, caption, type="video", k=3)
    best = hits[0]
    assert Path(best.path).name == file and best.modality == "video"
    start, end = _truth_span(file, caption, kind)
    moment = best.moments[0]
    assert abs(moment.start - start) <= 1.0 and abs(moment.end - end) <= 1.0, (moment, start, end)
    assert moment.evidence == evidence
    assert (best.start, best.end) == (moment.start, moment.end)
    assert start - 1.0 <= moment.peak <= end
    assert best.calibrated > 2.5 and best.calibrated > hits[1].calibrated + 0.5  # ahead of the other videos


def test_a_query_seen_and_heard_at_once_is_carried_by_both(sample_store):
    store, _ = sample_store
    best = _search(store, "a blue square + a rising whistle", type="video")[0]
    assert Path(best.path).name == "holiday.mp4"
    moment = best.moments[0]
    assert moment.evidence == "both" and 3.0 <= moment.start <= 5.0 and moment.end <= 7.0  # the whistle plays 4-6 s


def test_more_moments_are_listed_best_first_and_do_not_overlap(sample_store):
    store, _ = sample_store
    hit = _search(store, "a red circle", type="video", moments=3)[0]
    assert 1 <= len(hit.moments) <= 3
    assert [m.score for m in hit.moments] == sorted((m.score for m in hit.moments), reverse=True)
    for a, b in zip(hit.moments, hit.moments[1:]):
        assert a.end <= b.start or b.end <= a.start


@pytest.mark.parametrize("pooling", ["peak", "mean"])
def test_both_poolings_rank_the_right_video_first(sample_store, pooling):
    """By frames alone (the image model's space), as the text→video literature pools them."""
    store, _ = sample_store
    for caption, file in (("a blue square", "holiday.mp4"), ("a pink cross", "garden.webm"), ("a cyan circle", "phone.mov")):
        hits = _search(store, caption, type="video", pooling=pooling, space="builtin:shapes")
        assert Path(hits[0].path).name == file and hits[0].moments[0].evidence == "seen"


def test_an_image_query_finds_the_video_holding_that_picture_and_when(sample_store, tmp_path):
    from PIL import Image

    from mmsearch.world.videos import picture

    store, _ = sample_store
    Image.fromarray(picture(Shot("square", "blue", 1.0), (128, 96))).save(tmp_path / "frame.png")
    best = _search(store, image=tmp_path / "frame.png", type="video")[0]
    assert Path(best.path).name == "holiday.mp4" and best.moments[0].evidence == "seen"
    assert abs(best.moments[0].start - 3.0) <= 1.0


def test_a_sound_query_finds_where_in_a_video_it_plays(sample_store, tmp_path):
    from mmsearch.world.videos import soundtrack

    store, _ = sample_store
    write_sound(tmp_path / "beeps.wav", soundtrack([Cue("beeps-fast", 0.0, 2.0)], 2.0), 16000)
    best = _search(store, audio=tmp_path / "beeps.wav", type="video")[0]
    assert Path(best.path).name == "phone.mov" and best.moments[0].evidence == "heard"
    assert abs(best.moments[0].start - 4.0) <= 1.0


def test_videos_join_any_and_are_stored_with_what_they_are(sample_store):
    store, _ = sample_store
    assert any(h.modality == "video" for h in _search(store, "a blue square", type="any"))
    assert all(h.modality == "video" for h in _search(store, "a blue square"))  # the store holds only videos
    hit = _search(store, "a cyan circle", type="video")[0]
    assert (hit.width, hit.height) == tuple(TRUTH["phone.mov"]["size"])  # as displayed (rotated)
    assert hit.duration == pytest.approx(TRUTH["phone.mov"]["duration"], abs=0.2)


def test_query_json_and_table_show_the_moment(sample_store):
    store, _ = sample_store
    r = cli("query", "a blue square", "--type", "video", "--store", str(store), "--json", "--no-server", "-k", "1")
    assert r.exit_code == 0, r.output
    hit = json.loads(r.output)[0]
    assert hit["modality"] == "video" and hit["moments"][0]["evidence"] == "seen"
    assert set(hit["moments"][0]) == {"start", "end", "peak", "score", "evidence"}
    r = cli("query", "a blue square", "--type", "video", "--store", str(store), "--no-server", "-k", "1")
    assert "0:03.0–0:06.0 seen" in r.output and "holiday.mp4" in r.output


@pytest.mark.parametrize("args, message", [
    (["--moments", "0"], "moments"),
    (["--pooling", "max"], "pooling"),
])
def test_bad_video_options_are_usage_errors(sample_store, args, message):
    store, _ = sample_store
    r = cli("query", "a blue square", "--store", str(store), "--no-server", *args)
    assert r.exit_code == 2 and message in r.output


# ---- sync ----------------------------------------------------------------------------------------
def _two_videos(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    write_video(folder / "a.mp4", [Shot("circle", "red", 2.0), Shot("square", "blue", 2.0)],
                cues=[Cue("sweep-up", 2.0, 4.0)], size=(64, 48))
    write_video(folder / "b.mkv", [Shot("star", "yellow", 3.0)], size=(64, 48))


def test_moved_videos_cost_nothing_removed_ones_leave_no_moment_changed_ones_are_embedded_again(tmp_path):
    folder = tmp_path / "v"
    _two_videos(folder)
    with Engine.open(tmp_path / "store", model=MODELS, workers=0) as eng:
        first = eng.index([folder])
        assert first.ok and first.indexed == 2
        (folder / "a.mp4").rename(folder / "moved.mp4")
        moved = eng.index([folder])
        assert (moved.indexed, moved.reused, moved.unchanged) == (0, 1, 1)
        assert Path(eng.search("a blue square", type="video")[0].path).name == "moved.mp4"
        (folder / "moved.mp4").unlink()
        gone = eng.index([folder])
        assert gone.removed == 1
        assert {Path(h.path).name for h in eng.search("a blue square", type="video")} == {"b.mkv"}
        write_video(folder / "b.mkv", [Shot("square", "blue", 3.0)], size=(64, 48))  # changed in place
        changed = eng.index([folder])
        assert changed.indexed == 1
        assert Path(eng.search("a blue square", type="video")[0].path).name == "b.mkv"
        again = eng.index([folder])
        assert (again.indexed, again.unchanged) == (0, 1)  # nothing to do, in either space
        report = eng.doctor(repair=False)
    assert report.ok, report.problems


def test_a_lone_video_embedded_while_it_decodes_equals_one_decoded_by_the_workers(tmp_path):
    """One video is decoded in the indexing process with its frames embedded as they come; two go to a
    decode worker and are embedded whole: the same moments and scores either way."""
    alone, pair = tmp_path / "alone", tmp_path / "pair"
    _two_videos(pair)
    alone.mkdir()
    shutil.copy(pair / "a.mp4", alone / "a.mp4")
    found = []
    for folder, workers in ((alone, 0), (pair, 1)):
        with Engine.open(tmp_path / f"store-{folder.name}", model=MODELS, workers=workers) as eng:
            assert eng.index([folder]).indexed == len(list(folder.iterdir()))
            hit = next(h for h in eng.search("a blue square", type="video", k=2) if h.path.endswith("a.mp4"))
            found.append((hit.moments, hit.score))
    (m1, s1), (m2, s2) = found
    assert [(m.start, m.end, m.peak, m.evidence) for m in m1] == [(m.start, m.end, m.peak, m.evidence) for m in m2]
    assert s1 == pytest.approx(s2, abs=1e-4)  # the raw cosine (calibration differs: one store holds more)


def test_a_lone_videos_frames_reach_the_model_in_steps_while_it_decodes(tmp_path):
    from mmsearch.ingest.video import SINK_ROWS
    from tests.kit import counting_encoders

    folder = tmp_path / "v"
    folder.mkdir()
    shots = [Shot(("circle", "square", "star")[i % 3], ("red", "blue", "green", "yellow")[i % 4], 2.0, seed=i)
             for i in range(2 * SINK_ROWS + 3)]  # a new picture every 2 s: one frame kept per shot
    write_video(folder / "long.mp4", shots, size=(64, 48), fps=4)
    with counting_encoders() as rec:
        with Engine.open(tmp_path / "store", model=rec.spec("builtin:shapes"), workers=0) as eng:
            assert eng.index([folder]).indexed == 1
        (enc,) = rec.made
    assert enc.image_batches == [SINK_ROWS, SINK_ROWS, 3]  # in steps as they decoded, not in one call at the end


def test_a_silent_video_is_settled_in_the_sound_space_without_a_vector(tmp_path):
    folder = tmp_path / "v"
    folder.mkdir()
    write_video(folder / "quiet.mp4", [Shot("star", "yellow", 2.0)], size=(64, 48))
    with Engine.open(tmp_path / "store", model=MODELS, workers=0) as eng:
        assert eng.index([folder]).indexed == 1
        stats = {sp.spec: sp.vectors for sp in eng.stats().spaces}
        assert stats == {"builtin:shapes": 1, "builtin:tones": 0}
        again = eng.index([folder])
    assert (again.indexed, again.unchanged, again.failed) == (0, 1, 0)


# ---- bad input -------------------------------------------------------------------------------------
def test_bad_videos_are_per_file_errors_and_a_sound_in_a_video_container_is_a_sound(tmp_path):
    folder = tmp_path / "v"
    _two_videos(folder)
    data = (folder / "a.mp4").read_bytes()
    (folder / "cut.mp4").write_bytes(data[: len(data) // 3])
    (folder / "empty.mov").write_bytes(b"")
    (folder / "notes.avi").write_text("not a video at all\n" * 20)
    write_video(tmp_path / "h264.mp4", [Shot("star", "yellow", 1.0)], size=(64, 48))  # its codec renamed: unknown
    data_mp4 = bytearray((tmp_path / "h264.mp4").read_bytes())
    at = data_mp4.index(b"avc1", data_mp4.index(b"stsd"))
    data_mp4[at : at + 4] = b"zzzz"
    (folder / "unknown-codec.mp4").write_bytes(bytes(data_mp4))
    write_sound(tmp_path / "s.wav", tone(2.0, 16000, 660.0), 16000)
    import av

    with av.open(str(tmp_path / "s.wav")) as src, av.open(str(folder / "only-sound.mp4"), "w") as dst:
        out = dst.add_stream("aac", rate=16000)
        for frame in src.decode(audio=0):
            frame.pts = None
            for packet in out.encode(frame):
                dst.mux(packet)
        for packet in out.encode():
            dst.mux(packet)
    with Engine.open(tmp_path / "store", model=MODELS, workers=0) as eng:
        report = eng.index([folder])
        errors = {Path(p).name: why for p, why in report.errors}
        assert set(errors) == {"cut.mp4", "empty.mov", "notes.avi", "unknown-codec.mp4"}, errors
        assert "unsupported video codec" in errors["unknown-codec.mp4"]
        assert all(errors.values())
        assert report.indexed == 3  # a.mp4, b.mkv, and the sound in an mp4
        assert eng.stats().items == {"video": 2, "audio": 1}
        sound = eng.search("a high tone", type="audio")
        assert [Path(h.path).name for h in sound] == ["only-sound.mp4"]
        again = eng.index([folder])
    assert again.indexed == 0 and again.unchanged == 3


def test_a_video_failing_in_one_space_keeps_that_error_while_the_other_space_indexes_it(tmp_path):
    """The image model is gone from this machine; the sound model still loads. A new video's soundtrack is
    indexed, and its frames' failure stays recorded against the image model (not wiped out by the sound
    space's success) until the model is back and the frames are embedded."""
    from tests.kit import make_tiny_model

    clip = make_tiny_model(tmp_path / "m" / "clip")
    folder = tmp_path / "v"
    _two_videos(folder)
    spec = f"local-dir:{clip}"
    with Engine.open(tmp_path / "store", model=[spec, "builtin:tones"], workers=0) as eng:
        assert eng.index([folder]).ok
    clip.rename(tmp_path / "m" / "away")
    write_video(folder / "c.mp4", [Shot("cross", "pink", 2.0)], cues=[Cue("sweep-up", 0.0, 2.0)], size=(64, 48))
    for _ in range(2):  # the record is the same after the next run too
        with Engine.open(tmp_path / "store", workers=0) as eng:
            report = eng.index([folder])
            (err,) = eng.errors()
            heard = eng.search("a rising whistle", type="video", space="builtin:tones")
        assert [Path(p).name for p, _ in report.errors] == ["c.mp4"]
        assert Path(err.path).name == "c.mp4" and err.space == spec and "not embedded" in err.reason
        assert "c.mp4" in {Path(h.path).name for h in heard}  # its soundtrack is searchable meanwhile
    shown = cli("errors", "--store", str(tmp_path / "store"), "--json")
    assert shown.exit_code == 0 and json.loads(shown.stdout) == [{"path": err.path, "reason": err.reason, "space": spec}]
    (tmp_path / "m" / "away").rename(clip)
    with Engine.open(tmp_path / "store", workers=0) as eng:
        back = eng.index([folder])
        assert back.ok and back.indexed == 1 and eng.errors() == []


def test_a_model_with_no_space_yet_keeps_its_failure_though_a_later_model_indexes_the_file(tmp_path, monkeypatch):
    """A store that holds only sounds gets a video: the default image model (no space yet, and made to fail
    here through the registry, whatever this machine has cached) fails its frames before the store's sound
    model indexes its soundtrack. The failure is recorded after every model has had its turn, so the
    soundtrack's success does not wipe it out."""
    from mmsearch.config import DEFAULT_MODELS
    from mmsearch.encoders.registry import registered
    from mmsearch.errors import ModelError

    def unloadable(spec, rest, **kw):
        raise ModelError(f"{spec}: no weights on this machine")

    monkeypatch.setitem(DEFAULT_MODELS, "image", "unloadable:frames")
    folder = tmp_path / "v"
    folder.mkdir()
    write_sound(folder / "beep.wav", tone(1.0, 16000, 880.0), 16000)
    with Engine.open(tmp_path / "store", model="builtin:tones", workers=0) as eng:
        assert eng.index([folder]).ok
    write_video(folder / "c.mp4", [Shot("cross", "pink", 2.0)], cues=[Cue("sweep-up", 0.0, 2.0)], size=(64, 48))
    with registered("unloadable", unloadable), Engine.open(tmp_path / "store", workers=0) as eng:
        report = eng.index([folder])
        errors = eng.errors()
        heard = eng.search("a rising whistle", type="video")
    assert [Path(p).name for p, _ in report.errors] == ["c.mp4"]
    (err,) = errors
    assert Path(err.path).name == "c.mp4" and "not embedded" in err.reason and "unloadable:frames" in err.reason
    assert [Path(h.path).name for h in heard] == ["c.mp4"]  # its soundtrack is searchable meanwhile


def test_a_damaged_video_is_one_error_about_the_file_not_one_per_model(tmp_path):
    folder = tmp_path / "v"
    folder.mkdir()
    (folder / "empty.mov").write_bytes(b"")
    (folder / "notes.avi").write_text("not a video at all\n" * 20)
    with Engine.open(tmp_path / "store", model=MODELS, workers=0) as eng:
        report = eng.index([folder])
        errors = eng.errors()
        count = eng.stats().errors
    assert sorted(Path(p).name for p, _ in report.errors) == ["empty.mov", "notes.avi"]
    assert sorted(Path(e.path).name for e in errors) == ["empty.mov", "notes.avi"] and count == 2
    assert all(e.space is None for e in errors)  # failed alike in both models: about the file itself


def _index_in_child(store: Path, folder: Path, query: str) -> tuple[list[str], int]:
    """Index ``folder`` and run one video query in a fresh process, decoding in it too (no workers, so its
    peak RSS is the whole run's): (its printed line, peak RSS in KiB)."""
    code = ("import resource\nfrom mmsearch import Engine\n"
            f"with Engine.open({str(store)!r}, model={MODELS!r}, workers=0) as eng:\n"
            f"    r = eng.index([{str(folder)!r}])\n"
            "    assert r.ok, r.errors\n"
            f"    h = eng.search({query!r}, type='video')[0]\n"
            "    print(h.duration, h.moments[0].start)\n"
            "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    lines = done.stdout.split("\n")
    return lines[0].split(), int(lines[1])


def test_an_hour_long_video_indexes_in_bounded_memory(tmp_path):
    """One hour at 1 fps with a soundtrack: sampled sparsely (at most 600 frames), the whole soundtrack
    windowed, and the run's peak memory (decode, models, store) within a few hundred MB of
    a one-minute video's (what is in memory at once is one video's frames and windows)."""
    shots = [Shot(("circle", "square", "star", "triangle")[i % 4], ("red", "blue", "yellow", "green")[i % 4], 300.0)
             for i in range(12)]
    (tmp_path / "long").mkdir()
    write_video(tmp_path / "long" / "long.mp4", shots, cues=[Cue("sweep-up", 1800.0, 1804.0)], fps=1, size=(64, 48), gop=10)
    (tmp_path / "short").mkdir()
    write_video(tmp_path / "short" / "short.mp4", [Shot("circle", "red", 30.0), Shot("square", "blue", 30.0)],
                cues=[Cue("sweep-up", 30.0, 34.0)], fps=1, size=(64, 48), gop=10)
    _, short_kib = _index_in_child(tmp_path / "s2", tmp_path / "short", "a rising whistle")  # first: the models'
    (duration, start), long_kib = _index_in_child(tmp_path / "s1", tmp_path / "long", "a rising whistle")  # exports cached
    assert float(duration) == pytest.approx(3600, abs=2) and abs(float(start) - 1800) <= 12
    assert long_kib - short_kib < 400 * 1024, f"peak RSS {long_kib >> 10} MiB, a minute's {short_kib >> 10} MiB"


# ---- found by review ----------------------------------------------------------------------------------
def _live_recording(src: Path, dst: Path) -> None:
    """``src`` remuxed as a live recorder writes Matroska: to a stream that cannot seek, so no seek
    index and no duration."""
    import io

    import av

    class Pipe(io.RawIOBase):
        def __init__(self, f):
            self.f = f

        def writable(self):
            return True

        def write(self, b):
            return self.f.write(b)

    with av.open(str(src)) as i, open(dst, "wb") as f:
        o = av.open(Pipe(f), "w", format="matroska")
        s = o.add_stream_from_template(i.streams.video[0])
        for p in i.demux(i.streams.video[0]):
            if p.size:  # not the demuxer's final empty packet
                p.stream = s
                o.mux(p)
        o.close()


def test_a_live_recording_without_seek_index_or_duration_keeps_its_start_and_its_times(tmp_path):
    folder = tmp_path / "v"
    folder.mkdir()
    shots = [Shot("circle", "red", 4), Shot("square", "blue", 4), Shot("star", "yellow", 4), Shot("circle", "green", 4)]
    write_video(tmp_path / "src.mkv", shots, size=(64, 48))
    _live_recording(tmp_path / "src.mkv", folder / "live.mkv")
    with Engine.open(tmp_path / "store", model=["builtin:shapes"], workers=0) as eng:
        assert eng.index([folder]).ok
        for caption, start in (("a red circle", 0.0), ("a yellow star", 8.0)):
            moment = eng.search(caption, type="video")[0].moments[0]
            assert abs(moment.start - start) <= 1.0 and moment.end - moment.start >= 2.0, (caption, moment)


def test_a_long_video_filling_the_moment_pool_leaves_room_for_the_others(tmp_path, monkeypatch):
    from mmsearch.query import moments

    monkeypatch.setattr(moments, "POOL", 8)  # a small first pool: one video's frames fill it
    folder = tmp_path / "v"
    folder.mkdir()
    write_video(folder / "squares.mp4", [Shot("square", "blue", 1.0, position=p, seed=i) for i, p in
                                          enumerate(["center", "left", "right", "top", "bottom"] * 4)], size=(64, 48))
    for i, (shape, colour) in enumerate([("circle", "red"), ("star", "yellow"), ("triangle", "green")]):
        write_video(folder / f"other{i}.mp4", [Shot(shape, colour, 2.0)], size=(64, 48))
    with Engine.open(tmp_path / "store", model=["builtin:shapes"], workers=0) as eng:
        assert eng.index([folder]).ok
        hits = eng.search("a blue square", type="video", k=4)
    assert len(hits) == 4 and Path(hits[0].path).name == "squares.mp4"


def test_an_indexed_video_is_an_example_and_a_raw_vector_ranks_videos_by_similarity(sample_store):
    store, folder = sample_store
    with Engine.open(store, create=False) as eng:
        like = eng.search(like=folder / "phone.mov", type="video")
        assert Path(like[0].path).name == "phone.mov"
        vec = eng.encoder("builtin:shapes").embed_texts(["a cyan circle"])[0]
        raw = eng.search(vector=vec, space="builtin:shapes", type="video")
    assert Path(raw[0].path).name == "phone.mov" and [h.score for h in raw] == sorted((h.score for h in raw), reverse=True)
    assert abs(raw[0].moments[0].start - 4.0) <= 1.0


def test_videos_without_a_sound_model_are_indexed_by_frames_and_settled(tmp_path):
    """No --model, a store with only an image model: the default sound model (not available offline) is not
    needed for the videos' soundtracks, so nothing fails and a second run has nothing to do."""
    folder = tmp_path / "v"
    _two_videos(folder)
    with Engine.open(tmp_path / "store", model=["builtin:shapes"], workers=0) as eng:
        assert eng.index([folder]).ok
    with Engine.open(tmp_path / "store", workers=0) as eng:
        again = eng.index([folder])
    assert again.ok and (again.indexed, again.unchanged, again.failed) == (0, 2, 0)


def test_a_video_and_its_re_encode_are_near_duplicates(tmp_path):
    folder = tmp_path / "v"
    folder.mkdir()
    shots = [Shot("circle", "red", 2.0), Shot("square", "blue", 2.0)]
    write_video(folder / "clip.mp4", shots, size=(128, 96))
    write_video(folder / "clip-small.webm", shots, size=(64, 48))  # another size, codec and container
    write_video(folder / "other.mp4", [Shot("star", "yellow", 2.0), Shot("triangle", "green", 2.0)], size=(128, 96))
    with Engine.open(tmp_path / "store", model=MODELS, workers=0) as eng:
        assert eng.index([folder]).ok
        clusters = eng.dups(type="video", threshold=0.9)
    assert [sorted(Path(m.paths[0]).name for m in c.members) for c in clusters] == [["clip-small.webm", "clip.mp4"]]
    assert clusters[0].keep.endswith("clip.mp4") and clusters[0].space == "builtin:shapes"  # more pixels; by frames


def test_collapsing_duplicates_compares_videos_by_their_frames_whatever_found_them(tmp_path):
    """A sound query finds videos by their soundtracks alone. Two different videos with one soundtrack both
    stay (heard alike is not the same video); a re-encode folds into its original."""
    from mmsearch.world.videos import SAMPLE_RATE, soundtrack

    folder = tmp_path / "v"
    folder.mkdir()
    whistle = [Cue("sweep-up", 0.5, 2.5)]
    write_video(folder / "beach.mp4", [Shot("circle", "red", 3.0)], cues=whistle, size=(128, 96))
    write_video(folder / "beach-small.webm", [Shot("circle", "red", 3.0)], cues=whistle, size=(64, 48))
    write_video(folder / "city.mp4", [Shot("star", "yellow", 3.0)], cues=whistle, size=(128, 96))
    query = write_sound(tmp_path / "whistle.wav", soundtrack(whistle, 3.0), SAMPLE_RATE)
    with Engine.open(tmp_path / "store", model=MODELS, workers=0) as eng:
        assert eng.index([folder]).ok
        plain = eng.search(audio=query, type="video", k=3)
        folded = eng.search(audio=query, type="video", k=3, collapse_dups=0.9)
    assert {Path(h.path).name for h in plain} == {"beach.mp4", "beach-small.webm", "city.mp4"}
    assert all(h.moments[0].evidence == "heard" for h in plain)
    names = {Path(h.path).name: h for h in folded}
    assert "city.mp4" in names and len(folded) == 2, [h.path for h in folded]
    kept = next(h for n, h in names.items() if n.startswith("beach"))
    assert [Path(p).name for p in kept.duplicates] == [n for n in ("beach.mp4", "beach-small.webm") if n not in names]


def test_a_video_row_holds_what_each_space_read_of_it(sample_store):
    """The image space writes a video's row first; its soundtrack's rate and channels come from the sound space."""
    from mmsearch.store.store import Store

    store, _ = sample_store
    hits = {Path(h.path).name: h.id for h in _search(store, "a blue square", type="video")}
    st = Store(store)
    try:
        meta = st.content_meta(list(hits.values()))
    finally:
        st.close()
    assert (meta[hits["holiday.mp4"]].sample_rate, meta[hits["holiday.mp4"]].channels) == (16000, 1)
    assert meta[hits["garden.webm"]].sample_rate is None  # no soundtrack


def test_copies_of_a_new_video_are_decoded_and_embedded_once(tmp_path, counting):
    folder = tmp_path / "v"
    folder.mkdir()
    write_video(folder / "a.mp4", [Shot("cross", "pink", 2.0)], size=(64, 48))
    alone = tmp_path / "alone"
    shutil.copytree(folder, alone)
    for name in ("b.mp4", "c.mp4"):
        shutil.copy(folder / "a.mp4", folder / name)
    with Engine.open(tmp_path / "one", model=counting.spec("builtin:shapes"), workers=0) as eng:
        assert eng.index([alone]).ok
    frames = sum(sum(e.image_batches) for e in counting.made)
    with Engine.open(tmp_path / "three", model=counting.spec("builtin:shapes"), workers=0) as eng:
        report = eng.index([folder])
        hit = eng.search("a pink cross", type="video", k=1)[0]
    assert report.ok and (report.indexed, report.reused) == (1, 2), report
    again = sum(sum(e.image_batches) for e in counting.made) - frames
    assert again == frames > 0  # the frames of one video reached the model, not three
    assert sorted(Path(p).name for p in hit.paths) == ["a.mp4", "b.mp4", "c.mp4"]
