"""Geometry of learned SAE weights (paper appendix E and A.4, Figures 5 and 18).

Three analyses, each a function returning data and a ``plot_*`` function writing a PNG:

* :func:`encoder_decoder_alignment` (Figure 18): per latent, the cosine between its encoder
  row and its decoder row, against its largest decoder cosine to any *other* latent;
* :func:`decoder_ordering` (appendix E, "Clustering feature vectors"): an ordering of the
  latents from the thresholded decoder-similarity graph, by reverse Cuthill-McKee or a 1-D
  spectral (Fiedler vector) embedding, to look for block-diagonal structure in ``W_dec``;
  :func:`plot_permuted_similarity` draws the permuted cosine matrix;
* :func:`log_feature_density` (Figure 5, Table 2 "Log FD"): log10 of how often each latent
  fires, dead latents counted apart.

Weights are ``[n_latents, d_in]`` (one row per latent, as ``TopKSAE.W_enc``/``W_dec``) and may
be numpy arrays or torch tensors. Decoder cosines are computed in ``block_size`` x
``block_size`` tiles, so the ``n x n`` similarity matrix is never held in memory.

Plots use matplotlib's object API on an Agg canvas: they work headless and leave the global
pyplot backend and state untouched.

The ordering lives here; the alignment in :mod:`.alignment`, the density in :mod:`.density`
(re-exported, so every name of this module keeps its import path).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.linalg
import scipy.sparse as sp
import scipy.stats
from scipy.sparse.csgraph import connected_components, reverse_cuthill_mckee
from scipy.sparse.linalg import lobpcg

from .._arrays import sparse_coo, sparse_csr, to_numpy
from .._checks import check_number
from .._plot import new_figure, save_figure
from ._common import (
    DEFAULT_BLOCK_SIZE,
    _as_weights,
    _positive_int,
    _tiles,
    _unit_rows_np,
)
from .alignment import (
    EncoderDecoderAlignment,
    encoder_decoder_alignment,
    plot_encoder_decoder_alignment,
)
from .density import LogFeatureDensity, log_feature_density, plot_log_density

__all__ = [
    "DEFAULT_BLOCK_SIZE",
    "DecoderOrdering",
    "EncoderDecoderAlignment",
    "LogFeatureDensity",
    "bandwidth",
    "decoder_ordering",
    "encoder_decoder_alignment",
    "log_feature_density",
    "order_graph",
    "plot_encoder_decoder_alignment",
    "plot_log_density",
    "plot_permuted_similarity",
    "similarity_graph",
]

#: Default ``|cosine|`` threshold for the decoder similarity graph. Cosines of unrelated
#: directions in d >= 256 dimensions are ~N(0, 1/d), so 0.5 keeps only genuinely close pairs.
DEFAULT_THRESHOLD = 0.5
#: Default cap on graph edges in :func:`similarity_graph` (about 2.4 GB of COO triplets).
DEFAULT_MAX_EDGES = 100_000_000
#: Connected components up to this size get a dense ``eigh``; larger ones use sparse LOBPCG.
_DENSE_EIGH_MAX = 500
_LOBPCG_MAXITER = 1000

_METHODS = ("rcm", "spectral")


# ------------------------------------------------------------------- decoder ordering


@dataclass(frozen=True)
class DecoderOrdering:
    """An ordering of latents from the thresholded decoder-similarity graph (appendix E)."""

    order: np.ndarray
    """``[n]`` int64 permutation: ``order[p]`` is the latent placed at position p."""
    method: str
    """``"rcm"`` (reverse Cuthill-McKee) or ``"spectral"`` (Fiedler vector per component)."""
    threshold: float
    """Edges join latents i != j with ``|cos(W_dec[i], W_dec[j])| >= threshold``."""
    adjacency: sp.csr_matrix
    """``[n, n]`` symmetric graph, weights ``|cosine|``, empty diagonal."""
    n_edges: int
    """Undirected edges in ``adjacency``."""
    n_components: int
    """Connected components of ``adjacency`` (isolated latents count as one each)."""
    bandwidth_before: int
    """Bandwidth ``max |i - j|`` over edges in the original latent order (0 without edges)."""
    bandwidth_after: int
    """Bandwidth after permuting by ``order``."""


def similarity_graph(
    W_dec: Any,
    threshold: float = DEFAULT_THRESHOLD,
    *,
    block_size: int = DEFAULT_BLOCK_SIZE,
    max_edges: int = DEFAULT_MAX_EDGES,
) -> sp.csr_matrix:
    """``[n, n]`` CSR graph of decoder rows: weight ``|cos|`` where ``|cos| >= threshold``, i != j.

    Built from ``block_size`` tiles of the upper triangle; raises ``ValueError`` once more than
    ``max_edges`` undirected edges are found (raise the threshold).
    """
    threshold = _check_threshold(threshold)
    block_size = _positive_int(block_size, "block_size")
    max_edges = _positive_int(max_edges, "max_edges")
    dec = _as_weights(W_dec, "W_dec")
    n = dec.shape[0]
    unit = _unit_rows_np(dec, "W_dec")
    rows, cols, vals = [], [], []
    n_found = 0
    for i0, _i1, j0, _j1, s in _tiles(unit, block_size):
        a = np.abs(s)
        keep = a >= threshold
        if i0 == j0:
            keep = np.triu(keep, 1)
        r, c = np.nonzero(keep)
        n_found += r.size
        if n_found > max_edges:
            raise ValueError(
                f"the similarity graph at threshold {threshold} has more than max_edges={max_edges} "
                f"edges; raise the threshold (or max_edges)"
            )
        rows.append(r.astype(np.int64) + i0)
        cols.append(c.astype(np.int64) + j0)
        vals.append(a[r, c].astype(np.float64))
    r = np.concatenate(rows)
    c = np.concatenate(cols)
    v = np.concatenate(vals)
    g = sp.coo_matrix((np.concatenate([v, v]), (np.concatenate([r, c]), np.concatenate([c, r]))), shape=(n, n))
    g = g.tocsr()
    g.sort_indices()
    return g


def _check_threshold(threshold: Any) -> float:
    """Edges where ``|cosine| >= threshold``: a number in (0, 1]."""
    return check_number(threshold, "threshold", min=0.0, max=1.0, min_open=True)


def _as_graph(adjacency: Any) -> sp.csr_matrix:
    """Symmetric non-negative CSR with empty diagonal: ``max(|A|, |A|^T)``."""
    if sp.issparse(adjacency):
        a = sparse_csr(adjacency, "adjacency", square=True, dtype=np.float64)
    else:
        arr = to_numpy(adjacency, "adjacency")
        if arr.dtype.kind not in "fiub":
            raise TypeError(f"adjacency must hold real numbers, got dtype {arr.dtype}")
        if arr.ndim != 2:
            raise ValueError(f"adjacency must be a square 2-dimensional matrix, got shape {tuple(arr.shape)}")
        a = sp.csr_matrix(arr.astype(np.float64))
    if a.shape[0] != a.shape[1]:
        raise ValueError(f"adjacency must be square, got shape {tuple(a.shape)}")
    if a.shape[0] == 0:
        raise ValueError("adjacency is empty (0 x 0)")
    if not np.isfinite(a.data).all():
        raise ValueError("adjacency contains NaN or inf")
    a = abs(a)
    a = a.maximum(a.T).tocsr()
    a.setdiag(0)
    a.eliminate_zeros()
    a.sort_indices()
    return a


def bandwidth(adjacency: Any, order: Any = None) -> int:
    """``max |pos[i] - pos[j]|`` over edges (i, j), where ``pos`` is the position of each latent
    under ``order`` (identity when ``None``); 0 for a graph without edges."""
    if sp.issparse(adjacency):
        row, col, data, shape = sparse_coo(adjacency, "adjacency", square=True)
    else:
        arr = to_numpy(adjacency, "adjacency")
        if arr.dtype.kind not in "fiub":
            raise TypeError(f"adjacency must hold real numbers, got dtype {arr.dtype}")
        if arr.ndim != 2 or arr.shape[0] != arr.shape[1]:
            raise ValueError(f"adjacency must be a square 2-dimensional matrix, got shape {tuple(arr.shape)}")
        row, col = np.nonzero(arr)
        data, shape = arr[row, col], arr.shape
    n = shape[0]
    mask = data != 0
    r, c = row[mask], col[mask]
    if r.size == 0:
        return 0
    if order is None:  # identity: no n-sized array (n may be far larger than the entries)
        return int(np.abs(r - c).max())
    else:
        order = _check_order(order, n)
        pos = np.empty(n, dtype=np.int64)
        pos[order] = np.arange(n)
    return int(np.abs(pos[r] - pos[c]).max())


def _check_order(order: Any, n: int) -> np.ndarray:
    o = np.asarray(order.order if isinstance(order, DecoderOrdering) else to_numpy(order, "order"))
    if o.ndim != 1 or o.shape[0] != n:
        raise ValueError(f"order must be a 1-dimensional permutation of {n} latents, got shape {tuple(o.shape)}")
    if o.dtype.kind not in "iu":
        raise ValueError(f"order must hold integer latent ids, got dtype {o.dtype}")
    o = o.astype(np.int64)
    if o.size and (o.min() < 0 or o.max() >= n or np.unique(o).size != n):
        raise ValueError(f"order is not a permutation of range({n})")
    return o


def _fiedler_order(lap: sp.csr_matrix, deg: np.ndarray) -> np.ndarray:
    """Positions sorted by the Fiedler vector of a connected graph's Laplacian (m >= 3)."""
    m = lap.shape[0]
    if m <= _DENSE_EIGH_MAX:
        _, vecs = scipy.linalg.eigh(lap.toarray(), subset_by_index=[0, 1])
        v = vecs[:, 1]
    else:
        # LOBPCG for the smallest eigenpairs orthogonal to the constant null vector, with a
        # Jacobi preconditioner. (Shift-invert eigsh needs an LU factorisation of L, whose
        # fill-in on a random-like similarity graph is near dense: 28 s against 5 s here on a
        # 19k-node component.) A block of 3 vectors converges faster than a single one.
        x0 = np.random.default_rng(0).standard_normal((m, 3))
        y = np.full((m, 1), 1.0 / math.sqrt(m))
        vals, vecs = lobpcg(lap, x0, Y=y, M=sp.diags(1.0 / deg), largest=False, maxiter=_LOBPCG_MAXITER)
        v = vecs[:, int(np.argmin(vals))]
    # The eigenvector's sign is arbitrary: fix it so the output is deterministic.
    if v[np.argmax(np.abs(v))] < 0:
        v = -v
    return np.argsort(v, kind="stable")


