"""Argument checks of the public API, with messages that name the argument and say what is wrong,
and the once-per-process check that embeddings are L2-normalised."""
from __future__ import annotations

import math
from typing import Optional

import torch

from . import notices
from .variants import VARIANTS

BACKENDS = ("auto", "torch", "cpu", "cuda")


def check_num_bins(num_bins) -> int:
    if isinstance(num_bins, bool) or not isinstance(num_bins, int):
        raise TypeError(f"num_bins must be an int, got {type(num_bins).__name__}")
    if num_bins < 2:
        raise ValueError(f"num_bins must be >= 2, got {num_bins}")
    return num_bins


def check_score_range(score_range) -> tuple[float, float]:
    try:
        lo, hi = (float(v) for v in score_range)
    except (TypeError, ValueError):
        raise TypeError(f"score_range must be a pair of numbers (lo, hi), got {score_range!r}") from None
    if not (math.isfinite(lo) and math.isfinite(hi)):
        raise ValueError(f"score_range must be finite, got ({lo}, {hi})")
    if lo >= hi:
        raise ValueError(f"score_range must have lo < hi, got ({lo}, {hi})")
    return lo, hi


def canonical_variant(variant):
    """The variant's name as VARIANTS spells it: the command line's "tie-aware" is "tie_aware"."""
    return variant.replace("-", "_") if isinstance(variant, str) else variant


def check_variant(variant) -> int:
    name = canonical_variant(variant)
    if name not in VARIANTS:
        raise ValueError(f"variant must be one of {sorted(VARIANTS)} (or spelled with '-'), got {variant!r}")
    return VARIANTS[name]


def check_backend(backend) -> str:
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    return backend


def check_chunk_size(chunk_size) -> int:
    """None (no streaming) -> 0, else a positive int."""
    if chunk_size is None:
        return 0
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int):
        raise TypeError(f"chunk_size must be None or an int, got {type(chunk_size).__name__}")
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1 (or None), got {chunk_size}")
    return chunk_size


def check_matrix(x, name: str, shape: str = "n, dim") -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.dim() != 2:
        raise ValueError(f"{name} must be 2-D ({shape}), got shape {tuple(x.shape)}")
    if not x.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got {x.dtype}")
    return x


def require(ok: torch.Tensor, message: str) -> None:
    """Raises ValueError(message) unless the bool tensor `ok` is true.

    Eagerly this is one host sync. Inside torch.compile a Python branch on tensor data would
    break the graph, so the check becomes an in-graph assertion instead (`torch._assert_async`,
    kept by the compiler as a side effect): it still stops the step, as a RuntimeError whose text
    is `message`.
    """
    if torch.compiler.is_compiling():
        torch._assert_async(ok, message)
    elif not bool(ok):
        raise ValueError(message)


def check_finite(x: torch.Tensor, name: str) -> None:
    """Data-dependent; used by the reference (the kernels check in their own pass)."""
    require(torch.isfinite(x).all(), f"{name} contain NaN or Inf values")


