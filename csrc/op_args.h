// Argument checks of every apl op (tested one message at a time by tests/ops/test_op_args.py).
// torch.ops.apl.* is public: a direct call with a wrong shape, dtype, device or bin count must
// raise a clear error instead of reading out of bounds in a kernel. User-facing messages of the
// Python API live in apl/ops/validation.py.
#pragma once

#include <ATen/ATen.h>

#include <cstdint>

#include "ap_ops.h"
#include "rank_ops.h"

namespace apl {

// float16 / bfloat16 are accumulated in float32; float64 stays float64.
at::ScalarType compute_dtype(const at::Tensor& t);

// Every argument of an op, checked by one function (check_args) at the top of each op body.
// Unused members stay null.
struct OpArgs {
  const char* op;
  int64_t max_rows = INT64_MAX;            // launch limits of the device's kernels
  int64_t max_self_batch = INT64_MAX;
  const at::Tensor* grad_ap = nullptr;     // backward ops: (B) floating point
  const char* grad_name = "grad_ap";
  const at::Tensor* x = nullptr;           // embeddings / queries / scores: 2-D floating point
  const char* x_name = "embeddings";
  const at::Tensor* labels = nullptr;      // (B) int64
  const char* labels_name = "labels";
  const at::Tensor* refs = nullptr;        // (N, D) floating point, D like x
  const at::Tensor* ref_labels = nullptr;  // (N) int64
  const at::Tensor* relevance = nullptr;   // bool, the shape of x
  const at::Tensor* coef = nullptr;        // (B, 2, num_bins) float64
  const at::Tensor* saved = nullptr;       // (B, N) in the compute dtype when chunk_size <= 0
  const char* saved_name = "scores";
  bool saved_packed = false;               // ap_self_backward: the packed upper scores (packed_upper.h)
  int64_t chunk_size = 0;
  bool self = false;                       // self retrieval (ap_self, ap_self_backward)
  int64_t self_offset = -1;                // ap_ref*: queries are rows [o, o + B) of refs, or -1
  int64_t num_bins = 0;                    // AP ops: the bins and the variant
  double lo = -1.0, hi = 1.0;
  int64_t variant = 0;
  const RankParams* rank = nullptr;        // rank ops: their loss and parameters instead

  OpArgs(const char* name, const RowKernels& k)
      : op(name), max_rows(k.max_rows), max_self_batch(k.max_self_batch) {}
  OpArgs(const char* name, const RankKernels& k, const RankParams& p)
      : op(name), max_rows(k.max_rows), grad_name("grad_value"), saved_name("saved"), rank(&p) {}
};

void check_args(const OpArgs& a);

}  // namespace apl
