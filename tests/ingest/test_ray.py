"""Ingest on Ray (``index --ray``: decode tasks, embed actors): the same store as a local run, and the same
sync semantics."""

from __future__ import annotations

import os
import shutil
import sys

import pytest

from tests.kit import (SAMPLES, all_hits, cli, cli_modules, pid_recording, recorded_pids, unit, write_images,
                       write_texts)

ray = pytest.importorskip("ray")


@pytest.fixture(scope="module", autouse=True)
def cluster():
    """One local Ray runtime with two CPU workers for the module (a sync uses the running one)."""
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def _contents(eng) -> dict[frozenset, float]:
    """Each content's paths → its score against a fixed query (a fingerprint of its vector)."""
    dim = eng.stats().spaces[0].dim
    q = unit(dim)
    return {frozenset(h.paths): h.score for h in eng.search(vector=q, type="any", k=10_000)}


def test_ray_run_matches_the_local_run_and_syncs_like_one(engine_factory, tmp_path):
    data = tmp_path / "data"
    imgs = write_images(data, 40)
    write_texts(data / "notes", ["a red bicycle", "general kenobi"])
    local, remote = engine_factory(tmp_path / "local", workers=0), engine_factory(tmp_path / "ray")
    a, b = local.index([data]), remote.index([data], ray="local")
    assert (a.indexed, b.indexed, b.failed) == (42, 42, 0)
    got, want = _contents(remote), _contents(local)
    assert set(got) == set(want)
    assert max(abs(got[k] - want[k]) for k in want) < 1e-3
    hit = remote.search(image=imgs[3], k=1)[0]
    assert hit.path == str(imgs[3])

    again = remote.index([data], ray="local")
    assert (again.indexed, again.unchanged, again.removed) == (0, 42, 0)
    shutil.move(imgs[0], data / "moved.png")
    imgs[1].unlink()
    write_images(data / "new", 2, seed=9)
    r = remote.index([data], ray="local")
    assert (r.indexed, r.reused, r.removed, r.unchanged) == (2, 1, 2, 40)  # the moved file's old path is removed too, as locally
    assert remote.stats().items == {"image": 41, "text": 2}


def test_an_interrupted_ray_run_keeps_its_batches_and_resumes(engine_factory, tmp_path):
    from mmsearch.errors import IndexInterrupted

    write_images(tmp_path / "data", 40)
    eng = engine_factory()

    def stop(event):
        raise KeyboardInterrupt  # Ctrl-C once the first batch is durable

    with pytest.raises(IndexInterrupted) as stopped:
        eng.index([tmp_path / "data"], ray="local", commit_every=16, on_commit=stop)
    assert stopped.value.report.indexed == 16
    r = eng.index([tmp_path / "data"], ray="local")
    assert (r.unchanged, r.indexed) == (16, 24)


def test_a_bad_file_fails_alone_on_ray(engine_factory, tmp_path):
    data = tmp_path / "data"
    write_images(data, 5)
    (data / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 50)
    told: list[tuple[int, int]] = []
    r = engine_factory().index([data], ray="local", progress=lambda done, total: told.append((done, total)))
    assert (r.indexed, r.failed) == (5, 1)
    assert [p for p, _ in r.errors] == [str(data / "corrupt.png")]
    assert told[0] == (0, 6) and told[-1] == (6, 6)  # progress as a local run tells it
    assert all(a[0] <= b[0] for a, b in zip(told, told[1:]))


