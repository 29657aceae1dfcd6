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
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Iterator

import numpy as np
import scipy.linalg
import scipy.sparse as sp
import scipy.stats
from scipy.sparse.csgraph import connected_components, reverse_cuthill_mckee
from scipy.sparse.linalg import lobpcg

from .._arrays import sparse_coo, sparse_csr, to_numpy

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

#: Tile edge for blocked decoder cosines: a tile is ``block_size**2`` floats (128 MiB in float64).
DEFAULT_BLOCK_SIZE = 4096
#: Default ``|cosine|`` threshold for the decoder similarity graph. Cosines of unrelated
#: directions in d >= 256 dimensions are ~N(0, 1/d), so 0.5 keeps only genuinely close pairs.
DEFAULT_THRESHOLD = 0.5
#: Default cap on graph edges in :func:`similarity_graph` (about 2.4 GB of COO triplets).
DEFAULT_MAX_EDGES = 100_000_000
#: Connected components up to this size get a dense ``eigh``; larger ones use sparse LOBPCG.
_DENSE_EIGH_MAX = 500
_LOBPCG_MAXITER = 1000

_METHODS = ("rcm", "spectral")


# --------------------------------------------------------------------------- validation


def _as_weights(w: Any, name: str) -> np.ndarray:
    """``[n, d]`` float32/float64 numpy array with finite entries and ``n, d >= 1``."""
    a = to_numpy(w, name)
    if a.dtype.kind not in "fiu" or a.dtype == np.bool_:
        raise TypeError(f"{name} must hold real numbers, got dtype {a.dtype}")
    if a.ndim != 2:
        raise ValueError(f"{name} must be 2-dimensional [n_latents, d_in], got shape {tuple(a.shape)}")
    if a.shape[0] == 0 or a.shape[1] == 0:
        raise ValueError(f"{name} is empty (shape {tuple(a.shape)}); need at least one latent and one dimension")
    if a.dtype not in (np.float32, np.float64):
        a = a.astype(np.float64)
    if not np.isfinite(a).all():
        bad = np.flatnonzero(~np.isfinite(a).all(axis=1))
        raise ValueError(f"{name} contains NaN or inf in {bad.size} row(s), first latent {int(bad[0])}")
    return a


def _row_norms(a: np.ndarray, name: str) -> np.ndarray:
    """float64 row norms; a zero row has no direction, so no cosine: reject it."""
    norms = np.sqrt(np.einsum("ij,ij->i", a, a, dtype=np.float64))
    zero = np.flatnonzero(norms == 0)
    if zero.size:
        raise ValueError(
            f"{name} has {zero.size} all-zero row(s) (first latent {int(zero[0])}); "
            f"the cosine of a zero vector is undefined"
        )
    return norms


def _unit_rows(a: np.ndarray, name: str) -> np.ndarray:
    """Rows scaled to unit norm, in ``a``'s dtype (a copy)."""
    return (a / _row_norms(a, name)[:, None]).astype(a.dtype, copy=False)


def _check_block_size(block_size: Any) -> int:
    return _check_positive_int(block_size, "block_size")


def _check_positive_int(v: Any, name: str) -> int:
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
        raise ValueError(f"{name} must be a positive int, got {v!r}")
    return int(v)


def _blocks(n: int, block_size: int) -> list[tuple[int, int]]:
    return [(s, min(s + block_size, n)) for s in range(0, n, block_size)]


def _tiles(unit: np.ndarray, block_size: int) -> Iterator[tuple[int, int, int, int, np.ndarray]]:
    """Upper-triangular tiles ``(i0, i1, j0, j1, S)`` of the cosine matrix, ``j0 >= i0``,
    ``S = unit[i0:i1] @ unit[j0:j1].T``; row blocks in order, column blocks in order."""
    blocks = _blocks(unit.shape[0], block_size)
    for bi, (i0, i1) in enumerate(blocks):
        rows = unit[i0:i1]
        for j0, j1 in blocks[bi:]:
            yield i0, i1, j0, j1, rows @ unit[j0:j1].T


def _correlation(fn, x: np.ndarray, y: np.ndarray, tol: float) -> tuple[float, float]:
    """(statistic, p-value) of a scipy.stats correlation of two cosine arrays; NaN (without
    scipy's warning) when either spans no more than ``tol``, i.e. is constant up to rounding."""
    if x.size < 2 or np.ptp(x) <= tol or np.ptp(y) <= tol:
        return math.nan, math.nan
    r = fn(x, y)
    return float(r.statistic), float(r.pvalue)


# --------------------------------------------------------------- encoder/decoder alignment


