"""apl's losses as functions, with one API: `(embeddings, labels, ref_embeddings=None,
ref_labels=None, query_weights=None, *, ...)`.

- `ap`: the quantized AP loss (Revaud et al., ICCV 2019) and its tie-aware variants, the
  per-query AP, and the score-matrix form;
- `rank`: the rank surrogates, Smooth-AP and the Recall@k surrogate;
- `inputs`: the checks, backend choice and normalisation every function applies, and the
  weighted mean of the batch loss.
"""
from .ap import ap_loss, per_query_ap, quantized_ap
from .rank import per_query_recall_at_k, per_query_smooth_ap, recall_at_k_loss, smooth_ap_loss

__all__ = ["ap_loss", "per_query_ap", "quantized_ap", "per_query_recall_at_k", "per_query_smooth_ap",
           "recall_at_k_loss", "smooth_ap_loss"]
