"""The vector math of the CPU rank kernel (csrc/cpu/lanes.h), compiled alone with the system's C++
compiler for each instruction set this CPU has and checked against long double: exp_lanes within
2 ulp over [-708, 708], reciprocal within 3 ulp for x >= 1 (0 beyond float's range, where 1 / x is
below 3e-39), the AVX-512 reciprocal (hardware estimate and two Newton steps) within 3 ulp, and the
loads and stores of a partial block."""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from apl.train.amp import cpu_flags

ROOT = Path(__file__).resolve().parents[2]
CXX = shutil.which("g++") or shutil.which("c++")
pytestmark = pytest.mark.skipif(CXX is None, reason="no C++ compiler on the PATH")

PROGRAM = r"""
#include <cmath>
#include <cstdio>
#include <random>
#include "lanes.h"
using namespace apl::lanes;

static double ulps(double got, long double want) {
  const double w = static_cast<double>(want);
  const double ulp = std::nextafter(std::fabs(w), INFINITY) - std::fabs(w);
  return static_cast<double>(std::fabs((static_cast<long double>(got) - want) / ulp));
}

int main() {
  std::mt19937_64 g(7);
  std::uniform_real_distribution<double> wide(-708.0, 708.0), near0(-1.0, 1.0), lg(0.0, 690.0);
  double exp_worst = 0, rec_worst = 0, hw_worst = -1;
  int beyond_bad = 0;
  for (int it = 0; it < 200000; ++it) {
    Lanes x, y;
    for (int l = 0; l < kLanes; ++l) {
      x[l] = it % 2 ? wide(g) : near0(g);
      y[l] = std::exp(lg(g)) * (1.0 + 0.5 * near0(g)) + 1.0;  // from 1 to ~1e300
    }
    const Lanes e = exp_lanes(x), r = reciprocal(y);
#if defined(APL_AVX512_RECIPROCAL) && defined(__AVX512F__)
    const Lanes h = reciprocal_avx512(y);
    for (int l = 0; l < kLanes; ++l) hw_worst = std::fmax(hw_worst, ulps(h[l], 1.0L / static_cast<long double>(y[l])));
#endif
    for (int l = 0; l < kLanes; ++l) {
      exp_worst = std::fmax(exp_worst, ulps(e[l], expl(static_cast<long double>(x[l]))));
      if (y[l] < 3.0e38) {
        rec_worst = std::fmax(rec_worst, ulps(r[l], 1.0L / static_cast<long double>(y[l])));
      } else if (!(r[l] == 0.0 || ulps(r[l], 1.0L / static_cast<long double>(y[l])) <= 3.0)) {
        ++beyond_bad;
      }
    }
  }
  // a partial block: zeros after n, and a store that writes n entries only
  double src[5] = {1, 2, 3, 4, 5}, dst[8] = {9, 9, 9, 9, 9, 9, 9, 9};
  const Lanes v = load_lanes(src, 5);
  store_lanes(dst, v * 2.0, 5);
  const bool partial = v[4] == 5 && v[5] == 0 && v[7] == 0 && dst[4] == 10 && dst[5] == 9 && dst[7] == 9;
  std::printf("%.3f %.3f %d %d %.3f\n", exp_worst, rec_worst, beyond_bad, partial ? 1 : 0, hw_worst);
}
"""


@pytest.mark.parametrize("isa", ["baseline", "avx2", "avx512f"])
def test_lanes_math_is_accurate(isa, tmp_path):
    if isa != "baseline" and isa not in (cpu_flags() or set()):
        pytest.skip(f"this CPU has no {isa}")
    (tmp_path / "t.cpp").write_text(PROGRAM)
    flags = [] if isa == "baseline" else [f"-m{isa}"]
    build = subprocess.run([CXX, "-O2", "-std=c++17", "-Wno-psabi", *flags, f"-I{ROOT / 'csrc' / 'cpu'}", "t.cpp",
                            "-o", "t"], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert build.returncode == 0, build.stderr
    out = subprocess.run([str(tmp_path / "t")], capture_output=True, text=True, timeout=300)
    exp_ulps, rec_ulps, beyond_bad, partial, hw_ulps = out.stdout.split()
    assert float(exp_ulps) <= 2.0, f"exp_lanes: {exp_ulps} ulp"
    assert float(rec_ulps) <= 3.0, f"reciprocal: {rec_ulps} ulp"
    assert beyond_bad == "0" and partial == "1"
    if isa == "avx512f" and "avx512f" in (cpu_flags() or set()):  # the kernel takes it on such CPUs
        assert 0.0 <= float(hw_ulps) <= 3.0, f"reciprocal_avx512: {hw_ulps} ulp"
