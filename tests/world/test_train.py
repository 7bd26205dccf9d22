"""The training script that made builtin:shapes still runs and exports a loadable local-dir model."""

import json
import subprocess
import sys

from mmsearch import Engine
from mmsearch.world import shapes as W


def test_a_short_training_run_exports_a_model_the_engine_loads(tmp_path):
    out = tmp_path / "model"
    subprocess.run(
        [sys.executable, "-m", "mmsearch.world.train", "--out", str(out), "--steps", "3", "--batch", "16",
         "--pool", "64", "--warmup", "1", "--eval-n", "48", "--threads", "1"],
        check=True, capture_output=True, text=True, timeout=300,
    )
    cfg = json.loads((out / "open_clip_config.json").read_text())
    assert cfg["model_cfg"]["embed_dim"] == 64
    assert (out / "open_clip_model.safetensors").stat().st_size < 10 * 1024 * 1024
    img = tmp_path / "one.png"
    W.generate(1, 1)[0].image.save(img)
    with Engine.open(tmp_path / "store", model=f"local-dir:{out}", workers=0) as eng:
        assert eng.index([img]).indexed == 1
        assert eng.search(text="a red circle", k=1)[0].path == str(img)
