// Argument checks of every apl op (see op_args.h).
#include "op_args.h"
#include "packed_upper.h"

#include <algorithm>
#include <cmath>

namespace apl {

at::ScalarType compute_dtype(const at::Tensor& t) {
  return t.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
}

namespace {

// Bins are indexed with int (ap_math.h); this bound keeps 2 * num_bins and the per-row tables far
// from overflow and allocation failure.
constexpr int64_t kMaxBins = int64_t{1} << 24;

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

void check_rank_params(const OpArgs& a) {
  const RankParams& p = *a.rank;
  TORCH_CHECK_VALUE(p.kind == 0 || p.kind == 1, "apl: ", a.op, ": unknown loss kind ", p.kind,
                    " (0: Smooth-AP, 1: Recall@k)");
  TORCH_CHECK_VALUE(std::isfinite(p.temperature) && p.temperature > 0, "apl: ", a.op,
                    ": temperature must be finite and > 0, got ", p.temperature);
  TORCH_CHECK_VALUE(p.query_mode >= 0 && p.query_mode <= 2, "apl: ", a.op, ": unknown query mode ",
                    p.query_mode, " (0: left out, 1: item and positive, 2: item only)");
  if (p.kind == 1) {
    TORCH_CHECK_VALUE(!p.ks.empty() && p.ks.size() == p.k_temperatures.size(), "apl: ", a.op,
                      ": ks and k_temperatures must be non-empty and of equal length, got ", p.ks.size(),
                      " and ", p.k_temperatures.size());
    for (size_t i = 0; i < p.ks.size(); ++i) {
      TORCH_CHECK_VALUE(std::isfinite(p.ks[i]) && p.ks[i] >= 1, "apl: ", a.op, ": every k must be >= 1, got ",
                        p.ks[i]);
      TORCH_CHECK_VALUE(std::isfinite(p.k_temperatures[i]) && p.k_temperatures[i] > 0, "apl: ", a.op,
                        ": every k temperature must be finite and > 0, got ", p.k_temperatures[i]);
    }
  }
}

}  // namespace

void check_args(const OpArgs& a) {
  if (a.rank != nullptr) {
    check_rank_params(a);
  } else {
    TORCH_CHECK_VALUE(a.num_bins >= 2 && a.num_bins <= kMaxBins, "apl: ", a.op,
                      ": num_bins must be >= 2 and <= ", kMaxBins, ", got ", a.num_bins);
    TORCH_CHECK_VALUE(std::isfinite(a.lo) && std::isfinite(a.hi) && a.lo < a.hi, "apl: ", a.op,
                      ": score_range must be finite with lo < hi, got (", a.lo, ", ", a.hi, ")");
    TORCH_CHECK_VALUE(a.variant >= 0 && a.variant <= 2, "apl: ", a.op, ": unknown variant id ",
                      a.variant, " (0, 1 or 2)");
  }
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
    TORCH_CHECK_TYPE(at::isFloatingType(g.scalar_type()), "apl: ", a.op, ": ", a.grad_name,
                     " must be floating point, got ", g.scalar_type());
    TORCH_CHECK_VALUE(g.dim() == 1 && g.size(0) == B, "apl: ", a.op, ": ", a.grad_name,
                      " must have shape (", B, "), got ", g.sizes());
    check_on(a, g, a.grad_name);
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
  {
    const int64_t rows = a.chunk_size > 0 ? std::min(a.chunk_size, B) : B;
    TORCH_CHECK_VALUE(rows <= a.max_rows, "apl: ", a.op, ": the ", x.device().type(),
                      " kernels take at most ", a.max_rows, " query rows per launch (the ",
                      "grid's x limit), got ", rows, "; pass chunk_size or split the rows");
    TORCH_CHECK_VALUE(!a.self || a.chunk_size > 0 || B <= a.max_self_batch, "apl: ", a.op,
                      ": without chunk_size the ", x.device().type(), " kernels take B <= ",
                      a.max_self_batch, " (the self-retrieval backward launches (B / 32)^2 ",
                      "tiles, at most 65535 per grid dimension), got B = ", B,
                      "; pass chunk_size");
  }
  if (a.saved != nullptr && a.chunk_size <= 0) {
    const at::Tensor& s = *a.saved;
    if (a.saved_packed) {
      const int64_t n = PackedUpper{B}.numel();
      TORCH_CHECK_VALUE(s.dim() == 1 && s.size(0) == n, "apl: ", a.op, ": ", a.saved_name,
                        " must be the (", n, ",) packed upper scores saved by the forward when ",
                        "chunk_size <= 0 (B = ", B, "), got ", s.sizes());
    } else {
      TORCH_CHECK_VALUE(s.dim() == 2 && s.size(0) == B && s.size(1) == N, "apl: ", a.op, ": ",
                        a.saved_name, " must be the (", B, ", ", N, ") tensor saved by the forward when ",
                        "chunk_size <= 0, got ", s.sizes());
    }
    TORCH_CHECK_TYPE(s.scalar_type() == compute_dtype(x), "apl: ", a.op, ": ", a.saved_name, " must be ",
                     compute_dtype(x), " (the forward's compute dtype), got ", s.scalar_type());
    check_on(a, s, a.saved_name);
  }
}

}  // namespace apl
