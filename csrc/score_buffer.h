// Allocation of the large score buffers (S, its packed upper block rows): written whole by a GEMM right
// after allocation, and freed after the backward.
#pragma once

#include <ATen/ATen.h>

namespace apl {

// at::empty(sizes, options), and for a CPU buffer of at least 2 MiB on Linux the kernel is asked to
// back it with transparent huge pages (madvise MADV_HUGEPAGE, honoured where THP is "madvise" or
// "always"): a fresh buffer of B^2 / 2 floats otherwise costs one page fault per 4 KiB when the GEMM
// first writes it, about a sixth of the forward at B = 4096 on a 2-core machine. Torch's own
// THP_MEM_ALLOC_ENABLE=1 does the same for every allocation; this covers the default.
at::Tensor empty_scores(at::IntArrayRef sizes, const at::TensorOptions& options);

}  // namespace apl
