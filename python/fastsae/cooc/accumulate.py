"""Co-occurrence C and activation similarity D of top-k SAE codes (paper section 4.2).

For codes h (one row per document, top-k latents active):

* ``C_ij`` = number of rows where latents i and j are both active (``C_ii`` = activation count);
* ``D_ij`` = sum over those rows of ``h_i * h_j``.

A latent is active in a row when it appears in that row's indices with a value > 0; a value
of exactly 0 is padding (any valid index). Counts are exact int64 at any number of rows; D is
float64, summed in row order inside a chunk whatever the thread count.

The heavy lifting is in the native core (``csrc/cooc.cpp``); this module converts inputs,
streams over chunks (``np.memmap`` inputs with tens of millions of rows keep memory flat) and
offers the paper's normalisations.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Any, Union

import numpy as np
import scipy.sparse as sp

from . import _native
from .io import atomic_write
from ._arrays import as_indices, as_values, available_memory, check_codes_shape, check_n_latents, release_pages, sparse_csr
from ._cooc_check import check_contents, check_structure, read_npz

Matrix = Union[np.ndarray, sp.csr_matrix]

#: Code entries (rows * k) per native call by default. Each chunk costs one pass over the
#: output rows it touches, and chunks larger than the CPU cache slow the per-pair walk; 2**21
#: measured best at n=9216, k=64 (N=1M: 3.3 ns/pair-update/core vs 4.4 at 2**22 and 3.6 at
#: 2**20, 2-core EPYC VM). The native core needs 16 bytes of working memory per entry.
DEFAULT_CHUNK_ENTRIES = 1 << 21


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


class CooccurrenceAccumulator:
    """Streaming accumulator of C and D over chunks of top-k codes.

    ``update(indices, values)`` adds one ``[B, k]`` chunk (int32/int64 indices, float32/float64
    values; numpy arrays or torch tensors). Each chunk is validated whole before anything is
    added, so a bad chunk raises ``ValueError`` and leaves the totals unchanged.
    ``merge(other)`` adds another accumulator's (or a saved :class:`Cooccurrence`'s) totals, for
    shards computed elsewhere; accumulators pickle, so shards can come from other processes.
    ``result()`` returns a :class:`Cooccurrence`. In dense mode its arrays share memory with
    the accumulator (no copy of the n x n outputs); a later ``update`` copies first, so a
    returned result never changes.
    """

    def __init__(self, n_latents: int, *, dense: bool = True):
        n = check_n_latents(n_latents)
        # The native accumulator zeroes what it allocates, so an allocation the machine cannot
        # back would be killed by the OOM killer rather than fail: check before.
        avail = _available_memory()
        if dense:
            need = 16 * n * n + 8 * n
            if avail is not None and need > avail:
                raise MemoryError(
                    f"dense co-occurrence for n_latents={n} needs {need / 2**30:.1f} GiB but about "
                    f"{avail / 2**30:.1f} GiB is available; use dense=False for observed pairs only"
                )
        else:
            need = 88 * n  # per latent: its count (8 bytes) and an empty row of pairs (3 vectors + flag)
            if avail is not None and need > avail:
                raise MemoryError(f"sparse co-occurrence for n_latents={n} needs {need / 2**30:.1f} GiB for its "
                                  f"per-latent tables before any pair, but about {avail / 2**30:.1f} GiB is available")
        self._acc = _native.CoocAccumulator(n, bool(dense))

    @property
    def n_latents(self) -> int:
        return self._acc.n_latents

    @property
    def dense(self) -> bool:
        return self._acc.dense

    @property
    def n_rows(self) -> int:
        return self._acc.n_rows

    def update(self, indices: Any, values: Any) -> "CooccurrenceAccumulator":
        idx, val = as_indices(indices), as_values(values)
        check_codes_shape(idx, val)
        self._acc.update(idx, val)
        return self

    def merge(self, other: "CooccurrenceAccumulator | Cooccurrence") -> "CooccurrenceAccumulator":
        if isinstance(other, CooccurrenceAccumulator):
            if other.n_latents != self.n_latents:
                raise ValueError(f"cannot merge n_latents={other.n_latents} into n_latents={self.n_latents}")
            if other.dense == self.dense:
                self._acc.merge(other._acc)
                return self
            other = other.result()
        if not isinstance(other, Cooccurrence):
            raise TypeError(f"merge takes a CooccurrenceAccumulator or Cooccurrence, got {type(other).__name__}")
        if other.n_latents != self.n_latents:
            raise ValueError(f"cannot merge n_latents={other.n_latents} into n_latents={self.n_latents}")
        # A result from outside (a file, another process, a user) is checked whole before any
        # of it is added: a damaged one would otherwise be summed into the totals for good.
        check_contents(other.counts, other.act_sim, other.freq, other.n_rows, "cannot merge: ")
        freq = np.ascontiguousarray(other.freq, dtype=np.int64)
        if other.dense:
            self._acc.add_dense_totals(
                np.ascontiguousarray(other.counts, dtype=np.int64),
                np.ascontiguousarray(other.act_sim, dtype=np.float64),
                freq,
                int(other.n_rows),
            )
        else:
            c = sparse_csr(other.counts, "counts")
            s = sparse_csr(other.act_sim, "act_sim")
            upper = sp.triu(c, format="coo")
            sims = np.asarray(s[upper.row, upper.col]).ravel().astype(np.float64)
            self._acc.add_sparse_totals(
                upper.row.astype(np.int64), upper.col.astype(np.int64), upper.data.astype(np.int64), sims, freq,
                int(other.n_rows),
            )
        return self

    def result(self) -> Cooccurrence:
        freq = self._acc.freq()
        if self.dense:
            counts, act_sim = self._acc.dense_result()
        else:
            indptr, indices, cdata, sdata = self._acc.sparse_result()
            n = self.n_latents
            counts = sp.csr_matrix((cdata, indices, indptr), shape=(n, n))
            act_sim = sp.csr_matrix((sdata, indices.copy(), indptr.copy()), shape=(n, n))
        return Cooccurrence(counts=counts, act_sim=act_sim, freq=freq, n_rows=self.n_rows)

    # Pickling (shards from other processes): the state is the result's arrays.
    def __getstate__(self) -> dict:
        return {"n_latents": self.n_latents, "dense": self.dense, "result": self.result()}

    def __setstate__(self, state: dict) -> None:
        self._acc = _native.CoocAccumulator(state["n_latents"], state["dense"])
        self.merge(state["result"])

    def __repr__(self) -> str:
        mode = "dense" if self.dense else "sparse"
        return f"CooccurrenceAccumulator(n_latents={self.n_latents}, {mode}, n_rows={self.n_rows})"


def _available_memory() -> int | None:
    return available_memory()


def default_chunk_size(k: int) -> int:
    """Rows per chunk for codes with ``k`` entries per row."""
    return max(1, DEFAULT_CHUNK_ENTRIES // max(1, k))


def cooccurrence(
    indices: Any,
    values: Any,
    n_latents: int,
    *,
    chunk_size: int | None = None,
    dense: bool = True,
    progress: bool | None = None,
) -> Cooccurrence:
    """C and D of ``[N, k]`` top-k codes in one call, streaming over row chunks.

    ``indices``/``values`` may be ``np.memmap`` (e.g. ``np.load(path, mmap_mode="r")``) with
    tens of millions of rows: each chunk's pages are released after use, so memory does not
    grow with N. ``chunk_size`` defaults to 2**21 code entries per chunk. ``progress``
    shows a tqdm bar (default: when N >= 1M rows).
    """
    n = check_n_latents(n_latents)
    idx_all = indices if hasattr(indices, "shape") else as_indices(indices)
    val_all = values if hasattr(values, "shape") else as_values(values)
    if len(idx_all.shape) != 2 or tuple(idx_all.shape) != tuple(val_all.shape):
        raise ValueError(
            f"indices and values must have the same 2-dimensional [N, k] shape, got "
            f"{tuple(idx_all.shape)} and {tuple(val_all.shape)}"
        )
    n_rows, k = int(idx_all.shape[0]), int(idx_all.shape[1])
    if chunk_size is None:
        chunk_size = default_chunk_size(k)
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, (int, np.integer)) or chunk_size <= 0:
        raise ValueError(f"chunk_size must be a positive int, got {chunk_size!r}")
    acc = CooccurrenceAccumulator(n, dense=dense)
    if progress is None:
        progress = n_rows >= 1_000_000
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=n_rows, unit="row", desc="co-occurrence", leave=False)
    try:
        for start in range(0, n_rows, chunk_size):
            stop = min(n_rows, start + chunk_size)
            ci, cv = idx_all[start:stop], val_all[start:stop]
            try:
                acc.update(ci, cv)
            except ValueError as e:
                # The native message numbers rows within the chunk: report the input's row.
                msg = re.sub(r"row (\d+)", lambda m: f"row {start + int(m.group(1))}", str(e), count=1)
                raise ValueError(msg) from None
            release_pages(ci)
            release_pages(cv)
            if bar is not None:
                bar.update(stop - start)
        if n_rows == 0:
            acc.update(np.zeros((0, k), np.int64), np.zeros((0, k), np.float32))
    finally:
        if bar is not None:
            bar.close()
    return acc.result()


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
