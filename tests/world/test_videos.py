"""The videos world: shapes-world shots and tones-world cues written as real video files whose ground
truth is known. Read back through mmsearch.ingest (what indexing reads), and checked against the
built-in models: builtin:shapes finds a shot's frames by its caption, builtin:tones a cue's windows.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

av = pytest.importorskip("av")

from mmsearch.ingest.audio import decode_audio, windows  # noqa: E402
from mmsearch.ingest.pixels import to_batch  # noqa: E402
from mmsearch.ingest.video import frames, probe  # noqa: E402
from mmsearch.world import shapes as W  # noqa: E402
from mmsearch.world import videos as V  # noqa: E402

SAMPLES = Path(__file__).resolve().parents[2] / "samples" / "videos"
SHOTS = [V.Shot("circle", "red", 2.0, seed=1), V.Shot("square", "blue", 2.0, seed=2),
         V.Shot("star", "yellow", 2.0, seed=3)]
CROP = {"kind": "open_clip", "cfg": {"size": [32, 32], "mean": [0.5] * 3, "std": [0.5] * 3}}


def whole(size: tuple[int, int]) -> dict:
    """A recipe that hands back the whole displayed frame, unscaled."""
    return {"kind": "open_clip", "cfg": {"size": [size[1], size[0]], "resize_mode": "squash"}}


def nearest_colour(pixels: np.ndarray) -> str:
    """The shapes-world colour nearest the middle of a frame (where a large centred shape is)."""
    h, w = pixels.shape[:2]
    mid = pixels[h // 2 - 2 : h // 2 + 2, w // 2 - 2 : w // 2 + 2].reshape(-1, 3).mean(axis=0)
    return min(W.COLOUR_RGB, key=lambda c: np.abs(np.asarray(W.COLOUR_RGB[c]) - mid).sum())


def needs(*codecs: str) -> None:
    for codec in codecs:
        if not V.has_encoder(codec):
            pytest.skip(f"this FFmpeg has no {codec} encoder")


@pytest.mark.parametrize("suffix, codec, audio_codec, size", [
    (".mp4", None, None, (128, 96)), (".mkv", None, None, (96, 64)), (".mov", "libx265", None, (96, 64)),
    (".webm", None, None, (96, 64)), (".webm", "libsvtav1", None, (64, 64)), (".avi", None, None, (320, 240)),
    (".mkv", "libx264", "flac", (96, 64)),
])
def test_each_container_and_codec_decodes_with_its_ground_truth(tmp_path, suffix, codec, audio_codec, size):
    path = tmp_path / f"v{suffix}"
    needs(codec or V.CONTAINERS[suffix][0], audio_codec or V.CONTAINERS[suffix][1])
    truth = V.write_video(path, SHOTS, cues=[V.Cue("sweep-up", 2.0, 4.0)], size=size, codec=codec,
                          audio_codec=audio_codec)
    info, got = frames(str(path), CROP, every=0.5)
    got = list(got)
    assert (info.width, info.height, info.audio) == (*size, True)
    assert info.duration == pytest.approx(6.0, abs=0.15) and info.fps == pytest.approx(10.0)
    assert len(got) >= 3 and {truth.caption_at(f.time) for f in got} == {s.caption for s in SHOTS}
    for f in got:  # every sampled frame shows the colour of the shot the ground truth puts there
        assert W.single_caption(nearest_colour(f.pixels), truth.caption_at(f.time).split()[-1]) == \
            truth.caption_at(f.time)
    sound = decode_audio(str(path), 16000).samples
    assert len(sound) / 16000 == pytest.approx(6.0, abs=0.15)


@pytest.mark.parametrize("fps, seconds", [(5, [1.0, 1.0]), (10, [2.0, 3.0, 1.0]), (24, [0.5, 1.5]), (30, [2.0])])
def test_frame_rate_and_duration_are_as_asked(tmp_path, fps, seconds):
    shots = [V.Shot("hexagon", "purple", s, seed=i) for i, s in enumerate(seconds)]
    path = tmp_path / "rate.mp4"
    truth = V.write_video(path, shots, fps=fps, size=(64, 48))
    with av.open(str(path)) as c:
        n = sum(1 for _ in c.decode(video=0))
    assert n == round(sum(seconds) * fps) and truth.fps == fps and truth.duration == pytest.approx(sum(seconds))
    info = probe(str(path))
    assert info.fps == pytest.approx(fps) and info.duration == pytest.approx(sum(seconds), abs=1.5 / fps)
    assert info.audio is False and truth.audio_codec is None and truth.sounds == []


@pytest.mark.parametrize("suffix", [".mp4", ".mov"])
@pytest.mark.parametrize("rotate_cw, size", [(0, (96, 64)), (90, (64, 96)), (180, (96, 64)), (270, (64, 96))])
def test_rotated_videos_show_the_picture_upright(tmp_path, suffix, rotate_cw, size):
    shot = V.Shot("triangle", "green", 1.0, position="top", seed=5)  # not symmetric: a wrong turn shows
    path = tmp_path / f"phone{suffix}"
    truth = V.write_video(path, [shot], size=size, rotate_cw=rotate_cw)
    info, got = frames(str(path), whole(size))
    shown = next(iter(got)).pixels.astype(int)
    assert (info.rotation, info.width, info.height, truth.rotation) == (rotate_cw, *size, rotate_cw)
    with av.open(str(path)) as c:  # stored as the camera saw it: turned the other way
        stored = c.streams.video[0].codec_context
        assert (stored.width, stored.height) == (size if rotate_cw in (0, 180) else size[::-1])
    assert np.abs(shown - V.picture(shot, size).astype(int)).mean() < 6


def test_a_picture_is_the_shapes_scene_centred_at_the_shorter_side():
    shot = V.Shot("cross", "pink", 1.0, background="noise", seed=9)
    pic = V.picture(shot, (96, 64))
    scene = W.render_scene([{"shape": "cross", "colour": "pink", "size": "large", "position": "center"}],
                           size=64, seed=9, background="noise")
    assert pic.shape == (64, 96, 3) and np.array_equal(pic[:, 16:80], np.asarray(scene.image))
    assert (pic[:, :16] == pic[:, 16:17]).all()  # the margins repeat the edge


@pytest.mark.parametrize("cues, loud, quiet", [
    ([V.Cue("sweep-up", 1.0, 3.0)], [(1.0, 3.0)], [(0.0, 1.0), (3.0, 6.0)]),
    ([V.Cue("noise-white", 0.0, 1.0), V.Cue("pluck", 4.5, 6.0)], [(0.0, 1.0)], [(1.0, 4.5)]),
    ([V.Cue("organ", 0.5, 5.5)], [(0.5, 5.5)], [(0.0, 0.5)]),  # longer than one tones clip: filled end to end
])
def test_the_soundtrack_plays_the_cues_and_is_silent_elsewhere(tmp_path, cues, loud, quiet):
    truth = V.write_video(tmp_path / "s.mkv", SHOTS, cues=cues, audio_codec="flac")
    x = decode_audio(str(tmp_path / "s.mkv"), 16000).samples
    rms = lambda a, b: float(np.sqrt(np.mean(x[int(a * 16000) + 400 : int(b * 16000) - 400] ** 2)))  # noqa: E731
    assert all(rms(a, b) > 0.05 for a, b in loud) and all(rms(a, b) < 1e-3 for a, b in quiet)
    assert [(s.start, s.end, s.label) for s in truth.sounds] == sorted((c.start, c.end, c.cls) for c in cues)
    assert truth.sound_at(loud[0][0] + 0.1) == cues[0].caption and truth.sound_at(quiet[0][0] + 0.1) is None


@pytest.mark.parametrize("t, caption", [(0.0, "a red circle"), (1.99, "a red circle"), (2.0, "a blue square"),
                                        (5.99, "a yellow star"), (6.0, None)])
def test_ground_truth_tiles_the_video_shot_by_shot(tmp_path, t, caption):
    truth = V.write_video(tmp_path / "t.mp4", SHOTS, size=(64, 48))
    assert [(s.start, s.end) for s in truth.shots] == [(0.0, 2.0), (2.0, 4.0), (4.0, 6.0)]
    assert truth.caption_at(t) == caption and json.loads(truth.to_json())["shots"][1]["label"] == "blue square"


@pytest.mark.parametrize("kwargs, error, match", [
    ({"codec": "no-such-encoder"}, V.MissingEncoder, "no 'no-such-encoder' encoder"),
    ({"cues": [V.Cue("no-such-sound", 0, 1)]}, ValueError, "unknown tone class"),
    ({"cues": [V.Cue("pluck", 5.0, 4.0)]}, ValueError, "empty or outside"),
    ({"size": (95, 64)}, ValueError, "even numbers"),
    ({"rotate_cw": 45}, ValueError, "0, 90, 180 or 270"),
    ({"rotate_cw": 90, "path": "v.mkv"}, ValueError, "only into MP4/MOV"),
    ({"path": "v.flv"}, ValueError, "no default codec"),
])
def test_bad_requests_fail_clearly(tmp_path, kwargs, error, match):
    path = tmp_path / kwargs.pop("path", "v.mp4")
    with pytest.raises(error, match=match):
        V.write_video(path, SHOTS, **kwargs)


def test_the_bundled_samples_match_their_ground_truth():
    truths = json.loads((SAMPLES / "truth.json").read_text(encoding="utf-8"))
    assert {t["file"] for t in truths} == set(V.SAMPLES)
    assert sum((SAMPLES / t["file"]).stat().st_size for t in truths) < 1_000_000
    for t in truths:
        info = probe(str(SAMPLES / t["file"]))
        assert (info.width, info.height, info.rotation) == (*t["size"], t["rotation"])
        assert info.duration == pytest.approx(t["duration"], abs=0.15) and info.audio == bool(t["sounds"])
        assert t["shots"][-1]["end"] == t["duration"]
        assert all(s["caption"] in (SAMPLES / "README").read_text(encoding="utf-8") for s in t["shots"] + t["sounds"])


# ---- the built-in models recognise what the ground truth says ----------------------------------------
@pytest.fixture(scope="module")
def shapes_model():
    from mmsearch.encoders.registry import load_encoder

    return load_encoder("builtin:shapes", device="cpu")


@pytest.fixture(scope="module")
def tones_model():
    from mmsearch.encoders.registry import load_encoder

    return load_encoder("builtin:tones", device="cpu")


SIX = [("circle", "red"), ("square", "blue"), ("star", "yellow"), ("triangle", "green"), ("hexagon", "purple"),
       ("cross", "orange")]


@pytest.mark.parametrize("suffix, size, rotate_cw, background, shape_size", [
    (".mp4", (128, 96), 0, "light", "large"), (".webm", (96, 64), 0, "dark", "large"),
    (".mov", (96, 128), 90, "noise", "large"), (".avi", (320, 240), 0, "gradient", "small"),
])
def test_builtin_shapes_finds_each_shot_by_its_caption(tmp_path, shapes_model, suffix, size, rotate_cw, background,
                                                       shape_size):
    needs(V.CONTAINERS[suffix][0])
    shots = [V.Shot(s, c, 1.5, size=shape_size, background=background, seed=i) for i, (s, c) in enumerate(SIX)]
    truth = V.write_video(tmp_path / f"v{suffix}", shots, size=size, rotate_cw=rotate_cw)
    recipe = shapes_model.image_recipe()
    _, got = frames(str(tmp_path / f"v{suffix}"), recipe, every=0.5)
    got = list(got)
    x = shapes_model.embed_image_batch(to_batch([f.pixels for f in got], recipe))
    on_screen = np.array([truth.caption_at(f.time) for f in got])
    for shot in shots:
        cos = x @ shapes_model.embed_texts([shot.caption])[0]
        margin = cos[on_screen == shot.caption].min() - cos[on_screen != shot.caption].max()
        print(f"\n{suffix} {shot.caption!r}: its frames above the others by {margin:.3f}", end="")
        assert margin > 0.2, (shot.caption, margin)  # measured 0.44-0.63 (mp4, webm, rotated mov, avi)


CUES = [V.Cue("sweep-down", 0.0, 2.0), V.Cue("noise-white", 2.0, 4.0), V.Cue("sweep-up", 6.0, 8.0),
        V.Cue("beeps-fast", 8.0, 10.0), V.Cue("siren", 10.0, 12.0), V.Cue("sweep-up", 12.0, 15.0, seed=3)]


@pytest.mark.parametrize("suffix", [".mp4", ".webm", ".avi"])
@pytest.mark.parametrize("query, cls", [("a rising whistle", "sweep-up"), ("white noise", "noise-white"),
                                        ("fast beeps", "beeps-fast")])
def test_builtin_tones_finds_the_cue_windows_by_their_caption(tmp_path, tones_model, suffix, query, cls):
    needs(*V.CONTAINERS[suffix])
    truth = V.write_video(tmp_path / f"s{suffix}", [V.Shot("circle", "red", 15.0)], cues=CUES)
    samples = decode_audio(str(tmp_path / f"s{suffix}"), 16000).samples
    feats, spans = windows(samples, tones_model.audio_recipe())
    cos = tones_model.embed_audio_batch(np.ascontiguousarray(feats)) @ tones_model.embed_texts([query])[0]
    heard = np.array([next((s.label for s in truth.sounds if s.start <= (a + b) / 2 < s.end), "")
                      for a, b in spans])
    margin = cos[heard == cls].min() - cos[heard != cls].max()
    print(f"\n{suffix} {query!r}: its windows above the others by {margin:.3f}", end="")
    assert margin > 0.1, (query, margin)  # measured 0.14 (webm: Opus) to 0.47


@pytest.mark.parametrize("file, query", [("holiday.mp4", "a blue square"), ("holiday.mp4", "a yellow star"),
                                         ("garden.webm", "a purple hexagon"), ("phone.mov", "a cyan circle")])
def test_the_bundled_samples_show_what_their_ground_truth_says(shapes_model, file, query):
    truth = next(t for t in json.loads((SAMPLES / "truth.json").read_text(encoding="utf-8")) if t["file"] == file)
    recipe = shapes_model.image_recipe()
    _, got = frames(str(SAMPLES / file), recipe, every=0.5)
    got = list(got)
    cos = shapes_model.embed_image_batch(to_batch([f.pixels for f in got], recipe)) @ \
        shapes_model.embed_texts([query])[0]
    shot = next(s for s in truth["shots"] if s["caption"] == query)
    best = got[int(np.argmax(cos))].time
    assert shot["start"] <= best < shot["end"]


@pytest.mark.parametrize("file, query", [("holiday.mp4", "a rising whistle"), ("phone.mov", "fast beeps")])
def test_the_bundled_samples_sound_as_their_ground_truth_says(tones_model, file, query):
    truth = next(t for t in json.loads((SAMPLES / "truth.json").read_text(encoding="utf-8")) if t["file"] == file)
    feats, spans = windows(decode_audio(str(SAMPLES / file), 16000).samples, tones_model.audio_recipe())
    cos = tones_model.embed_audio_batch(np.ascontiguousarray(feats)) @ tones_model.embed_texts([query])[0]
    (cue,) = [s for s in truth["sounds"] if s["caption"] == query]
    a, b = spans[int(np.argmax(cos))]
    print(f"\n{file} {query!r}: best window {a:.0f}-{b:.0f} s, cosines {[round(float(c), 2) for c in cos]}", end="")
    assert cue["start"] <= (a + b) / 2 < cue["end"]
