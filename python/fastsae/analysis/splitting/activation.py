"""Activation similarity: cosine of two features' activation vectors over the same documents."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch

from ..._plot import save_figure
from .._common import _PNG_DPI, _Codes, _codes, _positive_int, figure_row

# ----------------------------------------------------------------------------- 2. activation similarity


@dataclass(eq=False)
class ActivationSimilarity:
    """Activation similarity of feature pairs (i of SAE a, j of SAE b) over shared documents."""

    pairs: np.ndarray
    """``[P, 2]`` int64 ``(i, j)`` feature ids, as given."""
    similarity: np.ndarray
    """``[P]`` float64 cosine of the two activation vectors over documents (0 when either never fires)."""
    co_active: np.ndarray
    """``[P]`` int64 number of documents on which both features are active."""
    n_docs: int
    """Number of documents compared."""


def _column_subset(c: _Codes, feats: np.ndarray) -> sp.csc_matrix:
    """``[n_docs, len(feats)]`` CSC of the activations of the (sorted, unique) features ``feats``."""
    pos = np.searchsorted(feats, c.cols)
    hit = pos < feats.size
    hit[hit] = feats[pos[hit]] == c.cols[hit]
    m = sp.csc_matrix((c.vals[hit], (c.rows[hit], pos[hit])), shape=(c.n_docs, feats.size))
    m.sum_duplicates()
    return m


def _pairs(pairs: Any) -> np.ndarray:
    p = pairs.detach().cpu().numpy() if isinstance(pairs, torch.Tensor) else np.asarray(pairs)
    if p.size == 0:
        return np.zeros((0, 2), dtype=np.int64)
    if p.ndim != 2 or p.shape[1] != 2:
        raise ValueError(f"pairs must be a [P, 2] array of (feature in a, feature in b), got shape {p.shape}")
    if p.dtype.kind not in "iu":
        raise TypeError(f"pairs must hold integer feature ids, got dtype {p.dtype}")
    p = p.astype(np.int64)
    if p.min() < 0:
        raise ValueError(f"pairs hold negative feature ids (min {p.min()})")
    return p


def _activation_similarity(ca: _Codes, cb: _Codes, p: np.ndarray, chunk_nnz: int) -> ActivationSimilarity:
    if ca.n_docs != cb.n_docs:
        raise ValueError(f"the two codes must cover the same documents: {ca.n_docs} vs {cb.n_docs} rows")
    n_p = p.shape[0]
    sim = np.zeros(n_p, dtype=np.float64)
    co = np.zeros(n_p, dtype=np.int64)
    if n_p == 0:
        return ActivationSimilarity(p, sim, co, ca.n_docs)
    fa, la = np.unique(p[:, 0], return_inverse=True)
    fb, lb = np.unique(p[:, 1], return_inverse=True)
    A, B = _column_subset(ca, fa), _column_subset(cb, fb)
    norm_a = np.sqrt(np.asarray(A.multiply(A).sum(axis=0)).ravel())
    norm_b = np.sqrt(np.asarray(B.multiply(B).sum(axis=0)).ravel())
    cost = np.diff(A.indptr)[la] + np.diff(B.indptr)[lb]
    cum = np.cumsum(cost)
    start = 0
    while start < n_p:
        base = cum[start - 1] if start else 0
        end = max(int(np.searchsorted(cum, base + chunk_nnz, side="right")), start + 1)
        prod = A[:, la[start:end]].multiply(B[:, lb[start:end]]).tocsc()
        prod.eliminate_zeros()
        dot = np.asarray(prod.sum(axis=0)).ravel()
        co[start:end] = np.diff(prod.indptr)
        den = norm_a[la[start:end]] * norm_b[lb[start:end]]
        sim[start:end] = np.divide(dot, den, out=np.zeros_like(dot), where=den > 0)
        start = end
    return ActivationSimilarity(p, sim, co, ca.n_docs)


def activation_similarity(codes_a: Any, codes_b: Any, pairs: Any, n_docs: int | None = None, *,
                          chunk_nnz: int = 1 << 24) -> ActivationSimilarity:
    """Similarity of the activation patterns of feature pairs over the same documents.

    Definition: for feature ``i`` of SAE a, let ``a_i`` be the ``n_docs``-vector whose entry
    ``d`` is the activation of ``i`` on document ``d`` (0 when ``i`` is not among the active
    top-k latents of ``d``); likewise ``b_j`` for SAE b. The activation similarity of
    ``(i, j)`` is ``a_i . b_j / (|a_i| |b_j|)``, the cosine of the two vectors, and 0 when
    either feature never fires. For two features of one SAE this is the paper's activation
    similarity ``D_ij`` as a cosine (:func:`fastsae.act_sim_cosine`); top-k activations are
    non-negative, so it lies in [0, 1].

    Row ``d`` of ``codes_a`` and of ``codes_b`` must be the same document (the same data
    encoded by both SAEs); ``n_docs``, when given, is checked against both. ``pairs`` is
    ``[P, 2]`` (feature of a, feature of b); a feature id that never occurs in the codes simply
    never fires. Only the columns named in ``pairs`` are built, as scipy CSC matrices, and the
    pairs are processed in chunks holding about ``chunk_nnz`` non-zeros, so ``[N, n]`` is never
    densified.
    """
    ca, cb = _codes(codes_a, "codes_a"), _codes(codes_b, "codes_b")
    if n_docs is not None:
        n_docs = _positive_int(n_docs, "n_docs")
        for c, name in ((ca, "codes_a"), (cb, "codes_b")):
            if c.n_docs != n_docs:
                raise ValueError(f"{name} has {c.n_docs} rows but n_docs={n_docs}")
    return _activation_similarity(ca, cb, _pairs(pairs), _positive_int(chunk_nnz, "chunk_nnz"))


def plot_activation_similarity(result: ActivationSimilarity, path: str | os.PathLike, *, bins: int = 40) -> str:
    """Histogram of the activation similarity of the pairs."""
    fig, (ax,) = figure_row()
    lo = min(0.0, float(result.similarity.min(initial=0.0)))
    ax.hist(np.clip(result.similarity, lo, 1.0), bins=bins, range=(lo, 1.0),
            color="tab:blue")
    ax.set_xlabel("activation similarity (cosine over documents)")
    ax.set_ylabel("feature pairs")
    ax.set_title(f"{len(result.similarity)} pairs, {result.n_docs} documents")
    return save_figure(fig, path, dpi=_PNG_DPI)
