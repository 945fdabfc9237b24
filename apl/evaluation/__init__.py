"""Retrieval evaluation: exact mAP / precision / recall / MAP@R / R-precision / Recall@K (hit rate)
on labelled descriptors, the Revisited Oxford / Paris protocol, PCA-whitening, alpha-QE / alpha-DBA,
and chunked similarity search."""
from .expansion import alpha_database_augmentation, alpha_query_expansion
from .metrics import (
    at_r_per_query,
    average_precisions,
    hit_rate_at_k,
    map_at_r,
    mean_average_precision,
    nan_mean,
    precision_at_k,
    r_precision,
    recall_at_k,
)
from .revisited import PROTOCOLS, revisited_average_precisions, revisited_map, trapezoidal_ap
from .search import DEFAULT_CHUNK_SIZE, knn, pairwise_scores
from .whitening import DEFAULT_POWER, PCAWhitening

__all__ = [
    "DEFAULT_CHUNK_SIZE",
    "DEFAULT_POWER",
    "PCAWhitening",
    "PROTOCOLS",
    "alpha_database_augmentation",
    "alpha_query_expansion",
    "at_r_per_query",
    "average_precisions",
    "hit_rate_at_k",
    "knn",
    "map_at_r",
    "mean_average_precision",
    "nan_mean",
    "pairwise_scores",
    "precision_at_k",
    "r_precision",
    "recall_at_k",
    "revisited_average_precisions",
    "revisited_map",
    "trapezoidal_ap",
]
