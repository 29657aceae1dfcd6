"""Normalisations of a :class:`~fastsae.cooc.result.Cooccurrence` (paper section 4.2), and
:func:`threshold`. Each normalisation returns a float64 matrix of the same kind as the result
(dense ndarray, or CSR with the structure of ``counts``)."""

from __future__ import annotations

from typing import Any

import numpy as np
import scipy.sparse as sp

from .._arrays import sparse_csr
from ._check import check_structure
from .result import Cooccurrence, Matrix


# ----------------------------------------------------------------------------------------------
# Normalisations. Each takes a Cooccurrence and returns a float64 matrix of the same kind
# (dense ndarray or CSR with the structure of ``counts``).


def _entries(cooc: Cooccurrence):
    """(row ids, col ids, C data, D data) of the stored entries of a sparse result."""
    c = sparse_csr(cooc.counts, "counts")
    rows = np.repeat(np.arange(c.shape[0], dtype=np.int64), np.diff(c.indptr))
    cols = c.indices.astype(np.int64)
    d = sparse_csr(cooc.act_sim, "act_sim")
    if d.nnz == c.nnz and np.array_equal(d.indptr, c.indptr) and np.array_equal(d.indices, c.indices):
        dd = d.data.astype(np.float64)
    else:  # D stored on another structure (a result built by hand): read it at C's entries
        dd = np.asarray(d[rows, cols]).ravel().astype(np.float64)
    return c, rows, cols, c.data.astype(np.float64), dd


def _check_result(cooc: Any) -> None:
    """Type and structure of a result before a normalisation reads it (fields are mutable)."""
    if not isinstance(cooc, Cooccurrence):
        raise TypeError(f"expected a fastsae.Cooccurrence, got {type(cooc).__name__}")
    check_structure(cooc.counts, cooc.act_sim, cooc.freq, cooc.n_rows)


def _like(c: sp.csr_matrix, data: np.ndarray) -> sp.csr_matrix:
    return sp.csr_matrix((data, c.indices.copy(), c.indptr.copy()), shape=c.shape)


def normalize_frequency(cooc: Cooccurrence) -> Matrix:
    """The paper's normalisation, row-wise: ``C_ij / (n_i + 1)`` (asymmetric)."""
    _check_result(cooc)
    f = cooc.freq.astype(np.float64)
    if cooc.dense:
        return cooc.counts / (f[:, None] + 1.0)
    c, r, _, cd, _ = _entries(cooc)
    return _like(c, cd / (f[r] + 1.0))


def normalize_min(cooc: Cooccurrence) -> Matrix:
    """``C_ij / min(n_i, n_j)`` (0 where a latent never fires): P(larger | smaller fires)."""
    _check_result(cooc)
    f = cooc.freq.astype(np.float64)
    if cooc.dense:
        den = np.minimum(f[:, None], f[None, :])
        return np.divide(cooc.counts, den, out=np.zeros(den.shape), where=den > 0)
    c, r, j, cd, _ = _entries(cooc)
    den = np.minimum(f[r], f[j])
    return _like(c, np.divide(cd, den, out=np.zeros_like(cd), where=den > 0))


def jaccard(cooc: Cooccurrence) -> Matrix:
    """``C_ij / (n_i + n_j - C_ij)`` (0 where both latents never fire)."""
    _check_result(cooc)
    f = cooc.freq.astype(np.float64)
    if cooc.dense:
        den = f[:, None] + f[None, :] - cooc.counts
        return np.divide(cooc.counts, den, out=np.zeros(den.shape), where=den > 0)
    c, r, j, cd, _ = _entries(cooc)
    den = f[r] + f[j] - cd
    return _like(c, np.divide(cd, den, out=np.zeros_like(cd), where=den > 0))


def _npmi(cij: np.ndarray, fi: np.ndarray, fj: np.ndarray, n_rows: int) -> np.ndarray:
    out = np.full(np.broadcast(cij, fi, fj).shape, -1.0)
    ok = cij > 0
    full = ok & (cij >= n_rows)
    part = ok & ~full
    cij_b, fi_b, fj_b = (np.broadcast_to(a, out.shape) for a in (cij, fi, fj))
    p = cij_b[part] / n_rows
    out[part] = np.log(cij_b[part] * n_rows / (fi_b[part] * fj_b[part])) / -np.log(p)
    out[full] = 1.0
    return out


def npmi(cooc: Cooccurrence) -> Matrix:
    """Normalised pointwise mutual information of the activation events, in [-1, 1].

    ``log(p_ij / (p_i p_j)) / -log(p_ij)`` with ``p = count / n_rows``; -1 for pairs that never
    co-occur, 1 when both fire in every row. Sparse results hold only observed pairs (absent
    pairs are -1 by definition; the stored structure is that of ``counts``).
    """
    _check_result(cooc)
    if cooc.n_rows <= 0:
        raise ValueError("npmi needs at least one row")
    f = cooc.freq.astype(np.float64)
    if cooc.dense:
        return _npmi(cooc.counts.astype(np.float64), f[:, None], f[None, :], cooc.n_rows)
    c, r, j, cd, _ = _entries(cooc)
    return _like(c, _npmi(cd, f[r], f[j], cooc.n_rows))


def act_sim_cosine(cooc: Cooccurrence) -> Matrix:
    """D as a cosine: ``D_ij / sqrt(D_ii D_jj)`` (0 where a latent never fires)."""
    _check_result(cooc)
    if cooc.dense:
        d = np.sqrt(np.diag(cooc.act_sim).astype(np.float64))
        den = d[:, None] * d[None, :]
        return np.divide(cooc.act_sim, den, out=np.zeros(den.shape), where=den > 0)
    c, r, j, _, dd = _entries(cooc)
    diag = np.sqrt(np.asarray(cooc.act_sim.diagonal(), dtype=np.float64))
    den = diag[r] * diag[j]
    return _like(c, np.divide(dd, den, out=np.zeros_like(dd), where=den > 0))


NORMALIZATIONS = {
    "frequency": normalize_frequency,
    "min": normalize_min,
    "jaccard": jaccard,
    "npmi": npmi,
    "cosine": act_sim_cosine,
}


def normalize(cooc: Cooccurrence, method: str = "frequency") -> Matrix:
    """One of ``frequency`` (paper: C_ij/(n_i+1)), ``min``, ``jaccard``, ``npmi``, ``cosine`` (of D)."""
    try:
        fn = NORMALIZATIONS[method]
    except KeyError:
        raise ValueError(f"unknown normalisation {method!r}; choose from {sorted(NORMALIZATIONS)}") from None
    return fn(cooc)


def threshold(matrix: Matrix, tau: float) -> Matrix:
    """Zero every entry below ``tau`` (entries >= tau are kept); sparse input stays sparse."""
    tau = float(tau)
    if not np.isfinite(tau):
        raise ValueError(f"tau must be finite, got {tau}")
    if sp.issparse(matrix):
        m = sparse_csr(matrix, "matrix", dtype=np.float64).copy()
        m.data[m.data < tau] = 0.0
        m.eliminate_zeros()
        return m
    m = np.asarray(matrix, dtype=np.float64)
    return np.where(m >= tau, m, 0.0)
