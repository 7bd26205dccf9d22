"""Which runtime runs a model: torch on CUDA and MPS (and as the reference), ONNX Runtime on the CPU.

Decided without importing torch where possible: a machine with no NVIDIA driver, or whose torch is
built without CUDA (read from torch's ``version.py``), cannot use CUDA, so ``auto`` there means the
CPU, and the CPU means ONNX Runtime. Only where both exist is torch asked whether CUDA works. MPS is used when asked for (``--device mps``); ``auto`` on a Mac uses the
CPU runtime (ONNX Runtime), which needs no torch to start.

Precision on the CPU (``--precision``): ``auto`` takes, per tower, the fastest precision (timed at
export) whose measured fidelity to torch fp32 (also recorded at export) is at least :data:`MIN_FIDELITY`; ``fp32`` and
``int8`` force one (the fidelity is shown by ``mmsearch cache``).
"""

from __future__ import annotations

import os
import sys

from mmsearch.config import PRECISIONS, RUNTIMES
from mmsearch.errors import UsageError

#: Fastest first: what ``auto`` tries.
SPEED_ORDER = ("int8", "fp32")
MIN_FIDELITY = 0.999


def _nvidia_driver() -> bool:
    """Whether CUDA could work here, decided without importing torch: an NVIDIA driver (Linux; assumed
    elsewhere) and a torch built with CUDA (read from its ``version.py``, not imported)."""
    if sys.platform.startswith("linux") and not (os.path.exists("/proc/driver/nvidia/version")
                                                  or os.path.exists("/dev/nvidiactl")):
        return False
    return _torch_built_with_cuda()


def _torch_built_with_cuda() -> bool:
    import importlib.util
    import re

    try:
        found = importlib.util.find_spec("torch")
    except (ImportError, ValueError):
        return False
    if found is None or not found.submodule_search_locations:
        return False
    version_py = os.path.join(list(found.submodule_search_locations)[0], "version.py")
    try:
        with open(version_py, encoding="utf-8") as f:
            cuda = re.search(r"^cuda\s*(?::[^=]*)?=\s*(.+)$", f.read(), re.MULTILINE)
    except OSError:
        return True  # cannot tell: let torch answer
    return cuda is not None and cuda.group(1).strip() not in ("None", "''", '""')


def choose(device: str | None, runtime: str | None) -> tuple[str, str]:
    """(runtime, device) for a ``--device`` and ``--runtime``; a bad value is a :class:`UsageError`."""
    runtime = runtime or "auto"
    if runtime not in RUNTIMES:
        raise UsageError(f"--runtime {runtime!r}: expected one of {', '.join(RUNTIMES)}")
    if device in (None, "", "auto"):
        if runtime == "onnx" or (runtime == "auto" and not _nvidia_driver()):
            return "onnx", "cpu"
        from mmsearch.encoders.clip import resolve_device

        device = resolve_device(None) if runtime == "torch" else _cuda_or_cpu()
    elif device not in ("cpu", "mps") and not device.startswith("cuda"):
        raise UsageError(f"--device {device}: expected auto, cpu, cuda, cuda:N or mps")
    if device == "cpu":
        return ("torch" if runtime == "torch" else "onnx"), "cpu"
    if runtime == "onnx":
        raise UsageError(f"--runtime onnx runs on the CPU only, not --device {device}")
    return "torch", device


def _cuda_or_cpu() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def check_precision(precision: str | None) -> str:
    precision = precision or "auto"
    if precision not in PRECISIONS:
        raise UsageError(f"--precision {precision!r}: expected one of {', '.join(PRECISIONS)}")
    return precision


def pick_precision(tower: dict, wanted: str) -> str:
    """The precision to run one tower at: ``wanted``, or for ``auto`` the fastest (as measured at export;
    else by :data:`SPEED_ORDER`) whose measured fidelity to torch fp32 is at least :data:`MIN_FIDELITY`."""
    if wanted != "auto":
        if wanted not in tower["files"]:
            raise UsageError(f"--precision {wanted}: this model has no {wanted} export (it could not be quantised)")
        return wanted
    fidelity, speed = tower["fidelity"], tower.get("ms_per_item", {})
    kept = [p for p in SPEED_ORDER if fidelity.get(p, 0.0) >= MIN_FIDELITY]
    return min(kept, key=lambda p: speed.get(p, SPEED_ORDER.index(p))) if kept else "fp32"
