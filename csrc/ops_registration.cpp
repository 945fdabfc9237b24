// The apl operators, defined once for every device. Device implementations are registered in
// csrc/cpu/ and csrc/cuda/; the Python side adds fake (meta) kernels and autograd
// (apl/ops/compiled.py). Python asks the dispatcher which devices have kernels.
#include <Python.h>
#include <torch/library.h>

TORCH_LIBRARY(apl, m) {
  // Self retrieval: every row of `embeddings` is a query against all the other rows.
  // Returns per-query AP, positive counts, per-bin coefficients (B, 2, M) and, when
  // chunk_size <= 0, the tensor kept for backward: the (B, B) scores, or on devices with the
  // packed kernels (CPU) the 1-D packed upper block rows of the scores (csrc/packed_upper.h); an
  // empty tensor when streaming.
  m.def("ap_self(Tensor embeddings, Tensor labels, int num_bins, float lo, float hi, int variant, "
        "int chunk_size) -> (Tensor, Tensor, Tensor, Tensor)");
  m.def("ap_self_backward(Tensor grad_ap, Tensor embeddings, Tensor labels, Tensor coef, "
        "Tensor scores, int num_bins, float lo, float hi, int chunk_size) -> Tensor");
  // Queries against a separate database. self_offset >= 0: query i is row self_offset + i of
  // refs (e.g. the batch followed by a cross-batch memory) and is left out of its own ranking;
  // -1: no exclusion.
  m.def("ap_ref(Tensor queries, Tensor query_labels, Tensor refs, Tensor ref_labels, int num_bins, "
        "float lo, float hi, int variant, int chunk_size, int self_offset=-1) "
        "-> (Tensor, Tensor, Tensor, Tensor)");
  m.def("ap_ref_backward(Tensor grad_ap, Tensor queries, Tensor query_labels, Tensor refs, "
        "Tensor ref_labels, Tensor coef, Tensor scores, int num_bins, float lo, float hi, "
        "int chunk_size, int self_offset=-1) -> (Tensor, Tensor)");
  // Score-matrix form: (B, N) scores and a bool relevance mask of the same shape.
  m.def("ap_scores(Tensor scores, Tensor relevance, int num_bins, float lo, float hi, int variant) "
        "-> (Tensor, Tensor, Tensor)");
  m.def("ap_scores_backward(Tensor grad_ap, Tensor scores, Tensor relevance, Tensor coef, "
        "int num_bins, float lo, float hi) -> Tensor");

  // Rank surrogates (csrc/rank_ops.h): kind 0 Smooth-AP, 1 Recall@k (its ks and their
  // temperatures); query_mode: where the query stands in its own ranking (rank_math.h). Returns
  // each query's value (its Smooth-AP or Recall@k), its positive count and, when chunk_size <= 0,
  // U = d value / d scores (B, N) for backward; an empty tensor when streaming.
  m.def("rank_self(Tensor embeddings, Tensor labels, int kind, float temperature, float[] ks, "
        "float[] k_temperatures, int query_mode, int chunk_size) -> (Tensor, Tensor, Tensor)");
  m.def("rank_self_backward(Tensor grad_value, Tensor embeddings, Tensor labels, Tensor saved, int kind, "
        "float temperature, float[] ks, float[] k_temperatures, int query_mode, int chunk_size) -> Tensor");
  m.def("rank_ref(Tensor queries, Tensor query_labels, Tensor refs, Tensor ref_labels, int kind, "
        "float temperature, float[] ks, float[] k_temperatures, int query_mode, int chunk_size, "
        "int self_offset=-1) -> (Tensor, Tensor, Tensor)");
  m.def("rank_ref_backward(Tensor grad_value, Tensor queries, Tensor query_labels, Tensor refs, "
        "Tensor ref_labels, Tensor saved, int kind, float temperature, float[] ks, float[] k_temperatures, "
        "int query_mode, int chunk_size, int self_offset=-1) -> (Tensor, Tensor)");
}

// `import apl._C` only has to load this library so that the registrations above run: an empty
// module, without pybind11.
extern "C" PyObject* PyInit__C(void) {
  static PyModuleDef module = {PyModuleDef_HEAD_INIT, "_C",
                               "apl compiled kernels (operators are under torch.ops.apl)", -1,
                               nullptr};
  return PyModule_Create(&module);
}
