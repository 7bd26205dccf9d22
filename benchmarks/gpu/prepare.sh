#!/usr/bin/env bash
# Run HERE (a machine with PyPI): download the wheels the GPU device lacks into benchmarks/gpu/wheels/.
# The device has Python 3.12, torch (CUDA), torchvision, transformers, Pillow, numpy; no open_clip, faiss,
# SQLAlchemy, typer, and no network. The device tool carries at most 64 MiB per call: everything but
# faiss-gpu (135 MB) fits one call; faiss-gpu is split into parts of 48 MiB (--faiss-gpu), one part per call.
set -euo pipefail
cd "$(dirname "$0")"
PIP="${PIP:-../../.venv/bin/pip}"
rm -rf wheels && mkdir -p wheels
plat=(--only-binary=:all: --python-version 3.12 --implementation cp --platform manylinux_2_28_x86_64
      --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform manylinux_2_24_x86_64)
"$PIP" download --quiet --no-deps -d wheels "${plat[@]}" \
  faiss-cpu==1.15.1 open_clip_torch sqlalchemy greenlet typer click shellingham rich markdown-it-py mdurl \
  pygments ftfy wcwidth regex safetensors timm pytest pluggy iniconfig
if [[ "${1:-}" == "--faiss-gpu" ]]; then
  "$PIP" download --quiet --no-deps -d faiss-gpu "${plat[@]}" faiss-gpu==1.15.1
  (cd faiss-gpu && split -b 48M faiss_gpu-*.whl faiss_gpu.part. && rm faiss_gpu-*.whl && ls)
fi
du -sh wheels
