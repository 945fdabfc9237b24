// The emulated rank kernel (csrc/cuda/rank_kernels.cu, included from APL_EMU_KERNELS) on shapes that
// reach every path (rows without a positive, with a few, with more than the shared-memory table in
// several tiles, both sigmoid paths, every query mode, U written over S, one spill block walking
// several rows), with buffers of exactly the size the kernel may touch: for AddressSanitizer/UBSan
// and ThreadSanitizer (a race between the emulated threads of a block: a missing __syncthreads).
// The values are checked by tests/cuda/test_emulator_rank.py; here only the accesses matter.
// Exit status 0 when every launch returned cudaSuccess (and the sanitizers found nothing).
#include "cuda_runtime_api.h"

#include APL_EMU_KERNELS

#include <cstdio>
#include <random>
#include <string>
#include <vector>

namespace {
std::mt19937_64 rng(4321);
int failures = 0;

template <typename T>
void run(int64_t R, int64_t N, int64_t kind, double tau, int64_t mode, int64_t self_offset, bool alias,
         int64_t spill_blocks) {
  std::uniform_real_distribution<double> u(-1.0, 1.0);
  std::vector<T> S(R * N), U(alias ? 0 : R * N);
  for (auto& x : S) x = static_cast<T>(u(rng));
  // item labels: 0 for the first table + 20 columns (more positives than the shared-memory table),
  // 1 for the next 5, then 2; query r has label r % 4 (3: no positive)
  const int64_t many = apl::cuda::rank_table_positives() + 20;
  std::vector<int64_t> xl(N), ql(R);
  for (int64_t j = 0; j < N; ++j) xl[j] = j < many ? 0 : (j < many + 5 ? 1 : 2);
  for (int64_t r = 0; r < R; ++r) ql[r] = r % 4;
  std::vector<T> value(R);
  std::vector<int64_t> npos(R);
  int32_t nonfinite = 0;
  apl::cuda::RankRowArgs<T> a;
  a.S = S.empty() ? nullptr : S.data();
  a.R = R, a.N = N, a.q_labels = ql.data(), a.x_labels = xl.data(), a.self_offset = self_offset;
  a.kind = kind, a.temperature = tau, a.query_mode = mode, a.spill_blocks = spill_blocks;
  a.num_ks = kind == 1 ? 3 : 0;
  a.ks[0] = 1, a.ks[1] = 2, a.ks[2] = 4, a.k_temperatures[0] = a.k_temperatures[1] = a.k_temperatures[2] = 1;
  std::vector<double> ws((apl::cuda::rank_forward_workspace_bytes(a) + 7) / 8);
  T* out = alias ? S.data() : (U.empty() ? nullptr : U.data());
  const cudaError_t e = apl::cuda::rank_forward(a, value.data(), npos.data(), &nonfinite, out,
                                                ws.empty() ? nullptr : ws.data(), nullptr);
  if (e != cudaSuccess || cudaGetLastError() != cudaSuccess) {
    std::fprintf(stderr, "rank_forward R=%lld N=%lld kind=%lld mode=%lld returned %d: %s\n", (long long)R,
                 (long long)N, (long long)kind, (long long)mode, int(e), emu::last_message());
    ++failures;
  }
}
}  // namespace

int main(int argc, char** argv) {
  const bool small = argc > 1 && std::string(argv[1]) == "small";
  const int64_t table = apl::cuda::rank_table_positives();
  const int64_t N = small ? table + table / 2 : 2 * table + 100;
  run<double>(5, N, 0, 0.01, 0, 1, false, 2);  // rows 0 and 4 spill; two spill blocks
  run<float>(5, N, 1, 1e-3, 1, 0, true, 1);    // exp per pair, U over S, one spill block for all
  if (!small) {
    run<float>(4, N, 0, 0.1, 2, 0, false, 0);
    run<double>(4, N, 1, 0.01, 0, -1, true, 0);
    run<double>(7, 300, 0, 0.01, 1, 0, true, 0);  // short rows: no spill kernel
  }
  run<float>(3, 0, 0, 0.01, 0, -1, false, 0);  // no items
  if (failures == 0) std::printf("emu_rank_stress: ok\n");
  return failures == 0 ? 0 : 1;
}
