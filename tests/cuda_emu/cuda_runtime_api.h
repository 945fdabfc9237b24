// CPU emulation of the few CUDA runtime names csrc/cuda/ap_kernels.{cuh,cu} use, so that the
// kernels' own source can be compiled by g++ and run on the CPU (tests/test_cuda.py). Every CUDA
// thread of a block is a std::thread, __syncthreads is a std::barrier, shared memory is shared by
// the block's threads and poisoned before each block: races, missing barriers, uninitialised
// shared memory and out-of-bounds accesses show up as wrong results, hangs, or sanitizer reports.
// Not a GPU simulator: no warps, no memory model beyond C++'s. Only for testing.
#pragma once

#include <algorithm>
#include <atomic>
#include <barrier>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <thread>
#include <vector>

using std::isfinite;
using std::ldexp;

typedef void* cudaStream_t;
enum cudaError_t { cudaSuccess = 0, cudaErrorInvalidValue = 1 };

struct dim3 {
  unsigned x, y, z;
  dim3(unsigned x_ = 1, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}
};
struct uint3 {
  unsigned x, y, z;
};

namespace emu {
inline thread_local uint3 thread_idx, block_idx;
inline dim3 block_dim, grid_dim;
inline std::barrier<>* block_barrier = nullptr;
inline std::vector<unsigned long long> dynamic_smem;
inline std::atomic<int> or_flag{0};
inline long long launches = 0;
inline void* dyn_smem_ptr() { return dynamic_smem.data(); }

template <typename K, typename... Args>
void launch(K kernel, dim3 grid, dim3 block, size_t smem, cudaStream_t, Args... args) {
  ++launches;
  grid_dim = grid;
  block_dim = block;
  const unsigned nt = block.x * block.y * block.z;
  // One std::thread per CUDA thread for the whole launch; blocks run one after another, with a
  // barrier between them (shared memory is re-poisoned for each block).
  std::barrier<> bar(nt);
  block_barrier = &bar;
  auto body = [&](unsigned t) {
    thread_idx = uint3{t % block.x, (t / block.x) % block.y, t / (block.x * block.y)};
    for (unsigned bz = 0; bz < grid.z; ++bz)
      for (unsigned by = 0; by < grid.y; ++by)
        for (unsigned bx = 0; bx < grid.x; ++bx) {
          if (t == 0) {
            // Exactly the requested size: AddressSanitizer sees an overrun.
            dynamic_smem.assign((smem + 7) / 8, 0xCDCDCDCDCDCDCDCDull);
            or_flag = 0;
          }
          bar.arrive_and_wait();
          block_idx = uint3{bx, by, bz};
          kernel(args...);
          bar.arrive_and_wait();  // every thread of the block is done (or returned early)
        }
  };
  std::vector<std::thread> threads;
  threads.reserve(nt);
  for (unsigned t = 0; t < nt; ++t) threads.emplace_back(body, t);
  for (auto& th : threads) th.join();
}
}  // namespace emu

#define threadIdx emu::thread_idx
#define blockIdx emu::block_idx
#define blockDim emu::block_dim
#define gridDim emu::grid_dim
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __shared__ static

inline cudaError_t cudaPeekAtLastError() { return cudaSuccess; }
inline void __syncthreads() { emu::block_barrier->arrive_and_wait(); }
inline int __syncthreads_or(int p) {
  emu::block_barrier->arrive_and_wait();
  if (p) emu::or_flag.store(1);
  emu::block_barrier->arrive_and_wait();
  const int r = emu::or_flag.load();
  emu::block_barrier->arrive_and_wait();
  if (emu::thread_idx.x == 0 && emu::thread_idx.y == 0 && emu::thread_idx.z == 0) emu::or_flag = 0;
  return r;
}
inline unsigned long long atomicAdd(unsigned long long* p, unsigned long long v) {
  return std::atomic_ref<unsigned long long>(*p).fetch_add(v);
}
template <typename T>
inline T __ldg(const T* p) {
  return *p;
}
inline unsigned long long __double2ull_rn(double x) {
  return static_cast<unsigned long long>(std::nearbyint(x));
}
inline double __ull2double_rn(unsigned long long u) { return static_cast<double>(u); }
