#!/usr/bin/env bash
# Installs apl and everything it needs into the current Python environment, then checks which
# backends work. Safe to run again (the build is incremental).
#
#   APL_TORCH_SPEC  pip requirement used only when torch is not importable yet
#                   (default "torch"; e.g. "torch==2.13.0", or a CUDA build from its index with
#                   APL_TORCH_INDEX_URL). An installed torch is never replaced.
#   APL_CPU_ONLY=1  build without the CUDA kernels even if torch has CUDA and nvcc is present.
#   PYTHON          interpreter to install into (default: python3).
set -euo pipefail
cd "$(dirname "$0")"
PY=${PYTHON:-python3}

if ! "$PY" -c "import torch" >/dev/null 2>&1; then
  echo "install.sh: torch not found, installing ${APL_TORCH_SPEC:-torch}"
  if [ -n "${APL_TORCH_INDEX_URL:-}" ]; then
    "$PY" -m pip install "${APL_TORCH_SPEC:-torch}" --index-url "$APL_TORCH_INDEX_URL"
  else
    "$PY" -m pip install "${APL_TORCH_SPEC:-torch}"
  fi
fi
# Build requirements first: the extension is built against the installed torch
# (--no-build-isolation), so pip never downloads a second torch into a build environment.
"$PY" -m pip install --quiet "setuptools>=64" wheel ninja pybind11
"$PY" -m pip install --quiet --no-build-isolation -e ".[test]"
"$PY" - <<'PY'
import apl
for name, status in apl.available_backends().items():
    print(f"  backend {name:5s}: {'yes' if status.available else 'no '}  {status.reason}")
PY
