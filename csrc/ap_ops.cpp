// Device-agnostic op bodies: the compute dtype, the GEMMs, and streaming over blocks of queries.
// Every op checks its arguments first (op_args.h).
#include "ap_ops.h"
#include "op_args.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>

namespace apl {
namespace {

// The binning pass flags non-finite scores for free; reading the flag is one host sync.
void check_finite(const RowKernels& k, const at::Tensor& flag, const char* what) {
  if (!k.can_sync()) return;
  TORCH_CHECK_VALUE(flag.item<int32_t>() == 0, "apl: ", what,
                    " contain NaN or Inf values (a similarity score is not finite)");
}

BinParams params(int64_t num_bins, double lo, double hi, int64_t variant = 0) {
  return BinParams{num_bins, lo, hi, variant};
}

// slopes[r, 0, m] (negatives) and slopes[r, 1, m] (positives): grad_ap_r * (a_m - a_{m+1}) / Delta.
at::Tensor make_slopes(const at::Tensor& coef, const at::Tensor& grad_ap, const BinParams& p) {
  const double inv_delta = static_cast<double>(p.M - 1) / (p.hi - p.lo);
  auto g = grad_ap.to(at::kDouble).mul(inv_delta).unsqueeze(1);  // (R, 1)
  auto cp = coef.select(1, 0), cn = coef.select(1, 1);
  auto dn = cn.narrow(1, 0, p.M - 1) - cn.narrow(1, 1, p.M - 1);
  auto dp = cp.narrow(1, 0, p.M - 1) - cp.narrow(1, 1, p.M - 1);
  return at::stack({g * dn, g * (dn + dp)}, 1).contiguous();
}

at::Tensor grad_or_zeros(const at::Tensor& grad_ap, int64_t n, const at::Tensor& like) {
  if (grad_ap.defined() && grad_ap.numel() == n) return grad_ap.contiguous();
  return at::zeros({n}, like.options().dtype(at::kDouble));
}

// APL_SCORES_STRATEGY=1 (read once) forces the scores strategy that devices without the
// unit-gradient or packed kernels use, so that that path is tested on CPU too.
bool scores_strategy_forced() {
  static const bool forced = [] {
    const char* v = std::getenv("APL_SCORES_STRATEGY");
    return v != nullptr && std::strcmp(v, "") != 0 && std::strcmp(v, "0") != 0;
  }();
  return forced;
}

// The unit-gradient strategy (reference sets) when the device provides it.
bool use_unit(const RowKernels& k) {
  return k.forward_labels_unit != nullptr && !scores_strategy_forced();
}

// Self retrieval on the packed upper scores when the device provides it (the saved tensor is then
// 1-D; apl/ops/compiled.py's fake kernel makes the same choice).
bool use_packed(const RowKernels& k) {
  return k.self_packed_forward != nullptr && k.self_packed_backward != nullptr && !scores_strategy_forced();
}

struct Forward {
  at::Tensor ap, npos, coef, flag;
  Forward(int64_t B, int64_t M, const at::Tensor& like)
      : ap(at::empty({B}, like.options())),
        npos(at::empty({B}, like.options().dtype(at::kLong))),
        coef(at::empty({B, 2, M}, like.options().dtype(at::kDouble))),
        flag(at::zeros({1}, like.options().dtype(at::kInt))) {}
  at::Tensor ap_rows(int64_t r0, int64_t R) { return ap.narrow(0, r0, R); }
  at::Tensor npos_rows(int64_t r0, int64_t R) { return npos.narrow(0, r0, R); }
  at::Tensor coef_rows(int64_t r0, int64_t R) { return coef.narrow(0, r0, R); }
};

}  // namespace

ForwardOut ap_self_impl(const RowKernels& k, const at::Tensor& embeddings, const at::Tensor& labels,
                        int64_t num_bins, double lo, double hi, int64_t variant,
                        int64_t chunk_size) {
  OpArgs a("ap_self", k);
  a.self = true, a.chunk_size = chunk_size;
  a.x = &embeddings;
  a.labels = &labels;
  a.num_bins = num_bins, a.lo = lo, a.hi = hi, a.variant = variant;
  check_args(a);
  const int64_t B = embeddings.size(0);
  const auto D = embeddings.to(compute_dtype(embeddings)).contiguous();
  const auto lab = labels.contiguous();
  const auto p = params(num_bins, lo, hi, variant);
  Forward out(B, num_bins, D);
  at::Tensor scores;
  if (chunk_size <= 0) {
    if (use_packed(k)) {
      scores = self_gram_packed(D);
      k.self_packed_forward(scores, lab, p, out.ap, out.npos, out.coef, out.flag);
    } else {
      scores = self_gram(D, k.mirror_upper);
      k.forward_labels(scores, lab, lab, 0, p, out.ap, out.npos, out.coef, out.flag);
    }
  } else {
    scores = at::empty({0}, D.options());
    for (int64_t r0 = 0; r0 < B; r0 += chunk_size) {
      const int64_t R = std::min(chunk_size, B - r0);
      const auto S = at::matmul(D.narrow(0, r0, R), D.t());
      auto ap = out.ap_rows(r0, R), npos = out.npos_rows(r0, R), coef = out.coef_rows(r0, R);
      k.forward_labels(S, lab.narrow(0, r0, R), lab, r0, p, ap, npos, coef, out.flag);
    }
  }
  check_finite(k, out.flag, "embeddings");
  return {out.ap, out.npos, out.coef, scores};
}

at::Tensor ap_self_backward_impl(const RowKernels& k, const at::Tensor& grad_ap,
                                 const at::Tensor& embeddings, const at::Tensor& labels,
                                 const at::Tensor& coef, const at::Tensor& scores, int64_t num_bins,
                                 double lo, double hi, int64_t chunk_size) {
  OpArgs a("ap_self_backward", k);
  a.self = true;
  a.grad_ap = &grad_ap, a.x = &embeddings, a.labels = &labels, a.coef = &coef, a.saved = &scores;
  a.chunk_size = chunk_size, a.num_bins = num_bins, a.lo = lo, a.hi = hi;
  a.saved_packed = use_packed(k);
  check_args(a);
  const int64_t B = embeddings.size(0);
  const auto D = embeddings.to(compute_dtype(embeddings)).contiguous();
  const auto lab = labels.contiguous();
  const auto p = params(num_bins, lo, hi);
  at::Tensor dD;
  if (chunk_size <= 0) {
    if (use_packed(k)) {
      const auto g = grad_or_zeros(grad_ap, B, D).to(D.scalar_type()).contiguous();
      dD = at::empty_like(D);
      k.self_packed_backward(scores.contiguous(), lab, coef.contiguous(), g, p, D, dD);
    } else {
      const auto slopes = make_slopes(coef, grad_or_zeros(grad_ap, B, D), p);
      auto H = at::empty_like(scores);
      k.backward_self_symmetric(scores.contiguous(), lab, slopes, p, H);
      dD = at::matmul(H, D);
    }
  } else {
    const auto slopes = make_slopes(coef, grad_or_zeros(grad_ap, B, D), p);
    dD = at::zeros_like(D);
    for (int64_t r0 = 0; r0 < B; r0 += chunk_size) {
      const int64_t R = std::min(chunk_size, B - r0);
      const auto Dr = D.narrow(0, r0, R);
      const auto S = at::matmul(Dr, D.t());  // recomputed: nothing of size B x B is kept
      auto G = at::empty_like(S);
      k.backward_labels(S, lab.narrow(0, r0, R), lab, r0, slopes.narrow(0, r0, R), p, G);
      dD.narrow(0, r0, R).addmm_(G, D);  // rows:    sum_j G_ij d_j
      dD.addmm_(G.t(), Dr);              // columns: sum_i G_ij d_i
    }
  }
  return dD.to(embeddings.scalar_type());
}

ForwardOut ap_ref_impl(const RowKernels& k, const at::Tensor& queries, const at::Tensor& query_labels,
                       const at::Tensor& refs, const at::Tensor& ref_labels, int64_t num_bins,
                       double lo, double hi, int64_t variant, int64_t chunk_size,
                       int64_t self_offset) {
  OpArgs a("ap_ref", k);
  a.chunk_size = chunk_size, a.self_offset = self_offset;
  a.x = &queries, a.x_name = "queries", a.labels = &query_labels, a.labels_name = "query_labels";
  a.refs = &refs, a.ref_labels = &ref_labels;
  a.num_bins = num_bins, a.lo = lo, a.hi = hi, a.variant = variant;
  check_args(a);
  const int64_t B = queries.size(0);
  const auto dtype = compute_dtype(queries);
  const auto Q = queries.to(dtype).contiguous(), X = refs.to(dtype).contiguous();
  const auto ql = query_labels.contiguous(), xl = ref_labels.contiguous();
  const auto p = params(num_bins, lo, hi, variant);
  Forward out(B, num_bins, Q);
  at::Tensor scores;
  if (chunk_size <= 0) {
    scores = at::matmul(Q, X.t());
    if (use_unit(k)) {
      k.forward_labels_unit(scores, ql, xl, self_offset, p, out.ap, out.npos, out.coef, out.flag, scores);
    } else {
      k.forward_labels(scores, ql, xl, self_offset, p, out.ap, out.npos, out.coef, out.flag);
    }
  } else {
    scores = at::empty({0}, Q.options());
    for (int64_t r0 = 0; r0 < B; r0 += chunk_size) {
      const int64_t R = std::min(chunk_size, B - r0);
      const auto S = at::matmul(Q.narrow(0, r0, R), X.t());
      auto ap = out.ap_rows(r0, R), npos = out.npos_rows(r0, R), coef = out.coef_rows(r0, R);
      k.forward_labels(S, ql.narrow(0, r0, R), xl, self_offset < 0 ? -1 : self_offset + r0, p, ap, npos, coef, out.flag);
    }
  }
  check_finite(k, out.flag, "embeddings or ref_embeddings");
  return {out.ap, out.npos, out.coef, scores};
}

std::tuple<at::Tensor, at::Tensor> ap_ref_backward_impl(
    const RowKernels& k, const at::Tensor& grad_ap, const at::Tensor& queries,
    const at::Tensor& query_labels, const at::Tensor& refs, const at::Tensor& ref_labels,
    const at::Tensor& coef, const at::Tensor& scores, int64_t num_bins, double lo, double hi,
    int64_t chunk_size, int64_t self_offset) {
  OpArgs a("ap_ref_backward", k);
  a.self_offset = self_offset;
  a.grad_ap = &grad_ap, a.x = &queries, a.x_name = "queries", a.labels = &query_labels;
  a.labels_name = "query_labels", a.refs = &refs, a.ref_labels = &ref_labels, a.coef = &coef;
  a.saved = &scores, a.chunk_size = chunk_size, a.num_bins = num_bins, a.lo = lo, a.hi = hi;
  check_args(a);
  const int64_t B = queries.size(0), N = refs.size(0);
  const auto dtype = compute_dtype(queries);
  const auto Q = queries.to(dtype).contiguous(), X = refs.to(dtype).contiguous();
  const auto ql = query_labels.contiguous(), xl = ref_labels.contiguous();
  const auto p = params(num_bins, lo, hi);
  at::Tensor dQ, dX;
  if (chunk_size <= 0) {
    TORCH_CHECK_VALUE(scores.dim() == 2 && scores.size(0) == B && scores.size(1) == N,
                      "apl: ap_ref_backward needs the saved (B, N) scores when chunk_size <= 0");
    if (use_unit(k)) {  // G = diag(g) U: dQ = diag(g) (U X), dX = U^T (diag(g) Q); no B x N pass
      const auto g = grad_or_zeros(grad_ap, B, Q).to(Q.scalar_type()).unsqueeze(1);
      const auto U = scores.contiguous();
      dQ = at::mm(U, X).mul_(g);
      dX = at::mm(U.t(), Q * g);
    } else {
      const auto slopes = make_slopes(coef, grad_or_zeros(grad_ap, B, Q), p);
      auto G = at::empty_like(scores);
      k.backward_labels(scores.contiguous(), ql, xl, self_offset, slopes, p, G);
      dQ = at::matmul(G, X);
      dX = at::matmul(G.t(), Q);
    }
  } else {
    const auto slopes = make_slopes(coef, grad_or_zeros(grad_ap, B, Q), p);
    dQ = at::empty_like(Q);
    dX = at::zeros_like(X);
    for (int64_t r0 = 0; r0 < B; r0 += chunk_size) {
      const int64_t R = std::min(chunk_size, B - r0);
      const auto Qr = Q.narrow(0, r0, R);
      const auto S = at::matmul(Qr, X.t());
      auto G = at::empty_like(S);
      k.backward_labels(S, ql.narrow(0, r0, R), xl, self_offset < 0 ? -1 : self_offset + r0,
                        slopes.narrow(0, r0, R), p, G);
      auto dQr = dQ.narrow(0, r0, R);
      at::matmul_out(dQr, G, X);
      dX.addmm_(G.t(), Qr);
    }
  }
  return {dQ.to(queries.scalar_type()), dX.to(refs.scalar_type())};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> ap_scores_impl(const RowKernels& k,
                                                              const at::Tensor& scores,
                                                              const at::Tensor& relevance,
                                                              int64_t num_bins, double lo,
                                                              double hi, int64_t variant) {
  OpArgs a("ap_scores", k);
  a.x = &scores, a.x_name = "scores", a.relevance = &relevance;
  a.num_bins = num_bins, a.lo = lo, a.hi = hi, a.variant = variant;
  check_args(a);
  const auto S = scores.to(compute_dtype(scores)).contiguous();
  const auto rel = relevance.contiguous();
  const auto p = params(num_bins, lo, hi, variant);
  Forward out(S.size(0), num_bins, S);
  k.forward_mask(S, rel, p, out.ap, out.npos, out.coef, out.flag);
  check_finite(k, out.flag, "scores");
  return {out.ap, out.npos, out.coef};
}

at::Tensor ap_scores_backward_impl(const RowKernels& k, const at::Tensor& grad_ap,
                                   const at::Tensor& scores, const at::Tensor& relevance,
                                   const at::Tensor& coef, int64_t num_bins, double lo,
                                   double hi) {
  OpArgs a("ap_scores_backward", k);
  a.grad_ap = &grad_ap, a.x = &scores, a.x_name = "scores", a.relevance = &relevance;
  a.coef = &coef, a.num_bins = num_bins, a.lo = lo, a.hi = hi;
  check_args(a);
  const auto S = scores.to(compute_dtype(scores)).contiguous();
  const auto p = params(num_bins, lo, hi);
  const auto slopes = make_slopes(coef, grad_or_zeros(grad_ap, S.size(0), S), p);
  auto G = at::empty_like(S);
  k.backward_mask(S, relevance.contiguous(), slopes, p, G);
  return G.to(scores.scalar_type());
}

}  // namespace apl
