"""Retrieval evaluation: exact mAP / precision / recall / MAP@R / R-precision / Recall@K (hit rate)
on labelled descriptors (`metrics`), the Revisited Oxford / Paris protocol (`revisited`),
PCA-whitening, alpha-QE / alpha-DBA, chunked similarity search (`search`); descriptors of a dataset
through a model and the held-out evaluation (`extraction`); the names and formatting of the
held-out metrics (`report`), all of them in one pass (`summary`); and rankings of a few queries (`rankings`; their pictures are `apl.plots`)."""
from .descriptor_files import load_descriptors, save_descriptors
from .expansion import alpha_database_augmentation, alpha_query_expansion
from .extraction import describe, evaluate, extract
from .metrics import (
    at_r_per_query,
    average_precisions,
    hit_rate_at_k,
    map_at_r,
    mean_average_precision,
    nan_mean,
    precision_at_k,
    precision_recall_curve,
    r_precision,
    recall_at_k,
)
from .revisited import PROTOCOLS, revisited_average_precisions, revisited_map, trapezoidal_ap
from .search import DEFAULT_CHUNK_SIZE, knn, pairwise_scores
from .summary import ranked_metrics, retrieval_metrics
from .whitening import DEFAULT_POWER, PCAWhitening

__all__ = [
    "DEFAULT_CHUNK_SIZE",
    "DEFAULT_POWER",
    "PCAWhitening",
    "PROTOCOLS",
    "alpha_database_augmentation",
    "alpha_query_expansion",
    "at_r_per_query",
    "describe",
    "evaluate",
    "extract",
    "average_precisions",
    "hit_rate_at_k",
    "knn",
    "load_descriptors",
    "map_at_r",
    "mean_average_precision",
    "nan_mean",
    "pairwise_scores",
    "precision_at_k",
    "precision_recall_curve",
    "r_precision",
    "ranked_metrics",
    "recall_at_k",
    "retrieval_metrics",
    "save_descriptors",
    "revisited_average_precisions",
    "revisited_map",
    "trapezoidal_ap",
]
