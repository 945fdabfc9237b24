// Deliberately broken kernels for the emulator's own tests (tests/cuda/test_emulator_rules.py): each case of
// main() makes one mistake a GPU punishes and prints what the emulator reported. Rewritten by
// transform.py like the real kernels, then compiled by g++ against cuda_runtime_api.h.
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

namespace {

std::atomic<int> counter{0};
std::atomic<int> runs{0};

__global__ void noop_kernel(int* out) {
  if (threadIdx.x == 0) runs++;
  if (out != nullptr && threadIdx.x == 0) out[blockIdx.x] = 1;
}

__global__ void dynamic_smem_kernel(int* out) {
  extern __shared__ int dyn[];
  dyn[threadIdx.x] = 1;
  __syncthreads();
  if (threadIdx.x == 0) out[0] = dyn[blockDim.x - 1];
}

__global__ void big_static_kernel(int* out) {
  __shared__ char big[40 * 1024];
  if (threadIdx.x == 0) {
    runs++;
    big[0] = 1;
    out[0] = big[0];
  }
}

// Reads static shared memory it never wrote (in this block).
__global__ void uninitialised_static_kernel(unsigned* out) {
  __shared__ unsigned s[64];
  out[blockIdx.x * 64 + threadIdx.x] = s[threadIdx.x];
}

// Expects the value the previous block left in shared memory.
__global__ void carry_over_kernel(unsigned* out) {
  __shared__ unsigned carried;
  if (threadIdx.x == 0) {
    out[blockIdx.x] = carried;
    carried = 42u;
  }
}

// Records the order in which blocks run.
__global__ void order_kernel(int* out) {
  if (threadIdx.x == 0) out[blockIdx.x] = counter++;
}

// Thread 0 waits at one __syncthreads more than the rest of the block.
__global__ void deadlock_kernel(int* out) {
  __syncthreads();
  if (threadIdx.x == 0) {
    __syncthreads();
    out[0] = 1;
  }
}

void report(const char* what) {
  const int peek = cudaPeekAtLastError();
  const int peek2 = cudaPeekAtLastError();
  const int get = cudaGetLastError();
  const int after = cudaGetLastError();
  std::printf("%s peek=%d peek2=%d get=%d after=%d runs=%d msg=%s\n", what, peek, peek2, get, after,
              runs.load(), emu::last_message());
}

}  // namespace

int main(int argc, char** argv) {
  const std::string c = argc > 1 ? argv[1] : "";
  std::vector<int> out(4096, -1);
  std::vector<unsigned> uout(4096, 0u);
  if (c == "limits_ok") {  // exactly at every limit: accepted
    dynamic_smem_kernel<<<1, 1024, 48 * 1024, nullptr>>>(out.data());
    report("smem48k_1024threads");
    noop_kernel<<<dim3(1, 3, 2), dim3(2, 2, 64), 0, nullptr>>>(nullptr);
    report("block_z64");
  } else if (c == "threads") {
    noop_kernel<<<1, 1025, 0, nullptr>>>(nullptr);
    report("threads1025");
    noop_kernel<<<1, dim3(1, 1, 65), 0, nullptr>>>(nullptr);
    report("block_z65");
  } else if (c == "grid") {
    noop_kernel<<<dim3(1, 70000), 32, 0, nullptr>>>(nullptr);
    report("grid_y70000");
    noop_kernel<<<dim3(1, 1, 65536), 32, 0, nullptr>>>(nullptr);
    report("grid_z65536");
  } else if (c == "dynamic_smem") {
    dynamic_smem_kernel<<<1, 32, 48 * 1024 + 8, nullptr>>>(out.data());
    report("dynamic");
  } else if (c == "static_smem") {
    big_static_kernel<<<1, 32, 8 * 1024, nullptr>>>(out.data());  // 40 + 8 KiB: at the limit
    report("static40k_dynamic8k");
    big_static_kernel<<<1, 32, 9 * 1024, nullptr>>>(out.data());  // over it
    report("static40k_dynamic9k");
  } else if (c == "uninitialised") {
    uninitialised_static_kernel<<<3, 64, 0, nullptr>>>(uout.data());
    cudaGetLastError();
    std::printf("values:");
    for (int i = 0; i < 3 * 64; ++i) std::printf(" %u", uout[i]);
    std::printf("\n");
  } else if (c == "carry_over") {
    carry_over_kernel<<<8, 32, 0, nullptr>>>(uout.data());
    std::printf("values:");
    for (int i = 0; i < 8; ++i) std::printf(" %u", uout[i]);
    std::printf("\n");
  } else if (c == "order") {
    order_kernel<<<64, 32, 0, nullptr>>>(out.data());
    std::printf("values:");
    for (int i = 0; i < 64; ++i) std::printf(" %d", out[i]);
    std::printf("\n");
  } else if (c == "deadlock") {
    deadlock_kernel<<<2, 64, 0, nullptr>>>(out.data());
    report("deadlock");
    noop_kernel<<<1, 32, 0, nullptr>>>(nullptr);  // the emulator still works afterwards
    report("after_deadlock");
  } else {
    std::fprintf(stderr, "unknown case %s\n", c.c_str());
    return 2;
  }
  return 0;
}
