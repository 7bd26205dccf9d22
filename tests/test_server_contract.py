"""The OpenAPI schema is the contract: schemathesis, with every check, finds nothing against a live server.

A real `mmsearch serve` (uvicorn, a token, so the 401s are exercised too) over a small store of the
bundled samples indexed with the built-in models; schemathesis 4 runs as its CLI would be run by hand,
with tests/schemathesis_hooks.py teaching it what an image and a sound upload are. Bounded: a fixed seed,
a few examples per operation, a time budget.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
pytest.importorskip("schemathesis")
from tests.kit import samples_store, serving  # noqa: E402

TOKEN = "contract-test-token-0123456789"
ROOT = Path(__file__).resolve().parent.parent


def _schemathesis() -> list[str]:
    exe = Path(sys.executable).with_name("schemathesis")
    return [str(exe)] if exe.exists() else [shutil.which("schemathesis") or "schemathesis"]


@pytest.mark.slow
def test_schemathesis_finds_no_failure(tmp_path):
    store, _, _ = samples_store(tmp_path, images=8, sounds=2)
    with serving(store, "--token", TOKEN, log=tmp_path / "serve.log") as base:
        env = {**os.environ, "SCHEMATHESIS_HOOKS": "tests.schemathesis_hooks",
               "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
        run = subprocess.run(
            [*_schemathesis(), "--no-color", "run", f"{base}/openapi.json", "--checks", "all", "--header",
             f"Authorization: Bearer {TOKEN}", "--max-examples", "25", "--seed", "11", "--workers", "1",
             "--max-time", "60", "--request-timeout", "60"],
            capture_output=True, text=True, cwd=tmp_path, env=env, timeout=420)  # its cache stays out of the repo
    report = run.stdout[-6000:] + run.stderr[-2000:]
    assert run.returncode == 0, report
    assert "No issues found" in run.stdout, report
    selected = re.search(r"Selected: (\d+)/(\d+)", run.stdout)
    tested = re.search(r"Tested: (\d+)", run.stdout)
    assert selected and tested and int(tested[1]) == int(selected[1]) == int(selected[2]) >= 7, report
