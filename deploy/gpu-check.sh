#!/usr/bin/env bash
# Issue 11's GPU target on a lent GPU machine, in one call: the torch runtime alone
# (python -m model.gpu_check), no Ray. That machine's image has torch, numpy, numba,
# onnxruntime and safetensors but not pydantic (the artifact manifest's schema), so its
# wheels travel with the working tree, with typing_extensions: pydantic_core imports its
# Sentinel (4.14 or later), older than torch needs, so the machine's may lack it.
#
#   here, once:   bash deploy/gpu-check.sh fetch
#   there:        the `run` tool with carry [".whl", ".local/models"] and the command
#                 bash deploy/gpu-check.sh run "$OUT"
#
# `run` writes gpu.json and gpu.txt (model.gpu_check: eager, graph, graph-fp16,
# graph-bf16 and predict, the serving path replayed from CUDA graphs) under the folder
# given, for the demo model in .local/models (a seeded random artifact without one).
set -euo pipefail
cd "$(dirname "$0")/.."

case "${1:-}" in
fetch)
    # The versions this checkout's venv runs, as wheels for the device's CPython 3.12.
    grep -qxF '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >>.git/info/exclude
    rm -rf .whl
    versions=$(.venv/bin/python - <<'PY'
from importlib.metadata import version
print(" ".join(f"{n}=={version(n)}" for n in
      ("pydantic", "pydantic_core", "annotated-types", "typing-inspection",
       "typing_extensions")))
PY
)
    # shellcheck disable=SC2086  # one word per requirement
    python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
        --implementation cp --platform manylinux_2_28_x86_64 \
        --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .whl $versions
    ls .whl
    ;;
run)
    out=${2:?"the folder for the results, e.g. \$OUT"}
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site .whl/*.whl
    export PYTHONPATH=/tmp/site PYTHONUNBUFFERED=1
    nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm --format=csv || true
    artifact=()
    if [[ -f .local/models/cnn_lstm/DEFAULT ]]; then
        artifact=(--artifact ".local/models/cnn_lstm/$(cat .local/models/cnn_lstm/DEFAULT)")
    fi
    python3 -m model.gpu_check "${artifact[@]}" --batch-sizes 1,8,32,128 --json "$out/gpu.json" \
        2>&1 | tee "$out/gpu.txt"
    ;;
*)
    sed -n '2,13p' "$0"
    exit 2
    ;;
esac