def order_graph(adjacency: Any, method: str = "rcm") -> np.ndarray:
    """``[n]`` int64 permutation of the nodes of an undirected graph (dense or scipy sparse).

    The graph is ``max(|A|, |A|^T)`` without its diagonal.

    * ``"rcm"``: :func:`scipy.sparse.csgraph.reverse_cuthill_mckee` (structure only).
    * ``"spectral"``: per connected component, nodes sorted by the Fiedler vector of the
      weighted Laplacian ``L = D - A`` (dense ``eigh`` for components up to 500 nodes, sparse
      ``scipy.sparse.linalg.lobpcg`` beyond). Components are placed one after the other, largest first (ties:
      lowest latent id first), so each is contiguous and isolated latents come last.
    """
    if method not in _METHODS:
        raise ValueError(f"method must be one of {_METHODS}, got {method!r}")
    a = _as_graph(adjacency)
    n = a.shape[0]
    if method == "rcm":
        return np.asarray(reverse_cuthill_mckee(a, symmetric_mode=True), dtype=np.int64)

    n_comp, labels = connected_components(a, directed=False)
    members = [[] for _ in range(n_comp)]
    for node, lab in enumerate(labels.tolist()):
        members[lab].append(node)
    comps = sorted((np.asarray(m, dtype=np.int64) for m in members), key=lambda m: (-m.size, int(m[0])))
    out = []
    for nodes in comps:
        if nodes.size <= 2:
            out.append(nodes)
            continue
        sub = a[nodes][:, nodes]
        deg = np.asarray(sub.sum(axis=1)).ravel()
        lap = (sp.diags(deg) - sub).tocsr()
        out.append(nodes[_fiedler_order(lap, deg)])
    order = np.concatenate(out)
    assert order.size == n
    return order


