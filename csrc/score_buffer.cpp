#include "score_buffer.h"

#include <cstdint>

#if defined(__linux__)
#include <sys/mman.h>
#endif

namespace apl {

at::Tensor empty_scores(at::IntArrayRef sizes, const at::TensorOptions& options) {
  auto t = at::empty(sizes, options);
#if defined(__linux__) && defined(MADV_HUGEPAGE)
  constexpr uintptr_t kHuge = uintptr_t{1} << 21;
  if (t.device().is_cpu() && t.nbytes() >= kHuge) {
    const auto p = reinterpret_cast<uintptr_t>(t.data_ptr());
    const uintptr_t a = (p + kHuge - 1) & ~(kHuge - 1), e = (p + t.nbytes()) & ~(kHuge - 1);
    // Advice only: a kernel without THP refuses it, and the buffer is the same either way.
    if (e > a) (void)madvise(reinterpret_cast<void*>(a), e - a, MADV_HUGEPAGE);
  }
#endif
  return t;
}

}  // namespace apl