def test_the_cli_indexes_with_ray_and_needs_ray_installed(tmp_path, tiny_model, monkeypatch):
    data, store = tmp_path / "data", tmp_path / "store"
    write_images(data, 6)
    # two actors on the module's 2 CPUs: half a CPU each, so a decode task still gets one
    res = cli("index", data, "--store", store, "--model", tiny_model, "--ray", "--ray-actors", "2", "--json")
    assert res.exit_code == 0, res.output
    assert '"indexed": 6' in res.output
    bad = cli("index", data, "--store", store, "--model", tiny_model, "--address", "auto")
    assert bad.exit_code == 2 and "--address needs --ray" in bad.output
    write_images(data, 1, seed=5)
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` fails as when it is not installed
    res = cli("index", data, "--store", store, "--model", tiny_model, "--ray")
    assert res.exit_code == 2 and "pip install 'mmsearch[ray]'" in res.output


def test_every_content_is_embedded_once_whatever_order_ray_returns(engine_factory, tmp_path):
    data = tmp_path / "data"
    write_images(data, 70)  # several chunks of 16, finishing in any order
    shutil.copy(data / "img_0_000.png", data / "dup.png")
    eng = engine_factory()
    r = eng.index([data], ray="local", commit_every=32)
    assert r.indexed + r.reused == 71 and r.failed == 0
    hits = all_hits(eng, "image")
    assert len(hits) == 70 and sum(len(h.paths) for h in hits) == 71


def _heavy_in_worker() -> tuple[bool, list[str]]:
    """Runs in a Ray worker: whether it has decoded, and the heavy modules it has imported."""
    return "mmsearch.ingest.decode" in sys.modules, sorted(m for m in ("torch", "open_clip") if m in sys.modules)


def test_ray_decode_workers_stay_light(engine_factory, tmp_path):
    write_images(tmp_path / "data", 40)
    engine_factory().index([tmp_path / "data"], ray="local")
    seen = ray.get([ray.remote(num_cpus=1)(_heavy_in_worker).remote() for _ in range(6)])
    assert any(decoded for decoded, _ in seen)  # the probes ran where files were decoded
    assert all(heavy == [] for _, heavy in seen)


def test_the_cli_starts_a_local_runtime_when_none_runs(tmp_path, tiny_model):
    write_images(tmp_path / "data", 3)
    rc, _ = cli_modules("index", str(tmp_path / "data"), "--store", str(tmp_path / "s"), "--model", tiny_model,
                        "--ray", "--workers", "1")
    assert rc == 0


def _by_space(eng) -> dict[str, dict[frozenset, float]]:
    """Per space: each content's paths → its score against a fixed query."""
    return {sp.spec: {frozenset(h.paths): h.score for h in all_hits(eng, "any", space=sp.spec)}
            for sp in eng.stats().spaces}


def test_actors_embed_every_kind_as_the_local_run_does(tmp_path):
    """Images, texts, sounds and a video (its frames in the image space, its soundtrack in the sound one),
    embedded on the actors (never in this process), give the local run's store."""
    from mmsearch import Engine

    data = tmp_path / "data"
    (data / "img").mkdir(parents=True)
    for p in sorted((SAMPLES / "shapes" / "images").iterdir())[:6]:
        shutil.copy(p, data / "img")
    for p in sorted((SAMPLES / "sounds").glob("*.wav"))[:2]:
        shutil.copy(p, data)
    shutil.copy(SAMPLES / "videos" / "phone.mov", data)
    write_texts(data / "notes", ["a red square", "a high tone"])
    pids = tmp_path / "pids"
    with pid_recording("pids", pids):
        models = ["pids:builtin:shapes", "pids:builtin:tones"]
        runs = {}
        for name, ray_ in (("local", None), ("ray", "local")):
            pids.unlink(missing_ok=True)
            with Engine.open(tmp_path / name, model=models, device="cpu", workers=0) as eng:
                r = eng.index([data], ray=ray_)
                assert (r.indexed, r.failed) == (11, 0), r.errors
                runs[name] = (_by_space(eng), recorded_pids(pids))
    (want, local_pids), (got, ray_pids) = runs["local"], runs["ray"]
    assert local_pids == {os.getpid()}
    assert ray_pids and os.getpid() not in ray_pids  # the actors embedded, this process did not
    assert got.keys() == want.keys() and len(want) == 2
    for spec in want:
        assert set(got[spec]) == set(want[spec]), spec
        assert max(abs(got[spec][k] - want[spec][k]) for k in want[spec]) < 1e-3, spec


@pytest.mark.parametrize("resources, requested, want", [
    ({"CPU": 2.0}, None, (1, 0.0, 1.0, None, 64)),  # leaves one CPU to decode on
    ({"CPU": 16.0}, None, (4, 0.0, 2.0, None, 64)),  # one actor per 4 CPUs, half the CPUs for decoding
    ({"CPU": 1.0}, None, (1, 0.0, 0.0, None, 64)),  # one CPU: the actor reserves none, decode still runs
    ({"CPU": 2.0}, 2, (2, 0.0, 0.5, None, 64)),  # --ray-actors 2 on 2 CPUs: a CPU still free for decoding
    ({"CPU": 16.0, "GPU": 2.0}, None, (2, 1.0, 1.0, "cuda", 256)),  # one actor per GPU, a bigger batch
    ({"CPU": 2.0, "GPU": 1.0}, 2, (2, 0.5, 0.5, "cuda", 256)),  # more actors than GPUs share them
    ({"CPU": 8.0, "GPU": 0.5}, None, (2, 0.0, 2.0, None, 64)),  # a fraction of a GPU is no GPU actor
])
def test_actor_plan_follows_the_cluster_resources(resources, requested, want):
    from mmsearch.ingest.ray_embed import plan_actors

    p = plan_actors(resources, requested, cpu_batch=64)
    assert (p.count, p.num_gpus, p.num_cpus, p.device, p.batch_size) == want


class _BrokenElsewhere:
    """Wraps a real encoder; embedding fails in any process but the one that loaded it first (the driver)."""

    def __init__(self, inner, home: int) -> None:
        self.inner, self.space, self.home = inner, inner.space, home

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def embed_image_batch(self, pixels):
        if os.getpid() != self.home:
            raise RuntimeError("no such device here")
        return self.inner.embed_image_batch(pixels)


def test_a_model_failing_on_the_actors_fails_its_files_by_name_and_keeps_the_store(engine_factory, tmp_path,
                                                                                 tiny_model):
    from mmsearch.encoders.registry import load_encoder, registered

    data = tmp_path / "data"
    imgs = write_images(data, 5)
    home = os.getpid()
    with registered("broken", lambda spec, rest, **kw: _BrokenElsewhere(load_encoder(rest, **kw), home)):
        eng = engine_factory(model=f"broken:{tiny_model}")
        r = eng.index([data], ray="local")
        assert (r.indexed, r.failed) == (0, 5)
        assert sorted(p for p, _ in r.errors) == sorted(map(str, imgs))
        assert all("embed failed on Ray" in why and "no such device here" in why for _, why in r.errors)
        again = eng.index([data])  # the same files, locally: nothing was lost or half-written
        assert (again.indexed, again.failed) == (5, 0)


def test_ray_actors_option_needs_ray(tmp_path, tiny_model):
    res = cli("index", tmp_path, "--store", tmp_path / "s", "--model", tiny_model, "--ray-actors", "2")
    assert res.exit_code == 2 and "--ray-actors needs --ray" in res.output
