"""The co-occurrence result :class:`Cooccurrence` (C, D, freq, n_rows) and its ``.npz`` file.

For codes h (one row per document, top-k latents active):

* ``C_ij`` = number of rows where latents i and j are both active (``C_ii`` = activation count);
* ``D_ij`` = sum over those rows of ``h_i * h_j``.

It is produced by :mod:`.accumulate` and checked by :mod:`._check`; the paper's normalisations of
it (``normalize``, ``npmi``, ...) and ``threshold`` are defined here, after the class.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Union

import numpy as np
import scipy.sparse as sp

from .._arrays import sparse_csr
from ..io import atomic_write
from ._check import check_contents, check_structure, read_npz

Matrix = Union[np.ndarray, sp.csr_matrix]


@dataclass
class Cooccurrence:
    """Totals over all rows seen.

    Dense mode holds numpy arrays; sparse mode (``dense=False``) holds scipy CSR matrices with
    only the observed pairs (both triangles and the diagonal, columns sorted in each row).
    """

    counts: Matrix
    """C, ``[n, n]`` int64: rows where both latents are active; the diagonal is ``freq``."""
    act_sim: Matrix
    """D, ``[n, n]`` float64: sum of ``h_i * h_j`` over rows where both are active."""
    freq: np.ndarray
    """``[n]`` int64: rows where each latent is active."""
    n_rows: int
    """Number of rows (documents) accumulated, active or not."""

    def __post_init__(self) -> None:
        # Types, shapes and sparse structure (O(n + nnz)): a matrix whose indptr/indices were
        # damaged is refused here, before any scipy routine or reader touches it. The value
        # invariants are checked where results come from outside (load, merge).
        check_structure(self.counts, self.act_sim, self.freq, self.n_rows)

    def check(self) -> "Cooccurrence":
        """Check every invariant of a true result (see :mod:`fastsae._cooc_check`); returns self.

        Non-negative integer counts with ``C_ii = freq_i`` and ``C_ij <= min(freq_i, freq_j)``,
        ``0 <= freq <= n_rows``, finite non-negative D that is 0 where C is, both symmetric.
        ``ValueError`` names the first violation.
        """
        check_contents(self.counts, self.act_sim, self.freq, self.n_rows)
        return self

    @property
    def n_latents(self) -> int:
        return int(self.freq.shape[0])

    @property
    def dense(self) -> bool:
        return isinstance(self.counts, np.ndarray)

    def normalized(self, method: str = "frequency", *, tau: float | None = None) -> Matrix:
        """``normalize(self, method)``, then ``threshold(., tau)`` when ``tau`` is given."""
        m = normalize(self, method)
        return m if tau is None else threshold(m, tau)

    def save(self, path: str | os.PathLike) -> None:
        """Write to ``path`` (``.npz``) atomically: a crash never leaves a half-written file."""
        path = os.fspath(path)
        arrays: dict[str, Any] = {"freq": self.freq, "n_rows": np.int64(self.n_rows)}
        if self.dense:
            arrays.update(counts=self.counts, act_sim=self.act_sim, format=np.array("dense"))
        else:
            c = self.counts.tocsr()
            arrays.update(
                format=np.array("csr"),
                indptr=c.indptr,
                indices=c.indices,
                counts=c.data,
                act_sim=self.act_sim.tocsr().data,
            )
        def write(tmp: str) -> None:
            with open(tmp, "wb") as f:  # a file object: np.savez(path) would append ".npz"
                np.savez(f, **arrays)

        atomic_write(path, write)

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Cooccurrence":
        """Read a file written by :meth:`save` (no pickle is ever loaded).

        The file is checked whole: a truncated or bit-flipped file, missing or extra arrays,
        wrong dtypes, a damaged sparse structure or a violated invariant (see :meth:`check`)
        raise ``ValueError`` naming the file.
        """
        z = read_npz(path)
        fmt, freq, n_rows = str(z["format"]), z["freq"], z["n_rows"]
        n = freq.shape[0] if freq.ndim == 1 else -1
        try:
            if fmt == "dense":
                counts, act_sim = z["counts"], z["act_sim"]
            else:
                # Raw structure first: scipy's constructor would trust indptr and indices.
                counts, act_sim = (_csr_unchecked(z[key], z["indices"], z["indptr"], n) for key in ("counts", "act_sim"))
            check_contents(counts, act_sim, freq, n_rows)
        except (TypeError, ValueError) as e:
            raise ValueError(f"{path}: corrupt co-occurrence file ({e})") from e
        return cls(counts=counts, act_sim=act_sim, freq=freq.astype(np.int64, copy=False), n_rows=int(n_rows))


def _csr_unchecked(data: np.ndarray, indices: np.ndarray, indptr: np.ndarray, n: int) -> sp.csr_matrix:
    """A CSR shell around raw arrays, for check_sparse to inspect before anything trusts them."""
    if n < 0:
        raise ValueError("freq must be 1-dimensional")
    m = sp.csr_matrix((n, n), dtype=data.dtype if data.dtype.kind in "iuf" else np.float64)
    m.indptr, m.indices, m.data = indptr, indices, data
    return m


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
