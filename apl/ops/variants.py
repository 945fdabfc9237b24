"""Names of the AP variants and constants shared with the compiled kernels (csrc/ap_math.h)."""

VARIANTS = {"ap_q": 0, "tie_aware": 1, "tie_aware_simplified": 2}

# Regularises the tie-aware ratios when a bin is (nearly) empty; same value as csrc/ap_math.h.
TIE_EPS = 1e-8
