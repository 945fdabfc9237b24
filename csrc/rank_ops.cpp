// Device-agnostic bodies of the rank-surrogate ops: the compute dtype, the GEMMs, and streaming over
// blocks of queries. Every op checks its arguments first (op_args.h). The row kernel writes the
// gradient of each query's value with respect to its scores (U) in the forward pass, while the row
// is in cache; the backward is then GEMMs with G = diag(grad_value) U. When streaming, nothing of
// size B x N is kept: the backward recomputes each block of scores and of U.
#include "rank_ops.h"

#include <algorithm>

#include "op_args.h"
#include "rank_math.h"

namespace apl {
namespace {

void check_finite(const RankKernels& k, const at::Tensor& flag, const char* what) {
  if (k.can_sync != nullptr && !k.can_sync()) return;
  TORCH_CHECK_VALUE(flag.item<int32_t>() == 0, "apl: ", what,
                    " contain NaN or Inf values (a similarity score is not finite)");
}

// Where query r's own column is: in self retrieval always column r; with a reference set at
// self_offset + r when the reference set starts with the queries, else nowhere.
int64_t self_column(int64_t self_offset, int64_t r0) { return self_offset < 0 ? -1 : self_offset + r0; }

struct Out {
  at::Tensor value, npos, flag;
  Out(int64_t B, const at::Tensor& like)
      : value(at::empty({B}, like.options())),
        npos(at::empty({B}, like.options().dtype(at::kLong))),
        flag(at::zeros({1}, like.options().dtype(at::kInt))) {}
};

// Forward over all rows: U (B, N) in place of the scores, or streamed blocks (U discarded).
at::Tensor forward_rows(const RankKernels& k, const at::Tensor& Q, const at::Tensor& ql, const at::Tensor& X,
                        const at::Tensor& xl, int64_t self_offset, const RankParams& p, int64_t chunk_size,
                        Out& out) {
  const int64_t B = Q.size(0);
  if (chunk_size <= 0) {
    if (Q.is_same(X) && k.forward_upper != nullptr) {
      at::Tensor U = self_gram_upper(Q);
      k.forward_upper(U, ql, p, out.value, out.npos, out.flag, U);
      return U;
    }
    at::Tensor U = Q.is_same(X) ? self_gram(Q, k.mirror_upper) : at::matmul(Q, X.t());
    k.forward(U, ql, xl, self_column(self_offset, 0), p, out.value, out.npos, out.flag, U);
    return U;
  }
  for (int64_t r0 = 0; r0 < B; r0 += chunk_size) {
    const int64_t R = std::min(chunk_size, B - r0);
    at::Tensor S = at::matmul(Q.narrow(0, r0, R), X.t());
    auto value = out.value.narrow(0, r0, R), npos = out.npos.narrow(0, r0, R);
    k.forward(S, ql.narrow(0, r0, R), xl, self_column(self_offset, r0), p, value, npos, out.flag, S);
  }
  return at::empty({0}, Q.options());
}

at::Tensor grad_or_zeros(const at::Tensor& g, int64_t n, const at::Tensor& like) {
  if (g.defined() && g.numel() == n) return g.to(like.scalar_type()).contiguous();
  return at::zeros({n}, like.options());
}

// Rows of the streamed backward: G = diag(g) U for one block, recomputed.
at::Tensor block_gradient(const RankKernels& k, const at::Tensor& Qr, const at::Tensor& qlr, const at::Tensor& X,
                          const at::Tensor& xl, int64_t self_col, const RankParams& p, const at::Tensor& gr) {
  at::Tensor U = at::matmul(Qr, X.t());
  Out scratch(Qr.size(0), Qr);
  k.forward(U, qlr, xl, self_col, p, scratch.value, scratch.npos, scratch.flag, U);
  return U.mul_(gr.unsqueeze(1));
}

}  // namespace

RankParams rank_params(int64_t kind, double temperature, at::ArrayRef<double> ks,
                       at::ArrayRef<double> k_temperatures, int64_t query_mode) {
  RankParams p;
  p.kind = kind;
  p.temperature = temperature;
  p.ks.assign(ks.begin(), ks.end());
  p.k_temperatures.assign(k_temperatures.begin(), k_temperatures.end());
  p.query_mode = query_mode;
  return p;
}

RankForwardOut rank_self_impl(const RankKernels& k, const at::Tensor& embeddings, const at::Tensor& labels,
                              const RankParams& p, int64_t chunk_size) {
  OpArgs a("rank_self", k, p);
  a.chunk_size = chunk_size, a.x = &embeddings, a.labels = &labels;
  check_args(a);
  const auto D = embeddings.to(compute_dtype(embeddings)).contiguous();
  const auto lab = labels.contiguous();
  Out out(D.size(0), D);
  at::Tensor saved = forward_rows(k, D, lab, D, lab, 0, p, chunk_size, out);
  check_finite(k, out.flag, "embeddings");
  return {out.value, out.npos, saved};
}

at::Tensor rank_self_backward_impl(const RankKernels& k, const at::Tensor& grad_value, const at::Tensor& embeddings,
                                   const at::Tensor& labels, const at::Tensor& saved, const RankParams& p,
                                   int64_t chunk_size) {
  OpArgs a("rank_self_backward", k, p);
  a.grad_ap = &grad_value, a.x = &embeddings, a.labels = &labels, a.saved = &saved, a.chunk_size = chunk_size;
  check_args(a);
  const int64_t B = embeddings.size(0);
  const auto D = embeddings.to(compute_dtype(embeddings)).contiguous();
  const auto lab = labels.contiguous();
  const auto g = grad_or_zeros(grad_value, B, D);
  at::Tensor dD;
  if (chunk_size <= 0) {
    const auto U = saved.contiguous();
    if (k.symmetric_product != nullptr) {  // (G + G^T) D, H = G + G^T built a tile at a time
      dD = at::empty_like(D);
      k.symmetric_product(U, g, D, dD);
    } else {  // G = diag(g) U: dD = G D + G^T D
      dD = at::mm(U, D).mul_(g.unsqueeze(1));
      dD.add_(at::mm(U.t(), D * g.unsqueeze(1)));
    }
  } else {
    dD = at::zeros_like(D);
    for (int64_t r0 = 0; r0 < B; r0 += chunk_size) {
      const int64_t R = std::min(chunk_size, B - r0);
      const auto Dr = D.narrow(0, r0, R);
      const auto G = block_gradient(k, Dr, lab.narrow(0, r0, R), D, lab, r0, p, g.narrow(0, r0, R));
      dD.narrow(0, r0, R).addmm_(G, D);  // rows:    sum_j G_ij d_j
      dD.addmm_(G.t(), Dr);              // columns: sum_i G_ij d_i
    }
  }
  return dD.to(embeddings.scalar_type());
}

RankForwardOut rank_ref_impl(const RankKernels& k, const at::Tensor& queries, const at::Tensor& query_labels,
                             const at::Tensor& refs, const at::Tensor& ref_labels, const RankParams& p,
                             int64_t chunk_size, int64_t self_offset) {
  OpArgs a("rank_ref", k, p);
  a.chunk_size = chunk_size, a.self_offset = self_offset;
  a.x = &queries, a.x_name = "queries", a.labels = &query_labels, a.labels_name = "query_labels";
  a.refs = &refs, a.ref_labels = &ref_labels;
  check_args(a);
  TORCH_CHECK_VALUE(self_offset >= 0 || p.query_mode == rank::kExcluded, "apl: rank_ref: query_mode ", p.query_mode,
                    " puts each query among the ranked items, which needs self_offset >= 0 (the reference "
                    "set holds the queries)");
  const auto dtype = compute_dtype(queries);
  const auto Q = queries.to(dtype).contiguous(), X = refs.to(dtype).contiguous();
  Out out(Q.size(0), Q);
  at::Tensor saved = forward_rows(k, Q, query_labels.contiguous(), X, ref_labels.contiguous(), self_offset, p,
                                  chunk_size, out);
  check_finite(k, out.flag, "embeddings or ref_embeddings");
  return {out.value, out.npos, saved};
}

std::tuple<at::Tensor, at::Tensor> rank_ref_backward_impl(
    const RankKernels& k, const at::Tensor& grad_value, const at::Tensor& queries, const at::Tensor& query_labels,
    const at::Tensor& refs, const at::Tensor& ref_labels, const at::Tensor& saved, const RankParams& p,
    int64_t chunk_size, int64_t self_offset) {
  OpArgs a("rank_ref_backward", k, p);
  a.self_offset = self_offset, a.grad_ap = &grad_value, a.x = &queries, a.x_name = "queries";
  a.labels = &query_labels, a.labels_name = "query_labels", a.refs = &refs, a.ref_labels = &ref_labels;
  a.saved = &saved, a.chunk_size = chunk_size;
  check_args(a);
  const int64_t B = queries.size(0);
  const auto dtype = compute_dtype(queries);
  const auto Q = queries.to(dtype).contiguous(), X = refs.to(dtype).contiguous();
  const auto ql = query_labels.contiguous(), xl = ref_labels.contiguous();
  const auto g = grad_or_zeros(grad_value, B, Q);
  at::Tensor dQ, dX;
  if (chunk_size <= 0) {  // G = diag(g) U: dQ = diag(g) (U X), dX = U^T (diag(g) Q)
    const auto U = saved.contiguous();
    dQ = at::mm(U, X).mul_(g.unsqueeze(1));
    dX = at::mm(U.t(), Q * g.unsqueeze(1));
  } else {
    dQ = at::empty_like(Q);
    dX = at::zeros_like(X);
    for (int64_t r0 = 0; r0 < B; r0 += chunk_size) {
      const int64_t R = std::min(chunk_size, B - r0);
      const auto Qr = Q.narrow(0, r0, R);
      const auto G = block_gradient(k, Qr, ql.narrow(0, r0, R), X, xl, self_column(self_offset, r0), p,
                                    g.narrow(0, r0, R));
      auto dQr = dQ.narrow(0, r0, R);
      at::matmul_out(dQr, G, X);
      dX.addmm_(G.t(), Qr);
    }
  }
  return {dQ.to(queries.scalar_type()), dX.to(refs.scalar_type())};
}

}  // namespace apl
