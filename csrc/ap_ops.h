// Device-agnostic bodies of the apl ops: dtype handling, the GEMMs, streaming over query blocks.
// Each device supplies the row kernels (the fused binning passes) through RowKernels.
#pragma once

#include <ATen/ATen.h>

#include "gram.h"

#include <cstdint>
#include <tuple>

namespace apl {

struct BinParams {
  int64_t M;
  double lo, hi;
  int64_t variant;
};

// Row kernels work on one block of R query rows against N items.
//  S: (R, N) scores in the compute dtype (float or double), contiguous.
//  Labels form: q_labels (R) and x_labels (N), int64; when self_offset >= 0, column
//  self_offset + r is query r itself and is left out of its list.
//  Mask form: relevance (R, N) bool.
//  Forward writes ap (R), npos (R, int64), coef (R, 2, M) double = [dAP/dp, dAP/dn], and sets
//  nonfinite[0] (int32) to 1 when a score is NaN or Inf.
//  Backward reads slopes (R, 2, M - 1) double = [negatives, positives] (see ap_math.h `slopes`) and
//  writes G = dL/dS (R, N) in the compute dtype.
struct RowKernels {
  void (*forward_labels)(const at::Tensor& S, const at::Tensor& q_labels, const at::Tensor& x_labels,
                         int64_t self_offset, const BinParams& p, at::Tensor& ap, at::Tensor& npos,
                         at::Tensor& coef, at::Tensor& nonfinite);
  void (*forward_mask)(const at::Tensor& S, const at::Tensor& relevance, const BinParams& p,
                       at::Tensor& ap, at::Tensor& npos, at::Tensor& coef, at::Tensor& nonfinite);
  void (*backward_labels)(const at::Tensor& S, const at::Tensor& q_labels,
                          const at::Tensor& x_labels, int64_t self_offset,
                          const at::Tensor& slopes, const BinParams& p, at::Tensor& G);
  void (*backward_mask)(const at::Tensor& S, const at::Tensor& relevance, const at::Tensor& slopes,
                        const BinParams& p, at::Tensor& G);
  // Self retrieval, S square: writes H = G + G^T in one pass (diagonal 0), so that the embedding
  // gradient is a single GEMM H @ D instead of two.
  void (*backward_self_symmetric)(const at::Tensor& S, const at::Tensor& labels,
                                  const at::Tensor& slopes, const BinParams& p, at::Tensor& H);
  // False while the device's stream is being captured into a graph: no host sync is allowed then,
  // so the non-finite check is skipped (documented).
  bool (*can_sync)();

  // Optional (nullptr when a device does not provide it): the unit-gradient strategy of reference
  // sets. forward_labels_unit is forward_labels that also writes U_ij = dAP_i / dS_ij (the gradient
  // for an upstream gradient of 1; 0 for the query itself and outside (lo, hi)) into U, which may
  // alias S: the row is still in cache, and backward never has to locate a score again.
  void (*forward_labels_unit)(const at::Tensor& S, const at::Tensor& q_labels,
                              const at::Tensor& x_labels, int64_t self_offset,
                              const BinParams& p, at::Tensor& ap, at::Tensor& npos,
                              at::Tensor& coef, at::Tensor& nonfinite, at::Tensor& U) = nullptr;

  // Launch limits of the device, checked by the ops before anything is allocated: query rows per
  // row-kernel call, and B of backward_self_symmetric (self retrieval without streaming).
  int64_t max_rows = INT64_MAX;
  int64_t max_self_batch = INT64_MAX;

  // Optional: the lower triangle of the self-retrieval scores from the upper one (gram.h); with it
  // the forward multiplies half of S = D D^T.
  MirrorFn mirror_upper = nullptr;

  // Optional: self retrieval without streaming from the packed upper block rows P of S
  // (packed_upper.h; self_gram_packed), which then is the tensor saved for backward. Forward is
  // forward_labels on the rows of S; backward writes dD = (G + G^T) D for G = diag(g) dAP/dS, with
  // g in D's dtype.
  void (*self_packed_forward)(const at::Tensor& P, const at::Tensor& labels, const BinParams& p,
                              at::Tensor& ap, at::Tensor& npos, at::Tensor& coef,
                              at::Tensor& nonfinite) = nullptr;
  void (*self_packed_backward)(const at::Tensor& P, const at::Tensor& labels, const at::Tensor& coef,
                               const at::Tensor& g, const BinParams& p, const at::Tensor& D,
                               at::Tensor& dD) = nullptr;
};

using ForwardOut = std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor>;

ForwardOut ap_self_impl(const RowKernels& k, const at::Tensor& embeddings, const at::Tensor& labels,
                        int64_t num_bins, double lo, double hi, int64_t variant, int64_t chunk_size);
at::Tensor ap_self_backward_impl(const RowKernels& k, const at::Tensor& grad_ap,
                                 const at::Tensor& embeddings, const at::Tensor& labels,
                                 const at::Tensor& coef, const at::Tensor& scores, int64_t num_bins,
                                 double lo, double hi, int64_t chunk_size);

ForwardOut ap_ref_impl(const RowKernels& k, const at::Tensor& queries, const at::Tensor& query_labels,
                       const at::Tensor& refs, const at::Tensor& ref_labels, int64_t num_bins,
                       double lo, double hi, int64_t variant, int64_t chunk_size,
                       int64_t self_offset);
std::tuple<at::Tensor, at::Tensor> ap_ref_backward_impl(
    const RowKernels& k, const at::Tensor& grad_ap, const at::Tensor& queries,
    const at::Tensor& query_labels, const at::Tensor& refs, const at::Tensor& ref_labels,
    const at::Tensor& coef, const at::Tensor& scores, int64_t num_bins, double lo, double hi,
    int64_t chunk_size, int64_t self_offset);

std::tuple<at::Tensor, at::Tensor, at::Tensor> ap_scores_impl(const RowKernels& k,
                                                              const at::Tensor& scores,
                                                              const at::Tensor& relevance,
                                                              int64_t num_bins, double lo,
                                                              double hi, int64_t variant);
at::Tensor ap_scores_backward_impl(const RowKernels& k, const at::Tensor& grad_ap,
                                   const at::Tensor& scores, const at::Tensor& relevance,
                                   const at::Tensor& coef, int64_t num_bins, double lo, double hi);

}  // namespace apl