def check_labels(labels, n: int, name: str, like: torch.Tensor, like_name: str) -> torch.Tensor:
    """Returns the labels as int64."""
    if not isinstance(labels, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of integer class ids, got {type(labels).__name__}")
    if labels.dim() != 1:
        raise ValueError(f"{name} must be 1-D, got shape {tuple(labels.shape)}")
    if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
        raise TypeError(f"{name} must be an integer tensor, got {labels.dtype}")
    if labels.shape[0] != n:
        raise ValueError(f"{name} must have length {n} (the rows of {like_name}), got {labels.shape[0]}")
    check_same_device(labels, name, like, like_name)
    return labels.long()


def check_same_device(x: torch.Tensor, name: str, like: torch.Tensor, like_name: str) -> None:
    if x.device != like.device:
        raise ValueError(f"{name} is on {x.device} but {like_name} is on {like.device}")


def check_weights(w, n: int, like: torch.Tensor) -> torch.Tensor:
    if not isinstance(w, torch.Tensor):
        raise TypeError(f"query_weights must be a torch.Tensor, got {type(w).__name__}")
    if w.dim() != 1 or w.shape[0] != n:
        raise ValueError(f"query_weights must have shape ({n},), got {tuple(w.shape)}")
    check_same_device(w, "query_weights", like, "embeddings")
    w = w.to(torch.float64 if like.dtype == torch.float64 else torch.float32)
    require((torch.isfinite(w) & (w >= 0)).all(), "query_weights must be finite and >= 0")
    return w


def check_embeddings_pair(
    embeddings, labels, ref_embeddings: Optional[torch.Tensor], ref_labels,
    names: tuple[str, str, str, str] = ("embeddings", "labels", "ref_embeddings", "ref_labels"),
) -> tuple[torch.Tensor, torch.Tensor, Optional[torch.Tensor], Optional[torch.Tensor]]:
    """The queries and the optional reference set, checked; messages name the arguments as the
    caller's API spells them (`names`: PML's adapter passes "ref_emb")."""
    e_name, l_name, re_name, rl_name = names
    embeddings = check_matrix(embeddings, e_name)
    labels = check_labels(labels, embeddings.shape[0], l_name, embeddings, e_name)
    if ref_embeddings is None and ref_labels is not None:
        raise ValueError(f"{rl_name} was given without {re_name}")
    if ref_embeddings is not None:
        if ref_labels is None:
            raise ValueError(f"{re_name} was given without {rl_name}")
        ref_embeddings = check_matrix(ref_embeddings, re_name)
        check_same_device(ref_embeddings, re_name, embeddings, e_name)
        if ref_embeddings.shape[1] != embeddings.shape[1]:
            raise ValueError(f"{re_name} must have dim {embeddings.shape[1]} like {e_name}, got {ref_embeddings.shape[1]}")
        if ref_embeddings.dtype != embeddings.dtype:
            raise TypeError(f"{re_name} must have the dtype of {e_name} ({embeddings.dtype}), got {ref_embeddings.dtype}")
        if ref_embeddings.shape[0] < 1:
            raise ValueError(f"{re_name} must have at least one row")
        ref_labels = check_labels(ref_labels, ref_embeddings.shape[0], rl_name, embeddings, e_name)
    elif embeddings.shape[0] < 2:
        raise ValueError(
            f"{e_name} must have at least 2 rows when no reference set is given "
            f"(every row is a query against the others), got {embeddings.shape[0]}"
        )
    return embeddings, labels, ref_embeddings, ref_labels


def check_ref_includes_queries(flag, embeddings: torch.Tensor, ref_embeddings: Optional[torch.Tensor]) -> int:
    """The ops' self_offset: 0 when the first B rows of the reference set are the queries, else -1."""
    if not isinstance(flag, bool):
        raise TypeError(f"ref_includes_queries must be a bool, got {type(flag).__name__}")
    if not flag:
        return -1
    if ref_embeddings is None:
        raise ValueError("ref_includes_queries=True needs ref_embeddings (the queries followed by other items)")
    if ref_embeddings.shape[0] < embeddings.shape[0]:
        raise ValueError(
            f"ref_includes_queries=True: ref_embeddings must start with the {embeddings.shape[0]} queries, "
            f"got only {ref_embeddings.shape[0]} rows"
        )
    return 0


def check_scores_relevance(scores, relevance) -> tuple[torch.Tensor, torch.Tensor]:
    scores = check_matrix(scores, "scores", "B, N: one row of scores per query")
    if not isinstance(relevance, torch.Tensor):
        raise TypeError(f"relevance must be a torch.Tensor, got {type(relevance).__name__}")
    if relevance.shape != scores.shape:
        raise ValueError(
            f"relevance must have the shape of scores {tuple(scores.shape)}, got {tuple(relevance.shape)}"
        )
    check_same_device(relevance, "relevance", scores, "scores")
    if relevance.dtype != torch.bool:
        message = "relevance must hold only 0 and 1 (or be a bool tensor)"
        if relevance.is_complex():
            raise ValueError(message)
        require(((relevance == 0) | (relevance == 1)).all(), message)
        relevance = relevance != 0
    return scores, relevance




# Rows whose norm is further than this from 1 are "not normalised" (bf16 rounding stays far below).
NORM_TOLERANCE = 0.05


# Why a loss needs unit rows, by loss family.
_NORM_REASONS = {
    "ap": "the AP loss bins cosine similarities over score_range=(-1, 1), and scores outside it get no gradient",
    "smooth_ap": "Smooth-AP compares scores through sigmoids of width `temperature`, set for cosine similarities: "
                 "row norms scale the score differences and so change the effective temperature",
    "recall_at_k": "the Recall@k surrogate compares scores through sigmoids of width `temperature`, set for cosine "
                   "similarities: row norms scale the score differences and so change the effective temperature",
}


def warn_if_not_unit_rows(x: torch.Tensor, name: str, family: str = "ap") -> None:
    """Warns once per process and (loss family, argument) when a row of `x` is far from unit norm,
    saying why it matters to that loss (`_NORM_REASONS`). Costs one norm of the (B, D) embeddings
    and one host sync per call until it has warned (benchmarks/bench_norm_check.py measures it);
    skipped inside torch.compile, where it would break the graph."""
    key = f"norm:{family}:{name}"
    if notices.given(key) or torch.compiler.is_compiling() or x.numel() == 0:
        return
    with torch.no_grad():
        norms = torch.linalg.vector_norm(x.detach().to(torch.promote_types(x.dtype, torch.float32)), dim=1)
        extremes = torch.stack([norms.min(), norms.max()]).tolist()
    # non-finite rows are an error raised next, not a warning
    if all(map(math.isfinite, extremes)) and max(abs(extremes[0] - 1), abs(extremes[1] - 1)) > NORM_TOLERANCE:
        notices.warn_once(
            key,
            f"apl: rows of {name} are not L2-normalised (norms from {extremes[0]:.3g} to {extremes[1]:.3g}); "
            f"{_NORM_REASONS[family]}. Normalise them (torch.nn.functional.normalize(x, dim=1)) or pass normalize=True.",
            UserWarning
        )


def check_temperature(value, name: str = "temperature") -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number, got {type(value).__name__}")
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be finite and > 0, got {value!r}")
    return float(value)


# The most k values of one Recall@k loss: the CUDA kernel keeps them in a fixed array
# (csrc/cuda/rank_kernels.cuh kRankMaxKs). Every backend refuses more, so a loss that runs on one
# device runs on all of them.
MAX_KS = 32


def check_ks(k, k_temperature) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """The k values of Recall@k (at most MAX_KS ints >= 1) and one temperature per k (a number or a
    sequence)."""
    ks = (k,) if isinstance(k, int) and not isinstance(k, bool) else k
    try:
        ks = tuple(ks)
    except TypeError:
        raise TypeError(f"k must be an int or a sequence of ints, got {type(k).__name__}") from None
    if not ks:
        raise ValueError("k must hold at least one value")
    if len(ks) > MAX_KS:
        raise ValueError(f"k must hold at most {MAX_KS} values (the CUDA kernel's limit, kept on every "
                         f"backend), got {len(ks)}")
    for v in ks:
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"every k must be an int >= 1, got {v!r} in {k!r}")
    if isinstance(k_temperature, (int, float)) and not isinstance(k_temperature, bool):
        temps = (k_temperature,) * len(ks)
    else:
        try:
            temps = tuple(k_temperature)
        except TypeError:
            raise TypeError(f"k_temperature must be a number or one number per k, got {type(k_temperature).__name__}") from None
    if len(temps) != len(ks):
        raise ValueError(f"k_temperature must be one number or one per k ({len(ks)}), got {len(temps)}")
    temps = tuple(check_temperature(t, "k_temperature") for t in temps)
    return tuple(float(v) for v in ks), temps


def check_include_query(flag, self_offset: int, has_refs: bool) -> bool:
    """include_query puts each query among its own ranked items: the queries must be there."""
    if not isinstance(flag, bool):
        raise TypeError(f"include_query must be a bool, got {type(flag).__name__}")
    if flag and has_refs and self_offset < 0:
        raise ValueError("include_query=True ranks each query among the items, so a reference set must hold the "
                         "queries: pass ref_includes_queries=True (the batch first), or no reference set")
    return flag