@dataclass(frozen=True)
class EncoderDecoderAlignment:
    """Encoder-decoder cosines against feature distinctiveness (paper Figure 18)."""

    enc_dec_cosine: np.ndarray
    """``[n]`` float64: cosine between latent i's encoder row and its decoder row."""
    max_other_cosine: np.ndarray
    """``[n]`` float64: largest (signed) decoder cosine between latent i and any other latent."""
    nearest_other: np.ndarray
    """``[n]`` int64: the other latent attaining ``max_other_cosine`` (lowest index on ties)."""
    mean_enc_dec_cosine: float
    """Mean of ``enc_dec_cosine`` (0.57 for SAE64 on cs.LG in the paper)."""
    mean_max_other_cosine: float
    """Mean of ``max_other_cosine``."""
    spearman: float
    """Spearman rank correlation of ``enc_dec_cosine`` with ``max_other_cosine`` (NaN if either
    is constant up to rounding: spread <= 64 machine epsilons of the weights' dtype)."""
    spearman_pvalue: float
    """Two-sided p-value of ``spearman`` (scipy.stats.spearmanr)."""
    pearson: float
    """Pearson correlation of ``enc_dec_cosine`` with ``max_other_cosine`` (NaN as for ``spearman``)."""
    pearson_pvalue: float
    """Two-sided p-value of ``pearson`` (scipy.stats.pearsonr)."""

    @property
    def n_latents(self) -> int:
        """Number of latents n."""
        return int(self.enc_dec_cosine.shape[0])


def encoder_decoder_alignment(W_enc: Any, W_dec: Any, *, block_size: int = DEFAULT_BLOCK_SIZE) -> EncoderDecoderAlignment:
    """Per latent: cos(encoder row, decoder row) and the max decoder cosine to another latent.

    ``W_enc`` and ``W_dec`` are ``[n, d]`` (numpy or torch, e.g. ``sae.W_enc``, ``sae.W_dec``);
    decoder rows need not be unit norm. The max over other latents is computed in
    ``block_size`` tiles (each pair once, using symmetry), in the weights' precision
    (float32 stays float32); the diagonal (a latent with itself) is excluded. Needs n >= 2.
    """
    block_size = _check_block_size(block_size)
    enc = _as_weights(W_enc, "W_enc")
    dec = _as_weights(W_dec, "W_dec")
    if enc.shape != dec.shape:
        raise ValueError(
            f"W_enc and W_dec must have the same shape [n_latents, d_in], got {tuple(enc.shape)} and {tuple(dec.shape)}"
        )
    n = dec.shape[0]
    if n < 2:
        raise ValueError("need at least 2 latents to compare a latent with the others, got 1")
    enc_norm = _row_norms(enc, "W_enc")
    dec_norm = _row_norms(dec, "W_dec")

    enc_dec = np.empty(n, dtype=np.float64)
    for i0, i1 in _blocks(n, block_size):
        dots = np.einsum("ij,ij->i", enc[i0:i1], dec[i0:i1], dtype=np.float64)
        enc_dec[i0:i1] = dots / (enc_norm[i0:i1] * dec_norm[i0:i1])

    unit = (dec / dec_norm[:, None]).astype(dec.dtype, copy=False)
    best = np.full(n, -np.inf, dtype=np.float64)
    arg = np.full(n, -1, dtype=np.int64)
    # Candidates for latent f arrive in increasing index order (column updates from earlier row
    # blocks, then f's own row block left to right), so strict ">" keeps the lowest index on ties.
    for i0, i1, j0, j1, s in _tiles(unit, block_size):
        s = s.astype(np.float64, copy=False)
        if i0 == j0:
            np.fill_diagonal(s, -np.inf)
        else:  # the transposed tile: column latents see row latents
            cmax_at = np.argmax(s, axis=0)
            cmax = s[cmax_at, np.arange(j1 - j0)]
            upd = cmax > best[j0:j1]
            best[j0:j1][upd] = cmax[upd]
            arg[j0:j1][upd] = cmax_at[upd] + i0
        rmax_at = np.argmax(s, axis=1)
        rmax = s[np.arange(i1 - i0), rmax_at]
        upd = rmax > best[i0:i1]
        best[i0:i1][upd] = rmax[upd]
        arg[i0:i1][upd] = rmax_at[upd] + j0

    np.clip(enc_dec, -1.0, 1.0, out=enc_dec)
    np.clip(best, -1.0, 1.0, out=best)
    # Cosines of float32 weights carry ~1e-7 of rounding: a spread below 64 eps is no signal.
    tol = 64 * float(max(np.finfo(enc.dtype).eps, np.finfo(dec.dtype).eps))
    rho, rho_p = _correlation(scipy.stats.spearmanr, enc_dec, best, tol)
    r, r_p = _correlation(scipy.stats.pearsonr, enc_dec, best, tol)
    return EncoderDecoderAlignment(
        enc_dec_cosine=enc_dec,
        max_other_cosine=best,
        nearest_other=arg,
        mean_enc_dec_cosine=float(enc_dec.mean()),
        mean_max_other_cosine=float(best.mean()),
        spearman=rho,
        spearman_pvalue=rho_p,
        pearson=r,
        pearson_pvalue=r_p,
    )


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
    block_size = _check_block_size(block_size)
    max_edges = _check_positive_int(max_edges, "max_edges")
    dec = _as_weights(W_dec, "W_dec")
    n = dec.shape[0]
    unit = _unit_rows(dec, "W_dec")
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
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float, np.integer, np.floating)):
        raise ValueError(f"threshold must be a number in (0, 1], got {threshold!r}")
    t = float(threshold)
    if not (0.0 < t <= 1.0):
        raise ValueError(f"threshold must be in (0, 1] (edges where |cosine| >= threshold), got {threshold!r}")
    return t


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