def decoder_ordering(
    W_dec: Any,
    *,
    threshold: float = DEFAULT_THRESHOLD,
    method: str = "rcm",
    block_size: int = DEFAULT_BLOCK_SIZE,
    max_edges: int = DEFAULT_MAX_EDGES,
) -> DecoderOrdering:
    """Order latents so that similar decoder rows sit together (paper appendix E).

    Builds the graph with edges where ``|cos(W_dec[i], W_dec[j])| >= threshold`` (i != j,
    blocked: see :func:`similarity_graph`) and orders it with :func:`order_graph`
    (``method="rcm"`` or ``"spectral"``). Block-diagonal structure in the permuted similarity
    matrix (:func:`plot_permuted_similarity`) would indicate clusters of decoder directions; the
    paper finds none. The bandwidth before/after measures how far the ordering concentrates
    edges near the diagonal.
    """
    if method not in _METHODS:
        raise ValueError(f"method must be one of {_METHODS}, got {method!r}")
    threshold = _check_threshold(threshold)
    graph = similarity_graph(W_dec, threshold, block_size=block_size, max_edges=max_edges)
    order = order_graph(graph, method)
    n_comp, _ = connected_components(graph, directed=False)
    return DecoderOrdering(
        order=order,
        method=method,
        threshold=threshold,
        adjacency=graph,
        n_edges=int(graph.nnz // 2),
        n_components=int(n_comp),
        bandwidth_before=bandwidth(graph),
        bandwidth_after=bandwidth(graph, order),
    )


def plot_permuted_similarity(
    W_dec: Any,
    order: Any,
    path: str | os.PathLike,
    max_features: int = 2000,
    *,
    dpi: int = 100,
) -> str:
    """PNG heatmap of the decoder cosine matrix with rows and columns permuted by ``order``
    (an int permutation or a :class:`DecoderOrdering`). Beyond ``max_features`` latents, an
    evenly spaced subsample along the ordering is drawn (``max_features**2`` cosines).
    Returns the path written."""
    max_features = _positive_int(max_features, "max_features")
    dec = _as_weights(W_dec, "W_dec")
    n = dec.shape[0]
    o = _check_order(order, n)
    if n > max_features:
        o = o[np.round(np.linspace(0, n - 1, max_features)).astype(np.int64)]
    unit = _unit_rows_np(dec[o].astype(np.float64), "W_dec")
    sim = np.clip(unit @ unit.T, -1.0, 1.0)
    fig, ax = new_figure(6, 5, layout="constrained")
    im = ax.imshow(sim, cmap="RdBu_r", vmin=-1.0, vmax=1.0, interpolation="nearest")
    fig.colorbar(im, ax=ax, label="decoder cosine")
    method = f" ({order.method})" if isinstance(order, DecoderOrdering) else ""
    shown = f", {o.size} of {n} shown" if o.size < n else ""
    ax.set_title(f"Permuted decoder similarity{method}{shown}", fontsize=10)
    ax.set_xlabel("position in ordering")
    ax.set_ylabel("position in ordering")
    return save_figure(fig, path, dpi=dpi)
