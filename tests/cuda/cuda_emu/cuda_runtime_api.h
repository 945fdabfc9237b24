// CPU emulation of the few CUDA runtime names csrc/cuda/ap_kernels.{cuh,cu} use, so that the
// kernels' own source can be compiled by g++ and run on the CPU (tests/cuda/test_emulator.py). Every CUDA
// thread of a block is a std::thread and __syncthreads a barrier. Stricter than a plain emulation
// where a GPU is strict:
//  - launch limits: grid.x <= 2^31 - 1, grid.y and grid.z <= 65535, block.x and block.y <= 1024,
//    block.z <= 64, at most 1024 threads per block (cudaErrorInvalidConfiguration), static plus
//    dynamic shared memory <= emu::max_shared_bytes, 48 KiB by default (cudaErrorInvalidValue).
//    A rejected launch runs nothing (except that the static part is measured during a kernel's
//    first launch, so a first launch over the limit is reported after it ran); the error is returned
//    by cudaPeekAtLastError (kept) and cudaGetLastError (cleared), as on a GPU;
//  - shared memory, dynamic and static (`__shared__` variables, rewritten by transform.py into
//    emu::block_static), is poisoned with 0xCD bytes before every block, so a value left by an
//    earlier block or never written shows up;
//  - blocks run in a shuffled order (seeded: APL_EMU_SEED, default 1), so a kernel that depends
//    on block order gives wrong results;
//  - a watchdog: a thread waiting at a barrier for more than APL_EMU_WATCHDOG_S seconds (default
//    60) breaks the barrier; the launch returns cudaErrorLaunchTimeout and emu::last_message()
//    says which barrier of which block deadlocked.
// Not a GPU simulator: no warps, no memory model beyond C++'s. Only for testing.
#pragma once

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <numeric>
#include <random>
#include <string>
#include <thread>
#include <vector>

using std::isfinite;
using std::ldexp;

typedef void* cudaStream_t;
enum cudaError_t {
  cudaSuccess = 0,
  cudaErrorInvalidValue = 1,
  cudaErrorInvalidConfiguration = 9,
  cudaErrorLaunchTimeout = 702,
};

struct dim3 {
  unsigned x, y, z;
  dim3(unsigned x_ = 1, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}
};
struct uint3 {
  unsigned x, y, z;
};

namespace emu {

struct Deadlock {};

// A reusable barrier (atomic wait/notify, as fast as std::barrier) that a watchdog can break: then
// every thread waiting on it, or arriving later, throws Deadlock, which unwinds the kernel body.
class Barrier {
 public:
  explicit Barrier(unsigned n) : n_(n) {}
  void arrive_and_wait(const char* where) {
    if (broken_.load()) throw Deadlock{};
    const unsigned long long g = gen_.load(std::memory_order_acquire);
    where_.store(where);
    if (count_.fetch_add(1, std::memory_order_acq_rel) + 1 == n_) {
      count_.store(0, std::memory_order_relaxed);
      gen_.fetch_add(1, std::memory_order_release);
      gen_.notify_all();
      return;
    }
    while (gen_.load(std::memory_order_acquire) == g) gen_.wait(g, std::memory_order_acquire);
    if (broken_.load()) throw Deadlock{};
  }
  // Watchdog: true (and the barrier broken) when threads have waited with no phase completing
  // for `seconds`.
  bool watch(double seconds, const std::atomic<bool>& done) {
    auto last_change = std::chrono::steady_clock::now();
    unsigned long long last_gen = gen_.load();
    while (!done.load()) {
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
      const auto now = std::chrono::steady_clock::now();
      const unsigned long long g = gen_.load();
      if (g != last_gen || count_.load() == 0) {
        last_gen = g;
        last_change = now;
      } else if (std::chrono::duration<double>(now - last_change).count() > seconds) {
        std::snprintf(message_, sizeof(message_),
                      "emulator watchdog: barrier deadlock at %s: %u of %u threads of the block "
                      "waited %.1f s (a __syncthreads not reached by every thread of the block)",
                      where_.load(), count_.load(), n_, seconds);
        broken_.store(true);
        gen_.fetch_add(1, std::memory_order_release);
        gen_.notify_all();
        return true;
      }
    }
    return false;
  }
  bool broken() const { return broken_.load(); }
  const char* message() const { return message_; }
  static double timeout_seconds() {
    const char* v = std::getenv("APL_EMU_WATCHDOG_S");
    return v && *v ? std::atof(v) : 60.0;
  }

