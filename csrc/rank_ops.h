// Device-agnostic bodies of the rank-surrogate ops (Smooth-AP, Recall@k): dtype handling, the
// GEMMs, streaming over blocks of queries. Each device supplies one row kernel through RankKernels.
// The math is rank_math.h; the definitions docs/rank_losses.md.
#pragma once

#include <ATen/ATen.h>

#include "gram.h"

#include <cstdint>
#include <tuple>
#include <vector>

namespace apl {

// The loss and its parameters, as the ops receive them.
struct RankParams {
  int64_t kind = 0;          // rank::Kind
  double temperature = 0.01; // of the sigmoid that ranks (tau, tau_1 of Recall@k)
  std::vector<double> ks;    // Recall@k: the k values and their temperatures (tau_2)
  std::vector<double> k_temperatures;
  int64_t query_mode = 0;    // rank::QueryMode
};

// The row kernel: R query rows against N items.
//  S: (R, N) scores in the compute dtype (float or double), contiguous.
//  q_labels (R), x_labels (N): int64; an item is a positive of query r when its label is the query's.
//  self_offset >= 0: column self_offset + r is query r itself, treated as `query_mode` says
//  (left out; an item and a positive; an item only); -1: the query is not among the items.
//  Writes value (R) in the compute dtype (the query's Smooth-AP or Recall@k, 0 without a positive),
//  npos (R, int64: the positives averaged over, 0 when the query is left out), U = d value_r / d S
//  (R, N) in the compute dtype (may alias S: each row is read before it is overwritten), and sets
//  nonfinite[0] (int32) to 1 when a score is NaN or Inf.
struct RankKernels {
  void (*forward)(const at::Tensor& S, const at::Tensor& q_labels, const at::Tensor& x_labels,
                  int64_t self_offset, const RankParams& p, at::Tensor& value, at::Tensor& npos,
                  at::Tensor& nonfinite, at::Tensor& U);
  // Self retrieval's backward dD = (diag(g) U + U^T diag(g)) D for a square U, written into dD
  // (B, dim); nullptr: the op uses two GEMMs instead.
  void (*symmetric_product)(const at::Tensor& U, const at::Tensor& g, const at::Tensor& D, at::Tensor& dD) = nullptr;
  bool (*can_sync)() = nullptr;
  int64_t max_rows = INT64_MAX;
  // Optional: the self-retrieval scores from half a GEMM, mirrored (gram.h).
  MirrorFn mirror_upper = nullptr;
  // Optional, self retrieval: `forward` on the block rows of S on and above the diagonal
  // (gram.h's self_gram_upper, S's other entries unset), U = S; nullptr: S is mirrored first.
  void (*forward_upper)(const at::Tensor& S, const at::Tensor& labels, const RankParams& p, at::Tensor& value,
                        at::Tensor& npos, at::Tensor& nonfinite, at::Tensor& U) = nullptr;
};

using RankForwardOut = std::tuple<at::Tensor, at::Tensor, at::Tensor>;

RankParams rank_params(int64_t kind, double temperature, at::ArrayRef<double> ks,
                       at::ArrayRef<double> k_temperatures, int64_t query_mode);

RankForwardOut rank_self_impl(const RankKernels& k, const at::Tensor& embeddings, const at::Tensor& labels,
                              const RankParams& p, int64_t chunk_size);
at::Tensor rank_self_backward_impl(const RankKernels& k, const at::Tensor& grad_value, const at::Tensor& embeddings,
                                   const at::Tensor& labels, const at::Tensor& saved, const RankParams& p,
                                   int64_t chunk_size);
RankForwardOut rank_ref_impl(const RankKernels& k, const at::Tensor& queries, const at::Tensor& query_labels,
                             const at::Tensor& refs, const at::Tensor& ref_labels, const RankParams& p,
                             int64_t chunk_size, int64_t self_offset);
std::tuple<at::Tensor, at::Tensor> rank_ref_backward_impl(
    const RankKernels& k, const at::Tensor& grad_value, const at::Tensor& queries, const at::Tensor& query_labels,
    const at::Tensor& refs, const at::Tensor& ref_labels, const at::Tensor& saved, const RankParams& p,
    int64_t chunk_size, int64_t self_offset);

}  // namespace apl
