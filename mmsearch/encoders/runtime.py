"""Which runtime runs a model: torch on CUDA and MPS (and as the reference), ONNX Runtime on the CPU.

Decided without importing torch where possible: a machine with no NVIDIA driver cannot use CUDA,
so ``auto`` there means the CPU, and the CPU means ONNX Runtime. Only where a driver exists is torch
asked whether CUDA works. MPS is used when asked for (``--device mps``); ``auto`` on a Mac uses the
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
    if sys.platform.startswith("linux"):
        return os.path.exists("/proc/driver/nvidia/version") or os.path.exists("/dev/nvidiactl")
    return sys.platform == "win32"  # no cheap probe there: ask torch


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
