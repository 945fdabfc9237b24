#!/usr/bin/env bash
# Build, test, sanitize and benchmark apl's CUDA kernels on a GPU machine, in one command.
#
#   bash scripts/gpu_check.sh [STAGE ...]       STAGE: env build test sanitize bench bisect quick all
#
# Stages (in the order given; "all" = env build test sanitize bench):
#   env       GPU, driver, nvcc, torch: into summary.txt
#   build     pip install --no-build-isolation --no-deps -e .  (CUDA archs: $APL_CUDA_ARCH, default
#             the GPU's own), then checks that apl sees its CUDA kernels; later stages need it
#   test      the whole pytest suite (every device-parametrized test, and tests/cuda/)
#   sanitize  compute-sanitizer memcheck and racecheck on scripts/sanitize_case.py
#   bench     python -m benchmarks.bench_loss_cuda: the timing table and the streaming target
#   bisect    python -m benchmarks.bench_loss_cuda --skip-table: the largest B per method
#   quick     python -m benchmarks.bench_loss_cuda --quick: a one-minute smoke run of the benchmark
# Logs and results go to "$OUT" (default ./gpu_results), at most 8 files:
#   summary.txt build.log pytest.log sanitizer.log bench.log bench_loss_cuda*.json/png
# A device call is limited to 10 minutes, so a session runs the stages over several calls while
# the machine stays warm (the build is kept between calls and `build` is then quick), e.g.
#   1) bash scripts/gpu_check.sh env build test
#   2) bash scripts/gpu_check.sh build sanitize quick
#   3) bash scripts/gpu_check.sh build bench
#   4) bash scripts/gpu_check.sh build bisect
# Exit status: 0 when every stage run passed, 1 otherwise (each stage still runs after a failed
# one, except that nothing runs after a failed build).
set -u -o pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
OUT="${OUT:-$ROOT/gpu_results}"
mkdir -p "$OUT"
PY="${PYTHON:-python3}"
export PYTHONUNBUFFERED=1
SUMMARY="$OUT/summary.txt"
STAGES=("$@")
[ ${#STAGES[@]} -eq 0 ] && STAGES=(all)
FAILED=0

note() { echo "$*" | tee -a "$SUMMARY"; }

stage_env() {
  {
    echo "== env $(date -u +%FT%TZ)"
    nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv 2>&1 || echo "nvidia-smi failed"
    nvcc --version 2>&1 | tail -2 || echo "no nvcc"
    command -v compute-sanitizer || echo "no compute-sanitizer on PATH"
    "$PY" -c "import sys, torch; print('python', sys.version.split()[0], sys.executable); print('torch', torch.__version__, 'cuda', torch.version.cuda, 'available', torch.cuda.is_available())"
    git -C "$ROOT" log --oneline -1 2>/dev/null || true
  } 2>&1 | tee -a "$SUMMARY"
}

stage_build() {
  local t0=$SECONDS
  if [ -z "${APL_CUDA_ARCH:-}" ]; then
    APL_CUDA_ARCH="$("$PY" -c 'import torch; p = torch.cuda.get_device_capability(); print(f"{p[0]}.{p[1]}")' 2>/dev/null || echo 9.0)"
  fi
  export APL_CUDA_ARCH MAX_JOBS="${MAX_JOBS:-$(nproc)}"
  echo "== build (APL_CUDA_ARCH=$APL_CUDA_ARCH, MAX_JOBS=$MAX_JOBS)" >>"$OUT/build.log"
  if ! "$PY" -m pip install --no-build-isolation --no-deps -e . >>"$OUT/build.log" 2>&1; then
    note "build: FAILED after $((SECONDS - t0)) s (see build.log)"
    tail -40 "$OUT/build.log"
    return 1
  fi
  if ! "$PY" -c "import apl, sys; s = apl.available_backends(); print(s); sys.exit(0 if s['cuda'].available else 1)" >>"$OUT/build.log" 2>&1; then
    note "build: built, but apl reports no usable CUDA kernels (see build.log)"
    tail -5 "$OUT/build.log"
    return 1
  fi
  note "build: ok in $((SECONDS - t0)) s"
}

stage_test() {
  local t0=$SECONDS rc
  local extra=()
  "$PY" -c "import pytest_timeout" 2>/dev/null && extra+=(--timeout=600)
  timeout 560 "$PY" -m pytest -ra -q -p no:cacheprovider --durations=15 "${extra[@]}" tests \
    >"$OUT/pytest.log" 2>&1
  rc=$?
  note "test: $( [ $rc -eq 0 ] && echo ok || echo "FAILED (rc $rc)") in $((SECONDS - t0)) s: $(grep -E '^[0-9]+ (passed|failed)|^=+ .*(passed|failed|error).* =+$' "$OUT/pytest.log" | tail -1)"
  [ $rc -eq 0 ]
}

sanitize_run() {  # sanitize_run TOOL [OPTIONS...]: appends to sanitizer.log, returns the exit status
  local tool=$1
  shift
  echo "== compute-sanitizer --tool $tool $*" >>"$OUT/sanitizer.log"
  # No caching allocator: every tensor is its own cudaMalloc, so an out-of-bounds access is
  # caught instead of landing inside a pooled block.
  PYTORCH_NO_CUDA_MEMORY_CACHING=1 timeout 270 compute-sanitizer --tool "$tool" --error-exitcode 99 "$@" \
    "$PY" scripts/sanitize_case.py >>"$OUT/sanitizer.log" 2>&1
}

stage_sanitize() {
  local t0=$SECONDS ok=0 tool rc mark summary
  if ! command -v compute-sanitizer >/dev/null; then
    note "sanitize: FAILED, compute-sanitizer not on PATH"
    return 1
  fi
  : >"$OUT/sanitizer.log"
  for tool in memcheck racecheck; do
    mark=$(wc -l <"$OUT/sanitizer.log")
    if [ "$tool" = racecheck ]; then
      # Only apl's kernels (their names contain "apl"): library kernels are not ours to judge.
      sanitize_run "$tool" --kernel-name kns=apl
      rc=$?
      if [ $rc -ne 0 ] && [ $rc -ne 99 ] && ! tail -n +"$((mark + 1))" "$OUT/sanitizer.log" | grep -q "SANITIZE CASE"; then
        echo "(kernel filter not accepted: racecheck on every kernel)" >>"$OUT/sanitizer.log"
        mark=$(wc -l <"$OUT/sanitizer.log")
        sanitize_run "$tool"
        rc=$?
      fi
    else
      sanitize_run "$tool"
      rc=$?
    fi
    summary="$(tail -n +"$((mark + 1))" "$OUT/sanitizer.log" | grep -E 'ERROR SUMMARY|RACECHECK SUMMARY|SANITIZE CASE' | tr '\n' ' ')"
    if [ $rc -eq 0 ] && tail -n +"$((mark + 1))" "$OUT/sanitizer.log" | grep -q "SANITIZE CASE OK"; then
      note "sanitize $tool: ok: $summary"
    else
      note "sanitize $tool: FAILED (rc $rc): $summary"
      ok=1
    fi
  done
  note "sanitize: done in $((SECONDS - t0)) s"
  return $ok
}

stage_bench() {
  local t0=$SECONDS rc
  timeout 570 "$PY" -m benchmarks.bench_loss_cuda --out "$OUT" "$@" >>"$OUT/bench.log" 2>&1
  rc=$?
  note "bench $*: $( [ $rc -eq 0 ] && echo ok || echo "FAILED (rc $rc)") in $((SECONDS - t0)) s"
  tail -30 "$OUT/bench.log"
  [ $rc -eq 0 ]
}

expanded=()
for s in "${STAGES[@]}"; do
  if [ "$s" = all ]; then expanded+=(env build test sanitize bench); else expanded+=("$s"); fi
done

for s in "${expanded[@]}"; do
  case "$s" in
    env) stage_env ;;
    build) stage_build || { FAILED=1; note "stopping: the build failed"; break; } ;;
    test) stage_test || FAILED=1 ;;
    sanitize) stage_sanitize || FAILED=1 ;;
    bench) stage_bench --no-bisect || FAILED=1 ;;
    bisect) stage_bench --skip-table || FAILED=1 ;;
    quick) stage_bench --quick || FAILED=1 ;;
    *) note "unknown stage '$s' (env build test sanitize bench bisect quick all)"; FAILED=1 ;;
  esac
done

echo
echo "== summary ($OUT)"
cat "$SUMMARY"
exit $FAILED
