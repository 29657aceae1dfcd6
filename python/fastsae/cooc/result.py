"""The co-occurrence result :class:`Cooccurrence` (C, D, freq, n_rows) and its ``.npz`` file.

For codes h (one row per document, top-k latents active):

* ``C_ij`` = number of rows where latents i and j are both active (``C_ii`` = activation count);
* ``D_ij`` = sum over those rows of ``h_i * h_j``.

It is produced by :mod:`.accumulate`, checked by :mod:`._check` and normalised by :mod:`.normalize`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Union

import numpy as np
import scipy.sparse as sp

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
        from .normalize import normalize, threshold  # normalize.py reads this class: imported late

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
