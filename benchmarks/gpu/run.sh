#!/usr/bin/env bash
# Run ON THE DEVICE, from the repository root, after prepare.sh's wheels were carried (benchmarks/gpu/wheels).
# Installs offline, runs the GPU tests and benchmarks, copies results and logs to $OUT.
set -uo pipefail
OUT="${OUT:-/tmp/mmsearch-gpu-out}"; mkdir -p "$OUT"
export HF_HUB_OFFLINE=1 PIP_DISABLE_PIP_VERSION_CHECK=1
python -m venv --system-site-packages /tmp/venv && . /tmp/venv/bin/activate
pip install --quiet --no-index --find-links benchmarks/gpu/wheels --no-deps benchmarks/gpu/wheels/*.whl
if ls benchmarks/gpu/faiss-gpu/faiss_gpu.part.* >/dev/null 2>&1; then  # parts carried on earlier calls
  cat benchmarks/gpu/faiss-gpu/faiss_gpu.part.* > /tmp/faiss_gpu-1.15.1-cp310-abi3-manylinux_2_27_x86_64.manylinux_2_28_x86_64.whl
  pip uninstall -y faiss-cpu && pip install --quiet --no-deps /tmp/faiss_gpu-*.whl
fi
pip install --quiet --no-deps --no-build-isolation -e . 2>&1 | tail -2
{ nvidia-smi; python -c "import torch, faiss; print(torch.__version__, torch.cuda.get_device_name(0), faiss.__version__, faiss.get_compile_options())"; } > "$OUT/machine.txt" 2>&1
python -m pytest -q -p no:cacheprovider -rs tests/test_gpu.py tests/ann/test_placement.py tests/ingest/test_gpu_decode.py \
  > "$OUT/tests.txt" 2>&1; echo "tests rc=$?" >> "$OUT/tests.txt"
timeout 120 python benchmarks/bench_gpu_search.py --n 1000000 > "$OUT/bench_gpu_search.txt" 2>&1
timeout 300 python benchmarks/bench_gpu_ingest.py --n 10000 > "$OUT/bench_gpu_ingest.txt" 2>&1
cp -r benchmarks/results "$OUT/" 2>/dev/null
tail -3 "$OUT"/*.txt
