// Every emulated kernel on assorted shapes, with buffers of exactly the size the kernels may
// touch, for AddressSanitizer/UBSan (out-of-bounds and undefined behaviour) and ThreadSanitizer
// (data races between the emulated threads of a block: a missing __syncthreads). The results are
// checked by tests/cuda/test_emulator.py against the CPU kernel; here only the accesses matter.
// Exit status 0 when every launch returned cudaSuccess (and the sanitizers found nothing).
#include "cuda_runtime_api.h"

#include APL_EMU_KERNELS

#include <cstdio>
#include <random>
#include <string>

namespace {
std::mt19937_64 rng(1234);

template <typename T>
std::vector<T> scores(size_t n) {
  std::uniform_real_distribution<double> u(-1.2, 1.2);
  std::vector<T> v(n);
  for (auto& x : v) x = static_cast<T>(u(rng));
  if (n > 2) v[0] = T(1), v[1] = T(-1);
  return v;
}
std::vector<int64_t> labels(size_t n, int classes) {
  std::vector<int64_t> v(n);
  for (auto& x : v) x = static_cast<int64_t>(rng() % classes);
  return v;
}
std::vector<double> rand_slopes(size_t n) {
  std::uniform_real_distribution<double> u(-1.0, 1.0);
  std::vector<double> v(n);
  for (auto& x : v) x = u(rng);
  return v;
}
template <typename V>
auto ptr(V& v) {
  return v.empty() ? nullptr : v.data();
}

int failures = 0;
void check(cudaError_t e, const char* what, int64_t R, int64_t N, int M) {
  if (e != cudaSuccess) {
    std::fprintf(stderr, "%s R=%lld N=%lld M=%d returned %d\n", what, (long long)R, (long long)N, M,
                 int(e));
    ++failures;
  }
}

template <typename T>
void run(int64_t R, int64_t N, int M, bool self) {
  auto S = scores<T>(R * N);
  auto ql = labels(R, 3), xl = labels(N, 3);
  std::vector<char> mask_bytes(R * N);
  for (auto& m : mask_bytes) m = (rng() % 3) == 0;
  std::vector<bool> dummy;
  std::vector<T> ap(R);
  std::vector<int64_t> npos(R);
  std::vector<double> coef(R * 2 * M);
  std::vector<int32_t> flag(1, 0);
  auto sl = rand_slopes(R * 2 * (M - 1));
  std::vector<T> G(R * N);
  for (int use_mask = 0; use_mask < 2; ++use_mask) {
    apl::cuda::RowArgs<T> a;
    a.S = ptr(S);
    a.R = R;
    a.N = N;
    a.M = M;
    a.use_mask = use_mask;
    a.mask = use_mask ? reinterpret_cast<const bool*>(ptr(mask_bytes)) : nullptr;
    a.q_labels = use_mask ? nullptr : ptr(ql);
    a.x_labels = use_mask ? nullptr : ptr(xl);
    a.self_offset = (!use_mask && self) ? 0 : -1;
    for (int64_t v = 0; v < 3; ++v) {
      a.variant = v;
      // the launcher's split, and rows forced over 3 blocks (two-level reduction)
      for (int64_t split : {int64_t{0}, int64_t{3}}) {
        a.forward_blocks_per_row = split;
        std::vector<unsigned long long> ws(apl::cuda::forward_workspace_bytes(a) / 8);
        check(apl::cuda::forward(a, ptr(ap), ptr(npos), ptr(coef), ptr(flag), ptr(ws), nullptr),
              "forward", R, N, M);
      }
      a.forward_blocks_per_row = 0;
    }
    check(apl::cuda::backward(a, ptr(sl), ptr(G), nullptr), "backward", R, N, M);
  }
  if (self && R == N) {
    std::vector<T> H(R * N);
    check(apl::cuda::backward_symmetric(ptr(S), R, ptr(ql), ptr(sl), M, -1.0, 1.0, ptr(H), nullptr),
          "symmetric", R, N, M);
  }
}
}  // namespace

int main(int argc, char** argv) {
  const bool small = argc > 1 && std::string(argv[1]) == "small";  // for ThreadSanitizer's pace
  const int big = apl::cuda::max_num_bins();
  for (int M : {2, 20, big}) {
    if (!small || M != 2) run<float>(33, 33, M, true);
  }
  run<double>(small ? 9 : 33, small ? 9 : 33, 20, true);
  run<float>(2, 1300, 20, false);  // long rows: several backward blocks per row
  run<double>(1, 1, 5, true);
  run<float>(3, 0, 20, false);  // empty database
  run<double>(0, 7, 20, false);  // empty block
  run<float>(0, 0, 20, true);
  std::printf("emu_stress: %s\n", failures ? "FAILED" : "ok");
  return failures ? 1 : 0;
}
