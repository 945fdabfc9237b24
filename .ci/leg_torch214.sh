#!/usr/bin/env bash
# CI leg 2: apl on torch 2.14.1 (CUDA 13.0 build) + torchvision 0.29.1, both from this machine's disk,
# in a venv of its own. Builds the CUDA kernels for sm_90 with the nvcc on the PATH and CUDA_HOME
# unset (setup.py finds the toolkit), then runs the part of the suite that a second torch can change:
# the build and toolchain, the ops and kernels (CPU, the CUDA emulator, nvcc compiles, opcheck,
# torch.compile), the layers, the losses against pytorch-metric-learning 2.8.1 (the low end of the
# range pyproject.toml declares; leg 1 has 2.9.0), multistage with BatchNorm, the ResNet training
# and multi-scale evaluation paths, the metrics and the self-test. The trainer's, the data's and the
# demo's pure-Python tests run once, in leg 1: CI on 2 cores stays well inside its 90 minutes.
set -euo pipefail
cd "$(dirname "$0")/.."
t0=$SECONDS
VENV=${APL_CI_VENV:-$(mktemp -d)/venv}
echo "== CI leg 2: torch 2.14.1 + torchvision 0.29.1 in $VENV"
python3 -m venv "$VENV"
"$VENV/bin/python" -m pip install --quiet torch==2.14.1 torchvision==0.29.1 "pytorch-metric-learning==2.8.1"
env -u CUDA_HOME -u CUDA_PATH APL_CUDA_ARCH=9.0 PYTHON="$VENV/bin/python" bash install.sh --test
"$VENV/bin/python" - <<'PY'
import json, pathlib, torch, torchvision, pytorch_metric_learning as pml
import apl
from apl.ops.extension import build_info, has_kernel
info = build_info()
assert info.get("cuda_kernels"), f"the CUDA kernels were not built: {info.get('why_no_cuda_kernels')}"
assert has_kernel("ap_self", "CUDA") and has_kernel("rank_self", "CUDA"), "apl._C holds no CUDA kernel"
print(f"torch {torch.__version__}, torchvision {torchvision.__version__}, pml {pml.__version__}; "
      f"CUDA kernels for {info['cuda_archs']} built with {info['cuda_home']}")
PY
"$VENV/bin/python" -m pytest -q -p no:cacheprovider tests/toolchain tests/ops tests/cuda tests/nn tests/losses \
    tests/evaluation tests/test_multistage.py tests/test_multistage_batchnorm.py tests/test_pml.py \
    tests/train/test_resnet.py tests/train/test_baselines.py tests/cli/test_selftest.py
echo "== CI leg 2 passed in $((SECONDS - t0)) s"
