"""Fake (meta) kernels and autograd for the compiled apl ops, and thin callers.

The ops are defined once in C++ (csrc/ops_registration.cpp). Registering their shapes and their
backward here makes them work under autograd, torch.library.opcheck and torch.compile.

The compiled backward kernels are not differentiable themselves. When a backward is asked to build
a graph (`create_graph=True`: a gradient penalty, double backward), the gradient is computed by the
pure-PyTorch reference instead, which autograd can differentiate again: exact, at the reference's
cost (one (B, N, M) pass, no streaming).
"""
from __future__ import annotations

import os

import torch

from . import reference, reference_rank
from .extension import _C
from .variants import VARIANTS

_VARIANT_NAMES = {v: k for k, v in VARIANTS.items()}


def _differentiable_grads(value: torch.Tensor, grad: torch.Tensor, inputs: tuple) -> list:
    """d(value . grad) / d(inputs) as tensors with a graph (None for inputs that need no gradient)."""
    wanted = [x for x in inputs if x.requires_grad]
    got = iter(torch.autograd.grad(value, wanted, grad.to(value.dtype), create_graph=True, allow_unused=True))
    out = []
    for x in inputs:
        g = next(got) if x.requires_grad else None
        out.append(torch.zeros_like(x) if g is None and x.requires_grad else (None if g is None else g.to(x.dtype)))
    return out

__all__ = ["self_ap", "ref_ap", "scores_ap", "self_rank", "ref_rank"]


