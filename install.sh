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
# (--no-build-isolation), so pip never downloads a second torch into a build environment. numpy
# too, or importing torch during the build warns that it cannot find it.
"$PY" -m pip install --quiet "setuptools>=64" wheel ninja numpy
echo "install.sh: building apl's C++ extension against torch $("$PY" -c 'import torch; print(torch.__version__)') (1-3 minutes)"
log=$(mktemp)
set +e
# pip hides a build's output unless -v, and indents it; show the compiler's progress lines
# ([k/n] ...) and keep everything in the log, which is removed when the build succeeds.
"$PY" -m pip install -v --no-build-isolation -e ".[test]" 2>&1 | tee "$log" \
  | sed -nu -E 's/^[[:space:]]*(\[[0-9]+\/[0-9]+\] .*)/  \1/p' | cut -c1-100
status=${PIPESTATUS[0]}
set -e
if [ "$status" -ne 0 ]; then
  tail -n 40 "$log" >&2
  echo "install.sh: pip install failed (exit $status); full log: $log" >&2
  exit "$status"
fi
rm -f "$log"
"$PY" - <<'PY'
import apl
for name, status in apl.available_backends().items():
    print(f"  backend {name:5s}: {'yes' if status.available else 'no '}  {status.reason}")
PY
# The compiled kernels against the pure-PyTorch reference on every device present (one line per
# backend; fails the install when a present backend disagrees).
"$PY" -m apl selftest
