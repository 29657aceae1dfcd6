"""Maximum spanning forests (native Kruskal / Prim), deterministic under ties.

Edges are totally ordered by (weight descending, smaller endpoint ascending, larger endpoint
ascending). Under a strict total order the maximum spanning forest is unique, so the same
graph always gives the same forest, whatever order its entries arrive in and whichever
algorithm runs.

An asymmetric matrix is made symmetric by an order-independent rule on the pair
(W_ij, W_ji), an absent entry counting as 0: ``symmetrize="max"`` (default; an edge is as
strong as its stronger direction), ``"min"`` or ``"mean"``. A weight of exactly 0 means no
edge. (The paper authors' code built an undirected graph from an asymmetric matrix by letting
whichever entry was written last win, so their trees depended on the feature order.)
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np
import scipy.sparse as sp

from .. import _native
from .._arrays import check_allocation, check_sparse, sparse_coo, sparse_csr, to_numpy


class SpanningForest(NamedTuple):
    """A maximum spanning forest (unpacks as ``edges, edge_weights``)."""

    edges: np.ndarray
    """``[m, 2]`` int64, each row ``(u, v)`` with ``u < v``, in the total edge order."""
    edge_weights: np.ndarray
    """``[m]`` float64, the symmetrised weight of each edge."""


def maximum_spanning_forest(
    weights: Any, *, symmetrize: str = "max", algorithm: str = "auto"
) -> SpanningForest:
    """Maximum spanning forest of a weighted undirected graph.

    ``weights``: a dense ``[n, n]`` array (numpy or torch; float32/float64, integers are
    converted to float64) or any scipy sparse matrix (zero / absent = no edge; duplicate
    entries are summed as scipy does). Returns a :class:`SpanningForest`; ``m = n - #components``.
    ``algorithm``: ``"auto"`` (Kruskal), ``"kruskal"``, or ``"prim"`` (dense input only).
    NaN or infinite weights raise ``ValueError``. A sparse matrix's structure (``indptr``,
    ``indices``, coordinates) is validated before anything reads it; its order may exceed
    memory or int32 (e.g. ``(2**40, 2**40)`` in COO) as long as its entries fit.
    """
    if symmetrize not in ("max", "min", "mean"):
        raise ValueError(f"symmetrize must be 'max', 'min' or 'mean', got {symmetrize!r}")
    if algorithm not in ("auto", "kruskal", "prim"):
        raise ValueError(f"algorithm must be 'auto', 'kruskal' or 'prim', got {algorithm!r}")
    if sp.issparse(weights):
        if algorithm == "prim":
            raise ValueError("algorithm='prim' needs a dense matrix; sparse input uses Kruskal")
        return _sparse_forest(weights, symmetrize)
    w = to_numpy(weights, "weights")
    if w.ndim != 2 or w.shape[0] != w.shape[1]:
        raise ValueError(f"weights must be a square [n, n] matrix, got shape {w.shape}")
    if w.dtype.kind in "iub":
        w = w.astype(np.float64)
    elif w.dtype == np.float16:
        w = w.astype(np.float32)
    elif w.dtype not in (np.float32, np.float64):
        raise TypeError(f"weights must be real numbers, got dtype {w.dtype}")
    edges, ew = _native.msf_dense(np.ascontiguousarray(w), symmetrize, algorithm)
    return SpanningForest(edges, ew)


#: Bytes of native working memory per stored entry (edge lists, pairing) and per node (forest).
_BYTES_PER_ENTRY = 48
_BYTES_PER_NODE = 16


def _sparse_forest(weights: Any, symmetrize: str) -> SpanningForest:
    # The structure is checked on the raw attributes before scipy or the native core read it.
    fmt = check_sparse(weights, "weights", square=True)
    n = int(weights.shape[0])
    nnz = int(weights.nnz) if fmt in ("csr", "csc", "coo") else None
    if fmt == "csr" and n < 2**31 and n <= 4 * nnz + (1 << 20):
        # The usual case: a CSR over about as many nodes as entries goes in as it is.
        w = sparse_csr(weights, "weights", square=True)
        _check_finite(w.data, lambda p: (int(np.searchsorted(w.indptr, p, side="right")) - 1, int(w.indices[p])))
        check_allocation(_BYTES_PER_ENTRY * w.nnz + _BYTES_PER_NODE * n, f"a spanning forest of {w.nnz} entries")
        edges, ew = _native.msf_csr(
            n,
            np.ascontiguousarray(w.indptr, dtype=np.int64),
            np.ascontiguousarray(w.indices, dtype=np.int32),
            np.ascontiguousarray(w.data, dtype=np.float64),
            symmetrize,
        )
        return SpanningForest(edges, ew)
    # Few entries over many nodes (n may exceed int32 or memory): nodes no entry touches are
    # isolated and never in a forest, so the touched ones are renumbered 0..m-1. The
    # renumbering is monotone, so the total edge order, hence the forest, is unchanged.
    row, col, data, _ = sparse_coo(weights, "weights", square=True)
    _check_finite(data, lambda p: (int(row[p]), int(col[p])))
    k = row.shape[0]
    check_allocation(_BYTES_PER_ENTRY * k, f"a spanning forest of {k} entries")
    nodes, inv = np.unique(np.concatenate([row, col]), return_inverse=True)
    m = int(nodes.shape[0])
    if m >= 2**31:
        raise ValueError(f"weights connect {m} distinct nodes; at most 2**31 - 1 are supported")
    w = sp.csr_matrix((data.astype(np.float64), (inv[:k], inv[k:])), shape=(m, m))
    w.sum_duplicates()  # duplicates are summed, as scipy does everywhere
    edges, ew = _native.msf_csr(
        m,
        w.indptr.astype(np.int64),
        w.indices.astype(np.int32),
        np.ascontiguousarray(w.data, dtype=np.float64),
        symmetrize,
    )
    return SpanningForest(nodes[edges].astype(np.int64).reshape(-1, 2), ew)


def _check_finite(data: np.ndarray, where) -> None:
    if data.dtype.kind == "f":
        bad = ~np.isfinite(data)
        if bad.any():
            i, j = where(int(np.argmax(bad)))
            raise ValueError(f"weights hold a NaN or infinite value at ({i}, {j})")