# ----------------------------------------------------------------------- feature density


@dataclass(frozen=True)
class LogFeatureDensity:
    """log10 activation density of each latent (paper Figure 5; Table 2 "Log FD")."""

    features: np.ndarray
    """``[n_alive]`` int64: ids of the latents that fired at least once, ascending."""
    log10_density: np.ndarray
    """``[n_alive]`` float64: ``log10(freq / n_rows)`` for ``features`` (all finite, <= 0)."""
    dead: np.ndarray
    """``[n_dead]`` int64: ids of latents that never fired (density 0, log undefined)."""
    n_latents: int
    """Number of latents n (alive + dead)."""
    n_rows: int
    """Number of rows (documents) the counts were taken over."""
    mean: float
    """Mean of ``log10_density`` over alive latents (NaN if all are dead)."""
    median: float
    """Median of ``log10_density`` over alive latents (NaN if all are dead)."""
    std: float
    """Population standard deviation of ``log10_density`` (NaN if all are dead)."""

    @property
    def n_dead(self) -> int:
        """Number of dead latents."""
        return int(self.dead.shape[0])

    @property
    def dead_fraction(self) -> float:
        """``n_dead / n_latents``."""
        return self.n_dead / self.n_latents


def log_feature_density(cooc_or_freq: Any, n_rows: int | None = None) -> LogFeatureDensity:
    """log10 density ``freq / n_rows`` of each latent that fires; dead latents counted apart.

    ``cooc_or_freq`` is a :class:`fastsae.Cooccurrence` (its ``freq`` and ``n_rows`` are used;
    ``n_rows`` may then be omitted, or must agree) or a ``[n]`` array of activation counts, in
    which case ``n_rows`` (the number of documents counted) is required.
    """
    if hasattr(cooc_or_freq, "freq") and hasattr(cooc_or_freq, "n_rows"):
        own = cooc_or_freq.n_rows
        if n_rows is not None and n_rows != own:
            raise ValueError(f"n_rows={n_rows!r} disagrees with the Cooccurrence's n_rows={own!r}")
        freq_in, n_rows = cooc_or_freq.freq, own
    else:
        if n_rows is None:
            raise ValueError("n_rows (the number of rows counted) is required when passing a frequency array")
        freq_in = cooc_or_freq
    if isinstance(n_rows, bool) or not isinstance(n_rows, (int, np.integer)):
        raise ValueError(f"n_rows must be a positive int, got {n_rows!r}")
    if n_rows <= 0:
        raise ValueError(f"n_rows must be positive, got {n_rows}")
    n_rows = int(n_rows)

    freq = to_numpy(freq_in, "freq")
    if freq.dtype.kind not in "fiu" or freq.dtype == np.bool_:
        raise TypeError(f"freq must hold counts (integers or floats), got dtype {freq.dtype}")
    if freq.ndim != 1:
        raise ValueError(f"freq must be 1-dimensional [n_latents], got shape {tuple(freq.shape)}")
    if freq.size == 0:
        raise ValueError("freq is empty: need at least one latent")
    f = freq.astype(np.float64)
    if not np.isfinite(f).all():
        raise ValueError("freq contains NaN or inf")
    if (f < 0).any():
        raise ValueError(f"freq must be non-negative, got minimum {f.min()}")
    if (f > n_rows).any():
        raise ValueError(f"freq exceeds n_rows={n_rows} (maximum {f.max()}): a latent cannot fire in more rows than exist")

    alive = f > 0
    features = np.flatnonzero(alive).astype(np.int64)
    dead = np.flatnonzero(~alive).astype(np.int64)
    logd = np.log10(f[alive] / n_rows)
    if logd.size:
        mean, median, std = float(logd.mean()), float(np.median(logd)), float(logd.std())
    else:
        mean = median = std = math.nan
    return LogFeatureDensity(
        features=features,
        log10_density=logd,
        dead=dead,
        n_latents=int(f.size),
        n_rows=n_rows,
        mean=mean,
        median=median,
        std=std,
    )


# ------------------------------------------------------------------------------ plots


