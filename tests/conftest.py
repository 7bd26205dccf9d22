"""Shared fixtures. Nothing here downloads: models are built locally and loaded through `local-dir:`."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

TINY_CFG = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "head_width": 32, "patch_size": 8},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}


def make_tiny_model(folder: Path, seed: int = 0, cfg: dict | None = None) -> Path:
    """A seeded random open_clip CLIP saved in the local-dir format real checkpoints use."""
    import open_clip
    import torch
    from safetensors.torch import save_file

    cfg = cfg or TINY_CFG
    torch.manual_seed(seed)
    model = open_clip.CLIP(**cfg)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "open_clip_config.json").write_text(
        json.dumps({"model_cfg": cfg, "preprocess_cfg": {"mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]}})
    )
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(folder / "open_clip_model.safetensors"))
    return folder


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> str:
    return "local-dir:" + str(make_tiny_model(tmp_path_factory.mktemp("models") / "tiny"))


@pytest.fixture(autouse=True)
def _isolate(tmp_path, monkeypatch):
    """Every test gets its own config/store location: no test sees the user's files."""
    monkeypatch.setenv("MMSEARCH_CONFIG", str(tmp_path / "no-config.toml"))
    monkeypatch.setenv("MMSEARCH_STORE", str(tmp_path / "store"))
    monkeypatch.delenv("MMSEARCH_MODEL", raising=False)
    monkeypatch.delenv("MMSEARCH_DEVICE", raising=False)


def write_images(folder: Path, n: int, seed: int = 0, size: tuple[int, int] = (40, 30)) -> list[Path]:
    """Distinct random-pattern images (random tiny models separate them well)."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for i in range(n):
        arr = rng.integers(0, 256, size=(size[1], size[0], 3), dtype=np.uint8)
        p = folder / f"img_{seed}_{i:03d}.png"
        Image.fromarray(arr).save(p)
        out.append(p)
    return out


def write_texts(folder: Path, texts: list[str]) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for i, t in enumerate(texts):
        p = folder / f"note_{i:03d}.txt"
        p.write_text(t, encoding="utf-8")
        out.append(p)
    return out


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
