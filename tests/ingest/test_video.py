"""Reading videos: frames sampled by time, straight to the model's crop (groundwork for video search).

Every video here is generated with PyAV (tests/kit.py write_video): solid-colour scenes whose times
are known, in the containers and codecs the installed FFmpeg has.
"""

from __future__ import annotations

import numpy as np
import pytest

av = pytest.importorskip("av")

from mmsearch.ingest.decode import BadInput  # noqa: E402
from mmsearch.ingest.video import NoVideoStream, frames, probe, spans  # noqa: E402
from tests.kit import tone, write_sound, write_video  # noqa: E402

RECIPE = {"kind": "open_clip", "cfg": {"size": [32, 32], "mode": "RGB", "mean": [0.5] * 3, "std": [0.5] * 3,
                                        "interpolation": "bicubic", "resize_mode": "shortest"}}
RED, BLUE, GREEN = (255, 0, 0), (0, 0, 255), (0, 255, 0)
SCENES = [(2.0, RED), (2.0, BLUE), (2.0, GREEN)]


def sampled(path, **kw):
    """(info, frames) sampled every second unless ``every`` says otherwise (the mechanism at a round interval;
    the default, 1.5 s, is a setting)."""
    kw.setdefault("every", 1.0)
    info, it = frames(str(path), RECIPE, **kw)
    return info, list(it)


def colour(pixels: np.ndarray) -> str:
    r, g, b = pixels.reshape(-1, 3).mean(axis=0)
    return max((("red", r), ("green", g), ("blue", b)), key=lambda t: t[1])[0]


@pytest.mark.parametrize("suffix, codec", [
    (".mp4", "libx264"), (".mkv", "libx264"), (".mov", "libx265"), (".webm", "libvpx-vp9"),
    (".webm", "libsvtav1"), (".avi", "mpeg4"),
])
def test_each_scene_is_one_frame_at_the_second_it_starts(tmp_path, suffix, codec):
    if codec not in av.codecs_available:
        pytest.skip(f"this FFmpeg has no {codec} encoder")
    path = write_video(tmp_path / f"scenes{suffix}", SCENES, size=(64, 64) if codec == "libsvtav1" else (96, 64),
                       codec=codec)
    info, got = sampled(path)
    assert [colour(f.pixels) for f in got] == ["red", "blue", "green"]  # a static shot costs one frame
    # skipping frames no other frame needs, a sample may land up to a B-frame run (x265: 4 frames) late
    assert [f.time for f in got] == pytest.approx([0.0, 2.0, 4.0], abs=0.41)
    assert all(f.pixels.shape == (32, 32, 3) and f.pixels.dtype == np.uint8 for f in got)
    assert info.duration == pytest.approx(6.0, abs=0.2)
    assert suffix == ".avi" or info.fps == pytest.approx(10.0)  # (AVI keeps no timestamps of its own)
    assert spans([f.time for f in got], info.duration)[1] == pytest.approx((2.0, 4.0), abs=0.41)


@pytest.mark.parametrize("gop", [1, 10, 60])  # keyframes every frame, every second, every 6 s
def test_far_apart_keyframes_give_the_same_samples(tmp_path, gop):
    path = write_video(tmp_path / "gop.mp4", SCENES, gop=gop)
    _, got = sampled(path)
    assert [(colour(f.pixels), round(f.time)) for f in got] == [("red", 0), ("blue", 2), ("green", 4)]


