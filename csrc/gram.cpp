#include "gram.h"
#include "packed_upper.h"

#include <algorithm>

namespace apl {

at::Tensor self_gram_upper(const at::Tensor& D) {
  const int64_t B = D.size(0);
  if (B < kSymmetricMinRows) return at::matmul(D, D.t());
  auto S = at::empty({B, B}, D.options());
  for (int64_t i0 = 0; i0 < B; i0 += kBlockRows) {
    const int64_t R = std::min(kBlockRows, B - i0);
    auto out = S.narrow(0, i0, R).narrow(1, i0, B - i0);
    at::mm_out(out, D.narrow(0, i0, R), D.narrow(0, i0, B - i0).t());
  }
  return S;
}

at::Tensor self_gram(const at::Tensor& D, MirrorFn mirror) {
  if (mirror == nullptr || D.size(0) < kSymmetricMinRows) return at::matmul(D, D.t());
  auto S = self_gram_upper(D);
  mirror(S);
  return S;
}

at::Tensor self_gram_packed(const at::Tensor& D) {
  const PackedUpper L{D.size(0)};
  auto P = at::empty({L.numel()}, D.options());
  for (int64_t I = 0; I < L.blocks(); ++I) {
    auto out = P.narrow(0, L.offset(I), L.rows(I) * L.width(I)).view({L.rows(I), L.width(I)});
    at::mm_out(out, D.narrow(0, L.first_row(I), L.rows(I)), D.narrow(0, L.first_row(I), L.width(I)).t());
  }
  return P;
}

}  // namespace apl
