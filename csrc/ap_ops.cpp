// Device-agnostic op bodies: input checks that keep the kernels memory-safe, the compute dtype,
// the GEMMs, and streaming over blocks of queries. User-facing messages live in apl/_validation.py;
// these checks guard direct calls of torch.ops.apl.*.
#include "ap_ops.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>

namespace apl {
namespace {

at::ScalarType compute_dtype(const at::Tensor& t) {
  // float16 / bfloat16 are accumulated in float32; float64 stays float64.
  return t.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
}

// Every argument of every op, checked by one function (check_args) at the top of each op body:
// torch.ops.apl.* is public, so a direct call with a wrong shape, dtype, device or bin count must
// raise a clear error instead of reading out of bounds in a kernel. Unused members stay null.
struct OpArgs {
  const char* op;
  const RowKernels* k = nullptr;           // the device's kernels (their launch limits)
  const at::Tensor* grad_ap = nullptr;     // backward ops: (B) floating point
  const at::Tensor* x = nullptr;           // embeddings / queries / scores: 2-D floating point
  const char* x_name = "embeddings";
  const at::Tensor* labels = nullptr;      // (B) int64
  const char* labels_name = "labels";
  const at::Tensor* refs = nullptr;        // (N, D) floating point, D like x
  const at::Tensor* ref_labels = nullptr;  // (N) int64
  const at::Tensor* relevance = nullptr;   // bool, the shape of x
  const at::Tensor* coef = nullptr;        // (B, 2, num_bins) float64
  const at::Tensor* saved = nullptr;       // (B, N) in the compute dtype when chunk_size <= 0
  int64_t chunk_size = 0;
  bool self = false;                       // self retrieval (ap_self, ap_self_backward)
  int64_t self_offset = -1;                // ap_ref*: queries are rows [o, o + B) of refs, or -1
  int64_t num_bins = 0;
  double lo = -1.0, hi = 1.0;
  int64_t variant = 0;
};

// Bins are indexed with int (ap_math.h); this bound keeps 2 * num_bins and the per-row tables far
// from overflow and allocation failure.
constexpr int64_t kMaxBins = int64_t{1} << 24;

at::ScalarType compute_dtype_of(const at::Tensor& t) { return compute_dtype(t); }

void check_on(const OpArgs& a, const at::Tensor& t, const char* name) {
  TORCH_CHECK_VALUE(t.device() == a.x->device(), "apl: ", a.op, ": ", name, " is on ",
                    t.device(), " but ", a.x_name, " is on ", a.x->device());
}

void check_label_vector(const OpArgs& a, const at::Tensor& t, int64_t n, const char* name) {
  TORCH_CHECK_TYPE(t.scalar_type() == at::kLong, "apl: ", a.op, ": ", name,
                   " must be int64, got ", t.scalar_type());
  TORCH_CHECK_VALUE(t.dim() == 1 && t.size(0) == n, "apl: ", a.op, ": ", name,
                    " must have shape (", n, "), got ", t.sizes());
  check_on(a, t, name);
}

void check_args(const OpArgs& a) {
  TORCH_CHECK_VALUE(a.num_bins >= 2 && a.num_bins <= kMaxBins, "apl: ", a.op,
                    ": num_bins must be >= 2 and <= ", kMaxBins, ", got ", a.num_bins);
  TORCH_CHECK_VALUE(std::isfinite(a.lo) && std::isfinite(a.hi) && a.lo < a.hi, "apl: ", a.op,
                    ": score_range must be finite with lo < hi, got (", a.lo, ", ", a.hi, ")");
  TORCH_CHECK_VALUE(a.variant >= 0 && a.variant <= 2, "apl: ", a.op, ": unknown variant id ",
                    a.variant, " (0, 1 or 2)");
  const at::Tensor& x = *a.x;
  TORCH_CHECK_VALUE(x.dim() == 2, "apl: ", a.op, ": ", a.x_name, " must be 2-D, got ", x.dim(),
                    "-D");
  TORCH_CHECK_TYPE(at::isFloatingType(x.scalar_type()), "apl: ", a.op, ": ", a.x_name,
                   " must be floating point, got ", x.scalar_type());
  const int64_t B = x.size(0);
  int64_t N = x.size(0);
  if (a.labels != nullptr) check_label_vector(a, *a.labels, B, a.labels_name);
  if (a.refs != nullptr) {
    const at::Tensor& r = *a.refs;
    TORCH_CHECK_VALUE(r.dim() == 2, "apl: ", a.op, ": refs must be 2-D, got ", r.dim(), "-D");
    TORCH_CHECK_TYPE(at::isFloatingType(r.scalar_type()), "apl: ", a.op,
                     ": refs must be floating point, got ", r.scalar_type());
    TORCH_CHECK_VALUE(r.size(1) == x.size(1), "apl: ", a.op, ": refs must have ", x.size(1),
                      " columns like ", a.x_name, ", got ", r.size(1));
    check_on(a, r, "refs");
    N = r.size(0);
    if (a.ref_labels != nullptr) check_label_vector(a, *a.ref_labels, N, "ref_labels");
    TORCH_CHECK_VALUE(a.self_offset == -1 || (a.self_offset >= 0 && a.self_offset + B <= N),
                      "apl: ", a.op, ": self_offset must be -1 (no exclusion) or place the ", B,
                      " queries inside the ", N, " refs (0 <= self_offset <= ", N - B, "), got ",
                      a.self_offset);
  }
  if (a.relevance != nullptr) {
    const at::Tensor& rel = *a.relevance;
    TORCH_CHECK_TYPE(rel.scalar_type() == at::kBool, "apl: ", a.op,
                     ": relevance must be bool, got ", rel.scalar_type());
    TORCH_CHECK_VALUE(rel.sizes() == x.sizes(), "apl: ", a.op, ": relevance must have the shape ",
                      "of ", a.x_name, " ", x.sizes(), ", got ", rel.sizes());
    check_on(a, rel, "relevance");
    N = x.size(1);
  }
  if (a.grad_ap != nullptr) {
    const at::Tensor& g = *a.grad_ap;
    TORCH_CHECK_TYPE(at::isFloatingType(g.scalar_type()), "apl: ", a.op,
                     ": grad_ap must be floating point, got ", g.scalar_type());
    TORCH_CHECK_VALUE(g.dim() == 1 && g.size(0) == B, "apl: ", a.op,
                      ": grad_ap must have shape (", B, "), got ", g.sizes());
    check_on(a, g, "grad_ap");
  }
  if (a.coef != nullptr) {
    const at::Tensor& c = *a.coef;
    TORCH_CHECK_TYPE(c.scalar_type() == at::kDouble, "apl: ", a.op,
                     ": coef must be float64, got ", c.scalar_type());
    TORCH_CHECK_VALUE(c.dim() == 3 && c.size(0) == B && c.size(1) == 2 && c.size(2) == a.num_bins,
                      "apl: ", a.op, ": coef must have shape (", B, ", 2, ", a.num_bins,
                      ") (num_bins must be the forward's), got ", c.sizes());
    check_on(a, c, "coef");
  }
  if (a.k != nullptr) {
    const int64_t rows = a.chunk_size > 0 ? std::min(a.chunk_size, B) : B;
    TORCH_CHECK_VALUE(rows <= a.k->max_rows, "apl: ", a.op, ": the ", x.device().type(),
                      " kernels take at most ", a.k->max_rows, " query rows per launch (the ",
                      "grid's x limit), got ", rows, "; pass chunk_size or split the rows");
    TORCH_CHECK_VALUE(!a.self || a.chunk_size > 0 || B <= a.k->max_self_batch, "apl: ", a.op,
                      ": without chunk_size the ", x.device().type(), " kernels take B <= ",
                      a.k->max_self_batch, " (the self-retrieval backward launches (B / 32)^2 ",
                      "tiles, at most 65535 per grid dimension), got B = ", B,
                      "; pass chunk_size");
  }
  if (a.saved != nullptr && a.chunk_size <= 0) {
    const at::Tensor& s = *a.saved;
    TORCH_CHECK_VALUE(s.dim() == 2 && s.size(0) == B && s.size(1) == N, "apl: ", a.op,
                      ": scores must be the (", B, ", ", N, ") tensor saved by the forward when ",
                      "chunk_size <= 0, got ", s.sizes());
    TORCH_CHECK_TYPE(s.scalar_type() == compute_dtype_of(x), "apl: ", a.op, ": scores must be ",
                     compute_dtype_of(x), " (the forward's compute dtype), got ", s.scalar_type());
    check_on(a, s, "scores");
  }
}

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

// The unit-gradient strategy when the device provides it. APL_SCORES_STRATEGY=1 (read once)
// forces the scores strategy that devices without it use, so that path is tested on CPU too.
bool use_unit(const RowKernels& k) {
  static const bool forced_off = [] {
    const char* v = std::getenv("APL_SCORES_STRATEGY");
    return v != nullptr && std::strcmp(v, "") != 0 && std::strcmp(v, "0") != 0;
  }();
  return k.forward_labels_unit != nullptr && k.symmetrize_unit != nullptr && !forced_off;
}

// Rows per block of H in the self-retrieval backward: about 2^21 elements, reused for every block.
int64_t symmetric_block_rows(int64_t B) {
  return std::max<int64_t>(1, std::min<int64_t>(B, (int64_t{1} << 21) / std::max<int64_t>(B, 1)));
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
  OpArgs a{"ap_self", &k};
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
    scores = at::matmul(D, D.t());
    if (use_unit(k)) {  // the saved (B, B) tensor becomes U = dAP / dS, in place
      k.forward_labels_unit(scores, lab, lab, 0, p, out.ap, out.npos, out.coef, out.flag, scores);
    } else {
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
  OpArgs a{"ap_self_backward", &k};
  a.self = true;
  a.grad_ap = &grad_ap, a.x = &embeddings, a.labels = &labels, a.coef = &coef, a.saved = &scores;
  a.chunk_size = chunk_size, a.num_bins = num_bins, a.lo = lo, a.hi = hi;
  check_args(a);
  const int64_t B = embeddings.size(0);
  const auto D = embeddings.to(compute_dtype(embeddings)).contiguous();
  const auto lab = labels.contiguous();
  const auto p = params(num_bins, lo, hi);
  at::Tensor dD;
  if (chunk_size <= 0) {
    TORCH_CHECK_VALUE(scores.dim() == 2 && scores.size(0) == B && scores.size(1) == B,
                      "apl: ap_self_backward needs the saved (B, B) scores when chunk_size <= 0");
    if (use_unit(k)) {
      // dD = (G + G^T) D with G = diag(g) U, built one block of rows at a time in a reused buffer.
      const auto U = scores.contiguous();
      const auto g = grad_or_zeros(grad_ap, B, D).to(D.scalar_type()).contiguous();
      dD = at::empty_like(D);
      const int64_t rows = symmetric_block_rows(B);
      auto buffer = at::empty({rows, B}, D.options());
      for (int64_t r0 = 0; r0 < B; r0 += rows) {
        const int64_t R = std::min(rows, B - r0);
        auto H = buffer.narrow(0, 0, R);
        k.symmetrize_unit(U, g, r0, H);
        auto out = dD.narrow(0, r0, R);
        at::mm_out(out, H, D);
      }
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
  OpArgs a{"ap_ref", &k};
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
  OpArgs a{"ap_ref_backward", &k};
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
  OpArgs a{"ap_scores", &k};
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
  OpArgs a{"ap_scores_backward", &k};
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