 private:
  const unsigned n_;
  std::atomic<unsigned> count_{0};
  std::atomic<unsigned long long> gen_{0};
  std::atomic<bool> broken_{false};
  std::atomic<const char*> where_{""};
  char message_[320] = {0};
};

inline thread_local uint3 thread_idx, block_idx;
inline dim3 block_dim, grid_dim;
inline Barrier* block_barrier = nullptr;
inline std::vector<unsigned long long> dynamic_smem;
inline std::atomic<int> or_flag{0};
inline long long launches = 0;
inline size_t max_shared_bytes = 48 * 1024;
inline cudaError_t last_error = cudaSuccess;
inline std::string last_msg;
inline void* dyn_smem_ptr() { return dynamic_smem.data(); }
inline const char* last_message() { return last_msg.c_str(); }

// Static __shared__ variables: one storage per declaration (and template instance), registered
// at load time so that every block, the first included, starts from poisoned memory.
struct StaticVar {
  void* p;
  size_t n;
  std::atomic<long long>* seen_in_launch;
};
inline std::vector<StaticVar>& static_vars() {
  static std::vector<StaticVar> v;
  return v;
}
inline std::atomic<size_t> launch_static_bytes{0};
inline void poison_statics() {
  for (auto& v : static_vars()) std::memset(v.p, 0xCD, v.n);
}
template <typename Ty, int Id>
struct BlockStatic {
  alignas(16) static Ty storage;
  static std::atomic<long long> seen;
  static const bool registered;
};
template <typename Ty, int Id>
alignas(16) Ty BlockStatic<Ty, Id>::storage;
template <typename Ty, int Id>
std::atomic<long long> BlockStatic<Ty, Id>::seen{-1};
template <typename Ty, int Id>
const bool BlockStatic<Ty, Id>::registered =
    (static_vars().push_back({&BlockStatic<Ty, Id>::storage, sizeof(Ty), &BlockStatic<Ty, Id>::seen}),
     true);
template <typename Ty, int Id>
Ty& block_static() {
  using S = BlockStatic<Ty, Id>;
  (void)S::registered;
  long long prev = S::seen.load();
  if (prev != launches && S::seen.compare_exchange_strong(prev, launches))
    launch_static_bytes += sizeof(Ty);  // counted once per launch
  return S::storage;
}

inline cudaError_t fail(cudaError_t e, std::string msg) {
  last_error = e;
  last_msg = std::move(msg);
  return e;
}

// Static shared bytes of each kernel, measured on its first launch.
template <typename K>
size_t& kernel_static_bytes(K kernel) {
  static std::vector<std::pair<void*, size_t>> known;
  void* key = reinterpret_cast<void*>(kernel);
  for (auto& kv : known)
    if (kv.first == key) return kv.second;
  known.emplace_back(key, SIZE_MAX);
  return known.back().second;
}

inline cudaError_t check_config(dim3 grid, dim3 block) {
  const unsigned long long nt = 1ull * block.x * block.y * block.z;
  if (grid.x == 0 || grid.y == 0 || grid.z == 0 || grid.x > 0x7fffffffu || grid.y > 65535 ||
      grid.z > 65535)
    return fail(cudaErrorInvalidConfiguration, "grid dimensions out of range (x <= 2^31 - 1, y, z <= 65535)");
  if (nt == 0 || block.x > 1024 || block.y > 1024 || block.z > 64 || nt > 1024)
    return fail(cudaErrorInvalidConfiguration, "block dimensions out of range (at most 1024 threads)");
  return cudaSuccess;
}

template <typename K, typename... Args>
void launch(K kernel, dim3 grid, dim3 block, size_t smem, cudaStream_t, Args... args) {
  if (check_config(grid, block) != cudaSuccess) return;
  size_t& static_bytes = kernel_static_bytes(kernel);
  if (static_bytes != SIZE_MAX && static_bytes + smem > max_shared_bytes) {
    fail(cudaErrorInvalidValue, "too much shared memory (static + dynamic > limit)");
    return;
  }
  ++launches;
  launch_static_bytes = 0;
  grid_dim = grid;
  block_dim = block;
  const unsigned nt = block.x * block.y * block.z;
  // Blocks in a shuffled order (seeded), one after another.
  const unsigned long long nblocks = 1ull * grid.x * grid.y * grid.z;
  std::vector<unsigned long long> order(nblocks);
  std::iota(order.begin(), order.end(), 0ull);
  const char* seed_env = std::getenv("APL_EMU_SEED");
  std::mt19937_64 rng((seed_env && *seed_env ? std::strtoull(seed_env, nullptr, 10) : 1ull) + launches);
  std::shuffle(order.begin(), order.end(), rng);
  Barrier bar(nt);
  block_barrier = &bar;
  auto body = [&](unsigned t) {
    thread_idx = uint3{t % block.x, (t / block.x) % block.y, t / (block.x * block.y)};
    try {
      for (unsigned long long k = 0; k < nblocks; ++k) {
        if (t == 0) {
          // Exactly the requested size: AddressSanitizer sees an overrun.
          dynamic_smem.assign((smem + 7) / 8, 0xCDCDCDCDCDCDCDCDull);
          poison_statics();
          or_flag = 0;
        }
        bar.arrive_and_wait("the start of a block");
        const unsigned long long b = order[k];
        block_idx = uint3{unsigned(b % grid.x), unsigned((b / grid.x) % grid.y), unsigned(b / (1ull * grid.x * grid.y))};
        kernel(args...);
        bar.arrive_and_wait("the end of a block (a thread returned while others wait at __syncthreads)");
      }
    } catch (const Deadlock&) {
    }
  };
  std::atomic<bool> done{false};
  std::thread watchdog([&] { bar.watch(Barrier::timeout_seconds(), done); });
  std::vector<std::thread> threads;
  threads.reserve(nt);
  for (unsigned t = 0; t < nt; ++t) threads.emplace_back(body, t);
  for (auto& th : threads) th.join();
  done = true;
  watchdog.join();
  block_barrier = nullptr;
  if (bar.broken()) {
    char where[64];
    std::snprintf(where, sizeof(where), " (launch %lld, grid %u x %u x %u)", launches, grid.x, grid.y, grid.z);
    fail(cudaErrorLaunchTimeout, std::string(bar.message()) + where);
  } else if (static_bytes == SIZE_MAX) {  // first launch: the kernel's static shared size
    static_bytes = launch_static_bytes.load();
    if (static_bytes + smem > max_shared_bytes)
      fail(cudaErrorInvalidValue, "too much shared memory (static + dynamic > limit)");
  }
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

inline cudaError_t cudaPeekAtLastError() { return emu::last_error; }
inline cudaError_t cudaGetLastError() {
  const cudaError_t e = emu::last_error;
  emu::last_error = cudaSuccess;
  return e;
}
inline void __syncthreads() { emu::block_barrier->arrive_and_wait("__syncthreads"); }
inline int __syncthreads_or(int p) {
  emu::block_barrier->arrive_and_wait("__syncthreads_or");
  if (p) emu::or_flag.store(1);
  emu::block_barrier->arrive_and_wait("__syncthreads_or");
  const int r = emu::or_flag.load();
  emu::block_barrier->arrive_and_wait("__syncthreads_or");
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
