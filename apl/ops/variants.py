"""Names and constants shared with the compiled kernels: the AP variants (csrc/ap_math.h) and the
rank surrogates with the query modes (csrc/rank_math.h)."""

VARIANTS = {"ap_q": 0, "tie_aware": 1, "tie_aware_simplified": 2}

# Regularises the tie-aware ratios when a bin is (nearly) empty; same value as csrc/ap_math.h.
TIE_EPS = 1e-8

# Rank surrogates: Smooth-AP (Brown et al., ECCV 2020), Recall@k (Patel et al., CVPR 2022).
RANK_KINDS = {"smooth_ap": 0, "recall_at_k": 1}

# Where the query stands in its own ranking: left out (both papers), among the items and the
# positives (the Smooth-AP authors' code), among the items only (the Recall@k authors' code).
QUERY_EXCLUDED, QUERY_ITEM_AND_POSITIVE, QUERY_ITEM_ONLY = 0, 1, 2