def _figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _save(fig, path: str | os.PathLike, dpi: int) -> str:
    p = os.fspath(path)
    fig.savefig(p, format="png", dpi=dpi)
    return p


def plot_encoder_decoder_alignment(
    result: EncoderDecoderAlignment, path: str | os.PathLike, *, bins: int = 50, dpi: int = 100
) -> str:
    """PNG of Figure 18: (left) histogram of encoder-decoder cosines with their mean; (right)
    encoder-decoder cosine against each latent's max decoder cosine to another latent.
    Returns the path written."""
    if not isinstance(result, EncoderDecoderAlignment):
        raise TypeError(f"result must be an EncoderDecoderAlignment, got {type(result).__name__}")
    bins = _check_positive_int(bins, "bins")
    fig = _figure(10, 4)
    left, right = fig.subplots(1, 2)
    left.hist(result.enc_dec_cosine, bins=bins, color="tab:blue", alpha=0.8)
    left.axvline(result.mean_enc_dec_cosine, color="k", ls="--", lw=1, label=f"mean {result.mean_enc_dec_cosine:.3f}")
    left.set_xlabel("cos(encoder row, decoder row)")
    left.set_ylabel("latents")
    left.legend(loc="upper left")
    right.scatter(result.max_other_cosine, result.enc_dec_cosine, s=4, alpha=0.4, rasterized=True, edgecolors="none")
    right.set_xlabel("max decoder cosine to another latent")
    right.set_ylabel("cos(encoder row, decoder row)")
    right.set_title(f"Spearman {result.spearman:.3f}, Pearson {result.pearson:.3f}", fontsize=10)
    fig.suptitle(f"Encoder-decoder alignment (n = {result.n_latents})")
    return _save(fig, path, dpi)


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
    max_features = _check_positive_int(max_features, "max_features")
    dec = _as_weights(W_dec, "W_dec")
    n = dec.shape[0]
    o = _check_order(order, n)
    if n > max_features:
        o = o[np.round(np.linspace(0, n - 1, max_features)).astype(np.int64)]
    unit = _unit_rows(dec[o].astype(np.float64), "W_dec")
    sim = np.clip(unit @ unit.T, -1.0, 1.0)
    fig = _figure(6, 5)
    ax = fig.subplots()
    im = ax.imshow(sim, cmap="RdBu_r", vmin=-1.0, vmax=1.0, interpolation="nearest")
    fig.colorbar(im, ax=ax, label="decoder cosine")
    method = f" ({order.method})" if isinstance(order, DecoderOrdering) else ""
    shown = f", {o.size} of {n} shown" if o.size < n else ""
    ax.set_title(f"Permuted decoder similarity{method}{shown}", fontsize=10)
    ax.set_xlabel("position in ordering")
    ax.set_ylabel("position in ordering")
    return _save(fig, path, dpi)


def plot_log_density(
    results_by_label: Mapping[str, LogFeatureDensity], path: str | os.PathLike, *, bins: int = 50, dpi: int = 100
) -> str:
    """PNG of Figure 5: overlaid log10 feature density histograms (shared bins), one per SAE,
    each with its mean as a dashed line; the legend gives the mean and the dead count.
    Returns the path written."""
    if not isinstance(results_by_label, Mapping) or len(results_by_label) == 0:
        raise ValueError("results_by_label must be a non-empty mapping of label -> LogFeatureDensity")
    for label, r in results_by_label.items():
        if not isinstance(r, LogFeatureDensity):
            raise TypeError(f"results_by_label[{label!r}] must be a LogFeatureDensity, got {type(r).__name__}")
    bins = _check_positive_int(bins, "bins")
    values = [r.log10_density for r in results_by_label.values() if r.log10_density.size]
    fig = _figure(7, 4)
    ax = fig.subplots()
    if values:
        lo = min(float(v.min()) for v in values)
        hi = max(float(v.max()) for v in values)
        if hi - lo < 1e-9:
            lo, hi = lo - 0.5, hi + 0.5
        edges = np.linspace(lo, hi, bins + 1)
    colors = [f"C{i % 10}" for i in range(len(results_by_label))]
    for color, (label, r) in zip(colors, results_by_label.items()):
        dead = f", {r.n_dead} dead" if r.n_dead else ""
        if r.log10_density.size == 0:
            ax.plot([], [], color=color, label=f"{label} (all {r.n_latents} dead)")
            continue
        ax.hist(r.log10_density, bins=edges, alpha=0.45, color=color, label=f"{label} (mean {r.mean:.2f}{dead})")
        ax.axvline(r.mean, color=color, ls="--", lw=1)
    ax.set_xlabel("log10 feature density")
    ax.set_ylabel("latents")
    ax.set_title("Log feature density", fontsize=10)
    ax.legend(fontsize=8)
    return _save(fig, path, dpi)