@pytest.mark.parametrize("gop, every", [(1, 2.0), (10, 2.0), (10, 3.0)])
def test_keyframes_between_samples_are_passed_over_and_samples_still_land_on_time(tmp_path, gop, every):
    colours = [RED, GREEN, BLUE, (255, 255, 0), (0, 255, 255), (255, 0, 255)]
    names = ["red", "green", "blue", None, None, None]
    _, got = sampled(write_video(tmp_path / "keys.mp4", [(1.0, c) for c in colours], gop=gop), every=every)
    assert [f.time for f in got] == pytest.approx([i * every for i in range(int(6 // every))])
    assert [colour(f.pixels) for f in got if names[round(f.time)]] == [n for i, n in enumerate(names)
                                                                        if n and i % every == 0]


def test_changing_frames_are_sampled_about_every_second(tmp_path):
    scenes = [(0.5, (RED, GREEN, BLUE)[i % 3]) for i in range(12)]  # a new picture every half second
    _, got = sampled(write_video(tmp_path / "busy.mp4", scenes))
    times = [f.time for f in got]
    assert len(times) == 6 and np.diff(times) == pytest.approx(1.0, abs=0.31)


def test_a_long_video_is_sampled_more_sparsely_within_the_cap(tmp_path):
    scenes = [(1.0, (i * 4 % 256, 255 - i * 4 % 256, 0)) for i in range(60)]
    info, got = sampled(write_video(tmp_path / "long.mp4", scenes, fps=4), max_frames=10)
    assert len(got) <= 10 and got[-1].time >= 50  # spread over the whole minute, not its first 10 s


def test_variable_frame_rate_is_read_by_timestamps(tmp_path):
    times = [0.0, 0.1, 0.2, 1.7, 1.75, 1.8, 3.9, 4.6, 5.9]  # irregular: a phone dropping frames
    path = write_video(tmp_path / "vfr.mkv", SCENES, times=times)
    _, got = sampled(path)
    assert [(colour(f.pixels), f.time) for f in got] == [("red", 0.0), ("blue", pytest.approx(3.9, abs=0.01)),
                                                          ("green", pytest.approx(4.6, abs=0.01))]


def test_rotation_metadata_turns_the_frames_as_a_phone_shows_them(tmp_path):
    left_red = np.zeros((32, 64, 3), np.uint8)
    left_red[:, :32] = RED
    left_red[:, 32:] = BLUE
    path = write_video(tmp_path / "phone.mp4", [(1.0, left_red)], size=(64, 32), rotate_cw=90)
    info, got = sampled(path)
    assert (info.rotation, info.width, info.height) == (90, 32, 64)
    top, bottom = got[0].pixels[:12], got[0].pixels[-12:]  # turned clockwise: the left half on top
    assert (colour(top), colour(bottom)) == ("red", "blue")


def test_ten_bit_video_comes_out_as_8_bit_rgb(tmp_path):
    path = write_video(tmp_path / "hdr.mp4", [(1.0, (200, 40, 40))], pix_fmt="yuv420p10le")
    _, got = sampled(path)
    assert got[0].pixels.dtype == np.uint8 and np.abs(got[0].pixels[16, 16].astype(int) - (200, 40, 40)).max() < 12


def test_info_names_codec_sound_and_size(tmp_path):
    path = write_video(tmp_path / "with-sound.mp4", SCENES[:1], sound=(tone(2.0, 16000), 16000))
    info = probe(str(path))
    assert (info.codec, info.width, info.height, info.audio) == ("h264", 96, 64, True)


def test_a_sound_in_a_video_container_has_no_video_stream(tmp_path):
    path = write_sound(tmp_path / "voice.m4a", tone(1.0, 16000), 16000)
    with pytest.raises(NoVideoStream, match="only sound"):
        frames(str(path), RECIPE)


@pytest.mark.parametrize("damage", ["empty", "garbage", "truncated"])
def test_bad_files_are_clear_errors_or_keep_what_came_before(tmp_path, damage):
    path = tmp_path / "bad.mp4"
    if damage == "empty":
        path.write_bytes(b"")
    elif damage == "garbage":
        path.write_bytes(b"\x00\x01not a video at all" * 100)
    else:
        good = write_video(tmp_path / "good.mkv", SCENES).read_bytes()
        path = tmp_path / "bad.mkv"
        path.write_bytes(good[: len(good) // 2])  # mkv streams: the first half still decodes
    if damage == "truncated":
        _, got = sampled(path)
        assert [colour(f.pixels) for f in got][:1] == ["red"]
    else:
        with pytest.raises(BadInput):
            sampled(path)


def test_a_sink_gets_the_frames_in_steps_as_they_decode(tmp_path):
    """Decoding in the indexing process, the frames go to a sink (the model) step by step as they decode;
    together they are the frames the whole-video path keeps."""
    from mmsearch.ingest.decode import load
    from mmsearch.ingest.video import SINK_ROWS

    scenes = [(1.0, (i * 9 % 256, 255 - i * 7 % 256, i * 13 % 256)) for i in range(SINK_ROWS + 5)]
    path = str(write_video(tmp_path / "many.mp4", scenes, fps=4))
    every = {"video_every": 1.0}
    whole = load(path, "video", RECIPE, every)
    steps: list[np.ndarray] = []
    streamed = load(path, "video", RECIPE, every, sink=steps.append)
    assert whole.error is None and streamed.error is None
    assert [len(s) for s in steps] == [SINK_ROWS, len(whole.pixels) - SINK_ROWS]
    assert np.array_equal(np.concatenate(steps), whole.pixels) and streamed.pixels is None
    assert streamed.spans == whole.spans and streamed.duration == whole.duration


@pytest.mark.parametrize("every", [1.0, 1.5, 2.0, 2.5])
def test_a_shot_after_the_last_keyframe_is_sampled(tmp_path, every):
    """A short clip: a 1 s shot, a cut (the encoder puts a keyframe there) and a 2 s shot with no keyframe
    after it. Sampling keyframes alone every 1.5 s or 2 s would take the first shot at 0 s, pass over the
    cut's keyframe (inside the first sample's stretch) and never show the second shot."""
    path = write_video(tmp_path / "cut.mp4", [(1.0, RED), (2.0, BLUE)], fps=4)
    _, got = sampled(path, every=every)
    assert [colour(f.pixels) for f in got] == ["red", "blue"]
