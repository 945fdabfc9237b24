#!/usr/bin/env bash
# Installs apl into the current Python environment, builds its kernels against the torch found
# there, then checks which backends work. Safe to run again.
#
#   bash install.sh           apl with what `apl train` and `apl demo` need (extras train, pml)
#   bash install.sh --test    the same and what `python -m pytest` needs (extra test)
#
#   APL_TORCH_SPEC  pip requirement used only when torch is not importable yet (default "torch",
#                   which on PyPI is a CUDA build of several GB; e.g. "torch==2.13.0+cpu" with
#                   APL_TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu). An installed torch
#                   is never replaced, upgraded or downgraded.
#   APL_CPU_ONLY=1  build without the CUDA kernels even if torch has CUDA and nvcc is present.
#   CUDA_HOME       the CUDA toolkit to build the CUDA kernels with (default: found, see setup.py).
#   PYTHON          interpreter to install into (default: python3).
set -euo pipefail
cd "$(dirname "$0")"
PY=${PYTHON:-python3}
EXTRAS="train,pml"
for arg in "$@"; do
  case "$arg" in
    --test) EXTRAS="train,pml,test" ;;
    -h|--help) sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "install.sh: unknown option '$arg' (use --test, or nothing)" >&2; exit 2 ;;
  esac
done
TESTED_TORCH="2.13 2.14"  # the torch releases CI builds and tests against (.ci/run)
t0=$SECONDS

if ! "$PY" -c "import torch" >/dev/null 2>&1; then
  echo "install.sh: torch not found, installing ${APL_TORCH_SPEC:-torch}"
  if [ -n "${APL_TORCH_INDEX_URL:-}" ]; then
    "$PY" -m pip install "${APL_TORCH_SPEC:-torch}" --index-url "$APL_TORCH_INDEX_URL"
  else
    "$PY" -m pip install "${APL_TORCH_SPEC:-torch}"
  fi
fi
torch_version=$("$PY" -c 'import torch; print(torch.__version__)')
case " $TESTED_TORCH " in
  *" $(echo "$torch_version" | cut -d. -f1,2) "*) ;;
  *) echo "install.sh: note: torch $torch_version is not one of the releases apl is tested with ($TESTED_TORCH); building anyway" ;;
esac
# Build requirements first: the extension is built against the installed torch
# (--no-build-isolation), so pip never downloads a second torch into a build environment. numpy
# too, or importing torch during the build warns that it cannot find it.
"$PY" -m pip install --quiet "setuptools>=64" wheel ninja numpy
with_cuda=$("$PY" -c 'import torch; print("with its CUDA kernels" if torch.version.cuda else "CPU kernels")')
echo "install.sh: building apl's extension ($with_cuda) against torch $torch_version" \
     "(on 2 cores about 3 minutes for the CPU kernels, about 7 with the CUDA kernels for one GPU architecture)"
log=$(mktemp "${TMPDIR:-/tmp}/apl-install.XXXXXX.log")
set +e
# pip hides a build's output unless -v, and indents it; show the compiler's progress lines
# ([k/n] ...) and setup.py's own lines, and keep everything in the log (removed on success).
"$PY" -m pip install -v --no-build-isolation -e ".[$EXTRAS]" 2>&1 | tee "$log" \
  | sed -nu -E 's/^[[:space:]]*((\[[0-9]+\/[0-9]+\]|apl setup\.py:) .*)/  \1/p' | cut -c1-160
status=${PIPESTATUS[0]}
set -e
if [ "$status" -ne 0 ]; then
  first=$("$PY" apl/toolchain/build_log.py "$log" || true)
  if [ -n "$first" ]; then
    echo "install.sh: the build failed; the first error:" >&2
    echo "  $first" >&2
  else  # not a compiler error (pip could not resolve or fetch something): pip's own last lines
    echo "install.sh: pip install failed (exit $status); its last lines:" >&2
    grep -v '^[[:space:]]*$' "$log" | tail -n 8 >&2
  fi
  echo "install.sh: full log: $log" >&2
  exit "$status"
fi
rm -f "$log"
echo "install.sh: installed in $((SECONDS - t0)) s"
"$PY" - <<'PY'
import apl
for name, status in apl.available_backends().items():
    print(f"  backend {name:5s}: {'yes' if status.available else 'no '}  {status.reason}")
PY
# The compiled kernels against the pure-PyTorch reference on every device present (one line per
# backend; fails the install when a present backend disagrees).
"$PY" -m apl selftest