def _acc(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


# The CPU kernels keep S's packed upper block rows for a self-retrieval backward (csrc/packed_upper.h),
# unless APL_SCORES_STRATEGY forces the scores strategy (csrc/ap_ops.cpp; read once, as there).
_PACKED_ROWS = 256
_SCORES_FORCED = os.environ.get("APL_SCORES_STRATEGY", "") not in ("", "0")


def packed_upper_numel(B):
    """Values in the packed upper block rows of a (B, B) symmetric matrix: block row I (rows
    [256 I, 256 I + 256)) keeps its columns from 256 I on. In closed form, so that a symbolic B
    (torch.compile with dynamic shapes) stays symbolic: the full block rows, then the last one,
    whose rows and columns are the same in number."""
    K = _PACKED_ROWS
    full = (B + K - 1) // K - 1
    last = B - K * full
    return K * (full * B - K * (full * (full - 1) // 2)) + last * last


def _self_saved_shape(x: torch.Tensor, B: int, chunk_size: int) -> tuple:
    if chunk_size > 0:
        return (0,)
    return (packed_upper_numel(B),) if x.device.type == "cpu" and not _SCORES_FORCED else (B, B)


def _forward_fakes(x: torch.Tensor, B: int, N: int, M: int, chunk_size: int, with_scores: bool):
    dt = _acc(x.dtype)
    out = (
        x.new_empty((B,), dtype=dt),
        x.new_empty((B,), dtype=torch.int64),
        x.new_empty((B, 2, M), dtype=torch.float64),
    )
    if with_scores:
        out += (x.new_empty((B, N) if chunk_size <= 0 else (0,), dtype=dt),)
    return out


if _C is not None:

    @torch.library.register_fake("apl::ap_self")
    def _(embeddings, labels, num_bins, lo, hi, variant, chunk_size):
        B = embeddings.shape[0]
        fakes = _forward_fakes(embeddings, B, B, num_bins, chunk_size, False)
        return fakes + (embeddings.new_empty(_self_saved_shape(embeddings, B, chunk_size), dtype=fakes[0].dtype),)

    @torch.library.register_fake("apl::ap_self_backward")
    def _(grad_ap, embeddings, labels, coef, scores, num_bins, lo, hi, chunk_size):
        return torch.empty_like(embeddings)

    @torch.library.register_fake("apl::ap_ref")
    def _(queries, query_labels, refs, ref_labels, num_bins, lo, hi, variant, chunk_size, self_offset=-1):
        return _forward_fakes(queries, queries.shape[0], refs.shape[0], num_bins, chunk_size, True)

    @torch.library.register_fake("apl::ap_ref_backward")
    def _(grad_ap, queries, query_labels, refs, ref_labels, coef, scores, num_bins, lo, hi, chunk_size,
          self_offset=-1):
        return torch.empty_like(queries), torch.empty_like(refs)

    @torch.library.register_fake("apl::ap_scores")
    def _(scores, relevance, num_bins, lo, hi, variant):
        return _forward_fakes(scores, scores.shape[0], scores.shape[1], num_bins, 0, False)

    @torch.library.register_fake("apl::ap_scores_backward")
    def _(grad_ap, scores, relevance, coef, num_bins, lo, hi):
        return torch.empty_like(scores)

    # --- autograd: the saved coefficients (B, 2, M) and, unless streaming, the scores ---------

    def _setup_self(ctx, inputs, output):
        embeddings, labels, num_bins, lo, hi, variant, chunk_size = inputs
        _ap, _npos, coef, scores = output
        ctx.save_for_backward(embeddings, labels, coef, scores)
        ctx.args = (num_bins, lo, hi, chunk_size)
        ctx.variant = _VARIANT_NAMES[variant]
        ctx.set_materialize_grads(False)  # no zero (B, N) gradient for the unused scores output

    def _backward_self(ctx, grad_ap, _g_npos, _g_coef, _g_scores):
        embeddings, labels, coef, scores = ctx.saved_tensors
        if grad_ap is None:
            return (None,) * 7
        if torch.is_grad_enabled():  # create_graph=True: a gradient autograd can differentiate again
            num_bins, lo, hi, _ = ctx.args
            ap, _ = reference.per_query_ap(embeddings, labels, None, None, num_bins, (lo, hi), ctx.variant)
            (d_emb,) = _differentiable_grads(ap, grad_ap, (embeddings,))
        else:
            d_emb = torch.ops.apl.ap_self_backward(grad_ap, embeddings, labels, coef, scores, *ctx.args)
        return d_emb, None, None, None, None, None, None

    torch.library.register_autograd("apl::ap_self", _backward_self, setup_context=_setup_self)

    def _setup_ref(ctx, inputs, output):
        queries, query_labels, refs, ref_labels, num_bins, lo, hi, variant, chunk_size = inputs[:9]
        self_offset = inputs[9] if len(inputs) > 9 else -1
        _ap, _npos, coef, scores = output
        ctx.save_for_backward(queries, query_labels, refs, ref_labels, coef, scores)
        ctx.args = (num_bins, lo, hi, chunk_size, self_offset)
        ctx.variant = _VARIANT_NAMES[variant]
        ctx.set_materialize_grads(False)  # no zero (B, N) gradient for the unused scores output

    def _backward_ref(ctx, grad_ap, _g_npos, _g_coef, _g_scores):
        queries, query_labels, refs, ref_labels, coef, scores = ctx.saved_tensors
        if grad_ap is None:
            return (None,) * 10
        if torch.is_grad_enabled():  # create_graph=True: a gradient autograd can differentiate again
            num_bins, lo, hi, _, self_offset = ctx.args
            ap, _ = reference.per_query_ap(queries, query_labels, refs, ref_labels, num_bins, (lo, hi), ctx.variant,
                                           0, self_offset)
            dq, dx = _differentiable_grads(ap, grad_ap, (queries, refs))
        else:
            dq, dx = torch.ops.apl.ap_ref_backward(
                grad_ap, queries, query_labels, refs, ref_labels, coef, scores, *ctx.args
            )
        return dq, None, dx, None, None, None, None, None, None, None

    torch.library.register_autograd("apl::ap_ref", _backward_ref, setup_context=_setup_ref)

    def _setup_scores(ctx, inputs, output):
        scores, relevance, num_bins, lo, hi, variant = inputs
        _ap, _npos, coef = output
        ctx.save_for_backward(scores, relevance, coef)
        ctx.args = (num_bins, lo, hi)
        ctx.variant = _VARIANT_NAMES[variant]
        ctx.set_materialize_grads(False)

    def _backward_scores(ctx, grad_ap, _g_npos, _g_coef):
        scores, relevance, coef = ctx.saved_tensors
        if grad_ap is None:
            return (None,) * 6
        if torch.is_grad_enabled():  # create_graph=True: a gradient autograd can differentiate again
            num_bins, lo, hi = ctx.args
            ap, _ = reference.quantized_ap(scores, relevance, num_bins, (lo, hi), ctx.variant)
            (d_scores,) = _differentiable_grads(ap, grad_ap, (scores,))
        else:
            d_scores = torch.ops.apl.ap_scores_backward(grad_ap, scores, relevance, coef, *ctx.args)
        return d_scores, None, None, None, None, None

    torch.library.register_autograd("apl::ap_scores", _backward_scores, setup_context=_setup_scores)

    # --- the rank surrogates: U = d value / d scores saved (or nothing when streaming) --------

    def _rank_fakes(x: torch.Tensor, B: int, N: int, chunk_size: int):
        dt = _acc(x.dtype)
        return (x.new_empty((B,), dtype=dt), x.new_empty((B,), dtype=torch.int64),
                x.new_empty((B, N) if chunk_size <= 0 else (0,), dtype=dt))

    @torch.library.register_fake("apl::rank_self")
    def _(embeddings, labels, kind, temperature, ks, k_temperatures, query_mode, chunk_size):
        B = embeddings.shape[0]
        return _rank_fakes(embeddings, B, B, chunk_size)

    @torch.library.register_fake("apl::rank_self_backward")
    def _(grad_value, embeddings, labels, saved, kind, temperature, ks, k_temperatures, query_mode, chunk_size):
        return torch.empty_like(embeddings)

    @torch.library.register_fake("apl::rank_ref")
    def _(queries, query_labels, refs, ref_labels, kind, temperature, ks, k_temperatures, query_mode, chunk_size,
          self_offset=-1):
        return _rank_fakes(queries, queries.shape[0], refs.shape[0], chunk_size)

    @torch.library.register_fake("apl::rank_ref_backward")
    def _(grad_value, queries, query_labels, refs, ref_labels, saved, kind, temperature, ks, k_temperatures,
          query_mode, chunk_size, self_offset=-1):
        return torch.empty_like(queries), torch.empty_like(refs)

    def _setup_rank_self(ctx, inputs, output):
        embeddings, labels, *params = inputs
        ctx.save_for_backward(embeddings, labels, output[2])
        ctx.params = tuple(params)  # kind, temperature, ks, k_temperatures, query_mode, chunk_size
        ctx.set_materialize_grads(False)

    def _backward_rank_self(ctx, grad_value, _g_npos, _g_saved):
        embeddings, labels, saved = ctx.saved_tensors
        if grad_value is None:
            return (None,) * 8
        if torch.is_grad_enabled():  # create_graph=True: a gradient autograd can differentiate again
            kind, temperature, ks, k_temps, query_mode, _ = ctx.params
            value, _ = reference_rank.per_query(embeddings, labels, None, None, kind, temperature, ks, k_temps, query_mode)
            (d,) = _differentiable_grads(value, grad_value, (embeddings,))
        else:
            d = torch.ops.apl.rank_self_backward(grad_value, embeddings, labels, saved, *ctx.params)
        return (d,) + (None,) * 7

    torch.library.register_autograd("apl::rank_self", _backward_rank_self, setup_context=_setup_rank_self)

    def _setup_rank_ref(ctx, inputs, output):
        queries, query_labels, refs, ref_labels, *params = inputs
        if len(params) == 6:
            params.append(-1)  # self_offset left to its default
        ctx.save_for_backward(queries, query_labels, refs, ref_labels, output[2])
        ctx.params = tuple(params)
        ctx.set_materialize_grads(False)

    def _backward_rank_ref(ctx, grad_value, _g_npos, _g_saved):
        queries, query_labels, refs, ref_labels, saved = ctx.saved_tensors
        if grad_value is None:
            return (None,) * 11
        if torch.is_grad_enabled():  # create_graph=True: a gradient autograd can differentiate again
            kind, temperature, ks, k_temps, query_mode, _, self_offset = ctx.params
            value, _ = reference_rank.per_query(queries, query_labels, refs, ref_labels, kind, temperature, ks, k_temps,
                                                query_mode, 0, self_offset)
            dq, dx = _differentiable_grads(value, grad_value, (queries, refs))
        else:
            dq, dx = torch.ops.apl.rank_ref_backward(grad_value, queries, query_labels, refs, ref_labels, saved,
                                                     *ctx.params)
        return (dq, None, dx) + (None,) * 8

    torch.library.register_autograd("apl::rank_ref", _backward_rank_ref, setup_context=_setup_rank_ref)


def self_ap(embeddings, labels, num_bins, lo, hi, variant, chunk_size):
    """(ap, npos) of every row against the other rows, with the compiled kernels."""
    ap, npos, _coef, _scores = torch.ops.apl.ap_self(embeddings, labels, num_bins, lo, hi, variant, chunk_size)
    return ap, npos


def ref_ap(queries, query_labels, refs, ref_labels, num_bins, lo, hi, variant, chunk_size, self_offset=-1):
    """(ap, npos) of each query against a separate database, with the compiled kernels; with
    self_offset >= 0, query i is row self_offset + i of refs and is left out of its ranking."""
    ap, npos, _coef, _scores = torch.ops.apl.ap_ref(
        queries, query_labels, refs, ref_labels, num_bins, lo, hi, variant, chunk_size, self_offset
    )
    return ap, npos


def scores_ap(scores, relevance, num_bins, lo, hi, variant):
    """(ap, npos) of a score matrix with a bool relevance mask, with the compiled kernels."""
    ap, npos, _coef = torch.ops.apl.ap_scores(scores, relevance, num_bins, lo, hi, variant)
    return ap, npos


def self_rank(embeddings, labels, kind, temperature, ks, k_temperatures, query_mode, chunk_size):
    """(value, npos) of every row against the other rows (rank surrogates), with the compiled kernels."""
    value, npos, _saved = torch.ops.apl.rank_self(embeddings, labels, kind, temperature, list(ks), list(k_temperatures),
                                                  query_mode, chunk_size)
    return value, npos


def ref_rank(queries, query_labels, refs, ref_labels, kind, temperature, ks, k_temperatures, query_mode, chunk_size,
             self_offset=-1):
    """(value, npos) of each query against a database (rank surrogates), with the compiled kernels."""
    value, npos, _saved = torch.ops.apl.rank_ref(queries, query_labels, refs, ref_labels, kind, temperature, list(ks),
                                                 list(k_temperatures), query_mode, chunk_size, self_offset)
    return value, npos
