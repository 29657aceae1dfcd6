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

from . import _native
from ._arrays import to_numpy


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
    NaN or infinite weights raise ``ValueError``.
    """
    if symmetrize not in ("max", "min", "mean"):
        raise ValueError(f"symmetrize must be 'max', 'min' or 'mean', got {symmetrize!r}")
    if algorithm not in ("auto", "kruskal", "prim"):
        raise ValueError(f"algorithm must be 'auto', 'kruskal' or 'prim', got {algorithm!r}")
    if sp.issparse(weights):
        if weights.ndim != 2 or weights.shape[0] != weights.shape[1]:
            raise ValueError(f"weights must be square, got shape {weights.shape}")
        if algorithm == "prim":
            raise ValueError("algorithm='prim' needs a dense matrix; sparse input uses Kruskal")
        w = sp.csr_matrix(weights)  # no copy when already CSR
        if w.dtype.kind not in "fiub":
            raise TypeError(f"weights must be real numbers, got dtype {w.dtype}")
        if not w.has_canonical_format:  # duplicates are summed, as scipy does everywhere
            w = w.copy()
            w.sum_duplicates()
        n = int(w.shape[0])
        edges, ew = _native.msf_csr(
            n,
            np.ascontiguousarray(w.indptr, dtype=np.int64),
            np.ascontiguousarray(w.indices, dtype=np.int32),
            np.ascontiguousarray(w.data, dtype=np.float64),
            symmetrize,
        )
        return SpanningForest(edges, ew)
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
