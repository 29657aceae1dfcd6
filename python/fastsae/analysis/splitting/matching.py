"""Feature splitting across SAE sizes and features shared between domains (paper section 4.1,
appendices A.4, C and D.1; Figs. 6, 10, 11, 12, 13 and Table 4).

Every analysis is a function returning data plus a ``plot_*`` function writing a PNG:

* :func:`decoder_similarity`: for each decoder row of one SAE, its nearest rows (cosine) in
  another, computed block by block so that two 131,072-latent SAEs never need the full
  ``n_b x n_a`` matrix; :func:`nn_cosine_distribution` / :func:`plot_nn_cosines` (Fig. 6).
* :func:`activation_similarity`: cosine of two features' activation vectors over the same
  documents, from sparse top-k codes (:func:`plot_activation_similarity`).
* :func:`match_features`: each feature of a larger SAE matched to its nearest feature of a
  smaller one and labelled ``recurrent``, ``split`` or ``novel`` (:func:`plot_matches`).
* :func:`feature_triplets`: features present in three SAEs at a cosine threshold (Fig. 13a,
  :func:`plot_triplets`).
* :func:`self_consistency`: nearest-neighbour maps 16->64 found directly vs through 32
  (Fig. 13b, :func:`plot_self_consistency`).
* :func:`cross_domain_matches`: best match of each feature in an SAE trained on another
  corpus (Fig. 10, Table 4, :func:`plot_cross_domain`).
* :func:`split_heatmap` / :func:`plot_split_heatmap`: cosine (or activation similarity)
  between hand-picked features of several SAEs (Figs. 11, 12).

Weights may be given as torch tensors (any float dtype, any device), numpy arrays, or a
:class:`fastsae.TopKSAE`. Rows are normalised here, so the decoder need not be unit-norm; an
all-zero row has no direction and is rejected.

Which space the directions are compared in: the SAEs of one run (the sizes of a sweep) are
trained on the same data with one standardisation, so their ``W_dec`` rows live in one space
and the within-run analyses (:func:`decoder_similarity`, :func:`match_features`,
:func:`feature_triplets`, :func:`self_consistency`, :func:`split_heatmap`) use a TopKSAE's
``W_dec`` as it is. SAEs trained on different corpora (:func:`cross_domain_matches`) each have
their own standardisation, and cosines between two different standardised spaces mean
nothing: there a TopKSAE gives its input-space directions
(:meth:`fastsae.TopKSAE.feature_directions`), and raw matrices must be input-space directions
too (pass ``sae.feature_directions()``, or the SAE itself). For SAEs of one run whose
standardisation differs (different training subsets), pass ``feature_directions()`` explicitly. Cosines are computed
in float64 when an input is float64, in float32 otherwise, on the device of the first torch
input (CPU for numpy inputs) unless ``device=`` says otherwise.

Codes are a :class:`fastsae.SparseCode` or an ``(indices [N, k], values [N, k])`` pair (torch
or numpy); entries whose value is 0 are padding and ignored (their index may be anything).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Mapping, NamedTuple, Sequence

import numpy as np
import scipy.sparse as sp
import torch

CATEGORIES = ("recurrent", "split", "novel")
"""The labels :func:`match_features` gives, in order of precedence."""

_PNG_DPI = 120


# ----------------------------------------------------------------------------- input checks


def _weights(W: Any, name: str, input_space: bool = False) -> torch.Tensor:
    """``W`` as a 2-D floating torch tensor with finite entries and no zero rows (not normalised).

    A module gives its ``W_dec`` (its standardised space), or with ``input_space`` its
    ``feature_directions()`` (the input space, comparable across standardisations)."""
    if isinstance(W, torch.nn.Module):
        if not hasattr(W, "W_dec"):
            raise TypeError(f"{name}: a module must have a W_dec decoder matrix (e.g. fastsae.TopKSAE)")
        W = W.feature_directions() if input_space and hasattr(W, "feature_directions") else W.W_dec
    if isinstance(W, torch.Tensor):
        t = W.detach()
    else:
        try:
            a = np.asarray(W)
        except Exception as exc:  # pragma: no cover - exotic inputs
            raise TypeError(f"{name} must be a torch tensor, numpy array or TopKSAE, got {type(W).__name__}") from exc
        if a.dtype.kind not in "fiu":
            raise TypeError(f"{name} must hold real numbers, got dtype {a.dtype}")
        t = torch.from_numpy(np.ascontiguousarray(a))
    if t.is_complex() or t.dtype == torch.bool:
        raise TypeError(f"{name} must hold real numbers, got {t.dtype}")
    if t.ndim != 2:
        raise ValueError(f"{name} must be a 2-dimensional [n_features, d] matrix, got shape {tuple(t.shape)}")
    if t.shape[0] == 0 or t.shape[1] == 0:
        raise ValueError(f"{name} is empty (shape {tuple(t.shape)}); it needs at least one feature and one dimension")
    if not t.is_floating_point():
        t = t.to(torch.float64)
    finite = torch.isfinite(t)
    if not bool(finite.all()):
        bad = int((~finite).sum())
        raise ValueError(f"{name} has {bad} NaN or infinite entries")
    return t


def _compute_dtype(*ts: torch.Tensor) -> torch.dtype:
    return torch.float64 if any(t.dtype == torch.float64 for t in ts) else torch.float32


def _pick_device(device, *inputs) -> torch.device:
    if device is not None:
        return torch.device(device)
    for x in inputs:
        if isinstance(x, torch.nn.Module) and hasattr(x, "W_dec"):
            x = x.W_dec
        if isinstance(x, torch.Tensor):
            return x.device
    return torch.device("cpu")


def _unit_rows(t: torch.Tensor, name: str, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    t = t.to(device=device, dtype=dtype)
    norms = torch.linalg.vector_norm(t, dim=1)
    zero = norms == 0
    if bool(zero.any()):
        first = int(torch.nonzero(zero)[0, 0])
        raise ValueError(f"{name} has {int(zero.sum())} all-zero rows (first: row {first}); their cosine is undefined")
    return t / norms[:, None]


def _prepared(named: Sequence[tuple[Any, str]], device=None, input_space: bool = False) -> list[torch.Tensor]:
    """Checked, unit-row versions of several weight matrices sharing one dtype, device and d."""
    raw = [_weights(W, name, input_space) for W, name in named]
    d = {t.shape[1] for t in raw}
    if len(d) > 1:
        shapes = ", ".join(f"{name} {tuple(t.shape)}" for t, (_, name) in zip(raw, named))
        raise ValueError(f"the weight matrices must share the embedding dimension d: {shapes}")
    dtype = _compute_dtype(*raw)
    dev = _pick_device(device, *(W for W, _ in named))
    return [_unit_rows(t, name, dtype, dev) for t, (_, name) in zip(raw, named)]


def _positive_int(x: Any, name: str) -> int:
    if isinstance(x, bool) or not isinstance(x, (int, np.integer)):
        raise TypeError(f"{name} must be an int, got {type(x).__name__}")
    if x <= 0:
        raise ValueError(f"{name} must be positive, got {x}")
    return int(x)


def _finite_float(x: Any, name: str, lo: float | None = None, hi: float | None = None) -> float:
    try:
        v = float(x)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a number, got {type(x).__name__}") from None
    if not np.isfinite(v):
        raise ValueError(f"{name} must be finite, got {v}")
    if (lo is not None and v < lo) or (hi is not None and v > hi):
        raise ValueError(f"{name} must lie in [{lo}, {hi}], got {v}")
    return v


def _ids(x: Any, name: str, n: int | None = None) -> np.ndarray:
    """1-D int64 ids (each in ``[0, n)`` when ``n`` is given)."""
    a = x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
    if a.ndim != 1:
        raise ValueError(f"{name} must be a 1-dimensional list of feature ids, got shape {a.shape}")
    if a.size == 0:
        return np.zeros(0, dtype=np.int64)
    if a.dtype.kind not in "iu":
        raise TypeError(f"{name} must hold integer feature ids, got dtype {a.dtype}")
    a = a.astype(np.int64)
    if a.min() < 0 or (n is not None and a.max() >= n):
        bound = f"[0, {n})" if n is not None else ">= 0"
        raise ValueError(f"{name} has ids out of range (must be {bound}; min {a.min()}, max {a.max()})")
    return a


class _Codes(NamedTuple):
    rows: np.ndarray  # int64 document of each non-zero entry
    cols: np.ndarray  # int64 feature id of each non-zero entry
    vals: np.ndarray  # float64 activation of each non-zero entry
    n_docs: int


def _codes(codes: Any, name: str) -> _Codes:
    """Non-zero entries of top-k codes (a SparseCode or an (indices, values) pair)."""
    if not (isinstance(codes, tuple) and len(codes) == 2):
        raise TypeError(f"{name} must be a fastsae.SparseCode or an (indices, values) pair, got {type(codes).__name__}")
    idx, val = codes

    def np_of(x, what):
        if isinstance(x, torch.Tensor):
            x = x.detach()
            if x.is_floating_point() and x.dtype != torch.float64:
                x = x.float()
            return x.cpu().numpy()
        return np.asarray(x)

    idx, val = np_of(idx, "indices"), np_of(val, "values")
    if idx.ndim != 2 or val.ndim != 2 or idx.shape != val.shape:
        raise ValueError(f"{name}: indices and values must both be [N, k] with the same shape, "
                         f"got {idx.shape} and {val.shape}")
    if idx.shape[0] == 0:
        raise ValueError(f"{name} holds no documents (0 rows)")
    if idx.dtype.kind not in "iu":
        raise TypeError(f"{name}: indices must be integers, got dtype {idx.dtype}")
    if val.dtype.kind not in "fiu":
        raise TypeError(f"{name}: values must be real numbers, got dtype {val.dtype}")
    val = val.astype(np.float64, copy=False)
    if not np.isfinite(val).all():
        raise ValueError(f"{name}: values hold {int((~np.isfinite(val)).sum())} NaN or infinite entries")
    nz = val != 0
    flat_nz = np.flatnonzero(nz)
    cols = idx.reshape(-1)[flat_nz].astype(np.int64)
    if cols.size and cols.min() < 0:
        raise ValueError(f"{name}: indices of non-zero activations must be >= 0, found {cols.min()}")
    rows = flat_nz // idx.shape[1]
    return _Codes(rows.astype(np.int64), cols, val.reshape(-1)[flat_nz], int(idx.shape[0]))


def _select_docs(c: _Codes, rows: np.ndarray | None, name: str) -> _Codes:
    """The codes restricted to documents ``rows`` (renumbered 0..len(rows)-1, in that order)."""
    if rows is None:
        return c
    rows = _ids(rows, name, c.n_docs)
    if rows.size == 0:
        raise ValueError(f"{name} selects no documents")
    # A document may be listed more than once: expand through a sorted lookup.
    order = np.argsort(rows, kind="stable")
    sorted_rows = rows[order]
    lo = np.searchsorted(sorted_rows, c.rows, side="left")
    hi = np.searchsorted(sorted_rows, c.rows, side="right")
    reps = hi - lo
    entry = np.repeat(np.arange(len(c.rows)), reps)
    pos = np.arange(entry.size) - np.repeat(np.cumsum(reps) - reps, reps)
    new_rows = order[np.repeat(lo, reps) + pos]
    return _Codes(new_rows.astype(np.int64), c.cols[entry], c.vals[entry], int(rows.size))


# ----------------------------------------------------------------------------- 1. nearest neighbours


class NearestNeighbours(NamedTuple):
    """For each row of ``W_b``, its nearest rows of ``W_a`` by cosine similarity."""

    indices: np.ndarray
    """``[n_b, top]`` int64 row ids into ``W_a``, most similar first."""
    cosines: np.ndarray
    """``[n_b, top]`` cosine similarity of each of those rows (float32, float64 for float64 input)."""


def _topk_blocked(keys: torch.Tensor, queries: torch.Tensor, top: int,
                  block_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-``top`` of ``queries @ keys.T`` per query row, holding one [block, block] tile at a time.

    Ties go to the lower key id: with ``top == 1`` ``argmax`` returns the first maximum and a later
    block replaces the running best only when strictly larger; with ``top > 1`` each tile is
    sorted stably and merged after the running list (earlier blocks, lower ids) in a stable sort.
    """
    n_q, n_k = queries.shape[0], keys.shape[0]
    dev = queries.device
    out_v = torch.empty(n_q, top, dtype=queries.dtype, device=dev)
    out_i = torch.empty(n_q, top, dtype=torch.int64, device=dev)
    for q0 in range(0, n_q, block_size):
        q = queries[q0 : q0 + block_size]
        best_v = torch.full((q.shape[0], top), -torch.inf, dtype=q.dtype, device=dev)
        best_i = torch.full((q.shape[0], top), -1, dtype=torch.int64, device=dev)
        for k0 in range(0, n_k, block_size):
            s = q @ keys[k0 : k0 + block_size].T
            if top == 1:
                i = s.argmax(dim=1, keepdim=True)  # the first maximum (max(dim) is far slower on CPU)
                v = s.gather(1, i)
                better = v > best_v
                best_v = torch.where(better, v, best_v)
                best_i = torch.where(better, i + k0, best_i)
            else:
                t = min(top, s.shape[1])
                # a stable sort, not topk: equal cosines keep the lower id first
                sv, si = torch.sort(s, dim=1, descending=True, stable=True)
                v, i = sv[:, :t], si[:, :t]
                cand_v = torch.cat([best_v, v], dim=1)
                cand_i = torch.cat([best_i, i + k0], dim=1)
                sv, order = torch.sort(cand_v, dim=1, descending=True, stable=True)
                best_v = sv[:, :top]
                best_i = torch.gather(cand_i, 1, order[:, :top])
        out_v[q0 : q0 + q.shape[0]] = best_v
        out_i[q0 : q0 + q.shape[0]] = best_i
    return out_i, out_v


def decoder_similarity(W_a: Any, W_b: Any, *, top: int = 1, block_size: int = 4096, device=None) -> NearestNeighbours:
    """Nearest neighbours of each row of ``W_b`` among the rows of ``W_a`` by cosine similarity.

    ``S_ij = w_a,i . w_b,j / (|w_a,i| |w_b,j|)`` (paper section 4.1); for each ``j`` the ``top``
    largest ``S_ij`` and their ``i``. The matrix is computed in ``block_size x block_size``
    tiles (one matmul each: 64 MiB in float32 at the default 4096; with ``top > 1`` the tile
    is also sorted, about three times that) while a running top list is kept per row, so
    ``n_a x n_b`` never exists at once. To match each feature of a larger
    SAE to the smaller one (Fig. 6), pass the smaller decoder as ``W_a``.

    Exact ties go to the lower id of ``W_a``. ``W_a`` and ``W_b`` may be the same matrix (each
    row is then its own first neighbour).
    """
    top = _positive_int(top, "top")
    block_size = _positive_int(block_size, "block_size")
    a, b = _prepared([(W_a, "W_a"), (W_b, "W_b")], device)
    if top > a.shape[0]:
        raise ValueError(f"top={top} exceeds the number of rows of W_a ({a.shape[0]})")
    i, v = _topk_blocked(a, b, top, block_size)
    return NearestNeighbours(i.cpu().numpy(), v.cpu().numpy())


def _nn1(a: torch.Tensor, b: torch.Tensor, block_size: int) -> tuple[np.ndarray, np.ndarray]:
    i, v = _topk_blocked(a, b, 1, block_size)
    return i[:, 0].cpu().numpy(), v[:, 0].cpu().numpy().astype(np.float64)


@dataclass(eq=False)
class CosineDistribution:
    """Histogram of nearest-neighbour cosines (one SAE pair of Fig. 6)."""

    cosines: np.ndarray
    """``[n]`` the nearest-neighbour cosine of each feature (float64)."""
    bin_edges: np.ndarray
    """``[bins + 1]`` histogram bin edges."""
    counts: np.ndarray
    """``[bins]`` int64 number of features per bin."""
    mean: float
    """Mean cosine."""
    median: float
    """Median cosine."""


def nn_cosine_distribution(nn: Any, *, bins: int = 50,
                           value_range: tuple[float, float] = (-1.0, 1.0)) -> CosineDistribution:
    """Distribution of nearest-neighbour cosines: ``nn`` is a :class:`NearestNeighbours`
    (its first column is used) or a 1-D array of cosines."""
    bins = _positive_int(bins, "bins")
    c = nn.cosines[:, 0] if isinstance(nn, NearestNeighbours) else nn
    c = c.detach().cpu().numpy() if isinstance(c, torch.Tensor) else np.asarray(c)
    c = c.astype(np.float64).reshape(-1) if c.ndim <= 1 else None
    if c is None:
        raise ValueError("nn must be a NearestNeighbours or a 1-dimensional array of cosines")
    if c.size == 0:
        raise ValueError("no cosines to summarise (empty input)")
    if not np.isfinite(c).all():
        raise ValueError("cosines hold NaN or infinite values")
    lo, hi = (_finite_float(x, "value_range") for x in value_range)
    if not lo < hi:
        raise ValueError(f"value_range must be increasing, got {value_range}")
    counts, edges = np.histogram(np.clip(c, lo, hi), bins=bins, range=(lo, hi))
    return CosineDistribution(c, edges, counts.astype(np.int64), float(c.mean()), float(np.median(c)))


# ----------------------------------------------------------------------------- plotting helpers


def _figure(ncols: int = 1, *, width: float = 5.0, height: float = 3.8):
    """A figure drawn by the Agg canvas directly (no pyplot, no global backend switch).

    The histograms below clip to their range: a cosine of 1 may round to 1 + 1e-16 and
    would otherwise fall outside the last bin."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width * ncols, height))
    FigureCanvasAgg(fig)
    axes = [fig.add_subplot(1, ncols, c + 1) for c in range(ncols)]
    return fig, axes


def _save(fig, path: str | os.PathLike) -> str:
    path = os.fspath(path)
    fig.tight_layout()
    fig.savefig(path, format="png", dpi=_PNG_DPI)
    return path


def plot_nn_cosines(results_by_label: Mapping[str, Any], path: str | os.PathLike, *, bins: int = 50) -> str:
    """Fig. 6: one step histogram (fraction of features) of nearest-neighbour cosine per SAE pair.

    Values of ``results_by_label`` are :class:`NearestNeighbours`, :class:`CosineDistribution`
    or 1-D cosine arrays; keys label the pairs (e.g. ``"k16->k32, n=6144"``).
    """
    if not isinstance(results_by_label, Mapping) or not results_by_label:
        raise ValueError("results_by_label must be a non-empty mapping label -> nearest-neighbour result")
    fig, (ax,) = _figure(width=6.0)
    lo = 0.0
    dists = {}
    for label, r in results_by_label.items():
        d = r if isinstance(r, CosineDistribution) else nn_cosine_distribution(r, bins=bins)
        dists[label] = d
        lo = min(lo, float(d.cosines.min()))
    for label, d in dists.items():
        w = np.full(d.cosines.size, 1.0 / d.cosines.size)
        ax.hist(np.clip(d.cosines, lo, 1.0), bins=bins, range=(lo, 1.0), weights=w, histtype="step", linewidth=1.5,
                label=f"{label} (median {d.median:.2f})")
    ax.set_xlabel("nearest-neighbour cosine similarity")
    ax.set_ylabel("fraction of features")
    ax.set_title("Nearest-neighbour decoder cosine")
    ax.legend(fontsize="small")
    return _save(fig, path)


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
    fig, (ax,) = _figure()
    lo = min(0.0, float(result.similarity.min(initial=0.0)))
    ax.hist(np.clip(result.similarity, lo, 1.0), bins=bins, range=(lo, 1.0),
            color="tab:blue")
    ax.set_xlabel("activation similarity (cosine over documents)")
    ax.set_ylabel("feature pairs")
    ax.set_title(f"{len(result.similarity)} pairs, {result.n_docs} documents")
    return _save(fig, path)


# ----------------------------------------------------------------------------- 3. recurrent / split / novel


@dataclass(eq=False)
class FeatureMatches:
    """Each feature of a larger SAE matched to its nearest feature of a smaller SAE."""

    nearest: np.ndarray
    """``[n_large]`` int64 id of the nearest small-SAE feature (max decoder cosine)."""
    cosine: np.ndarray
    """``[n_large]`` float64 decoder cosine to that feature."""
    activation_similarity: np.ndarray | None
    """``[n_large]`` float64 activation similarity to that feature, or None without codes."""
    n_siblings: np.ndarray
    """``[n_large]`` int64 number of large features (itself included) sharing that nearest feature."""
    category: np.ndarray
    """``[n_large]`` ``"recurrent"``, ``"split"`` or ``"novel"`` (see :func:`match_features`)."""
    counts: dict
    """Number of large features per category."""
    children: np.ndarray
    """``[n_small]`` int64 number of large features whose nearest neighbour is each small feature."""
    cos_threshold: float
    """Decoder cosine above which a feature can be recurrent."""
    act_threshold: float | None
    """Activation similarity a recurrent feature needs (None: not used, no codes)."""
    split_threshold: float
    """Decoder cosine above which a feature sharing its nearest neighbour is split."""


def match_features(sae_small: Any, sae_large: Any, codes_small: Any = None, codes_large: Any = None, *,
                   cos_threshold: float = 0.95, act_threshold: float = 0.5, split_threshold: float = 0.7,
                   block_size: int = 4096, device=None) -> FeatureMatches:
    """Match every feature of the larger SAE to its nearest feature of the smaller one.

    ``sae_small``/``sae_large`` are TopKSAEs or decoder matrices. For large feature ``j``,
    ``nearest[j] = argmax_i cos(w_small,i, w_large,j)`` (paper section 4.1) and
    ``n_siblings[j]`` counts the large features with the same nearest neighbour. With
    ``codes_small`` and ``codes_large`` (both SAEs' codes on the same documents, row for row)
    the activation similarity of ``(nearest[j], j)`` is computed as in
    :func:`activation_similarity`. Rules, first match wins:

    1. ``recurrent``: ``cosine > cos_threshold`` and, when codes are given,
       ``activation_similarity >= act_threshold``: the same feature learned again;
    2. ``split``: ``n_siblings >= 2`` and ``cosine > split_threshold``: one of several large
       features sharing (splitting) the direction of one small feature;
    3. ``novel``: anything else (no close counterpart in the smaller SAE, or a close but lone
       one whose activations differ).
    """
    cos_threshold = _finite_float(cos_threshold, "cos_threshold", -1.0, 1.0)
    split_threshold = _finite_float(split_threshold, "split_threshold", -1.0, 1.0)
    act_threshold = _finite_float(act_threshold, "act_threshold")
    block_size = _positive_int(block_size, "block_size")
    if (codes_small is None) != (codes_large is None):
        raise ValueError("give both codes_small and codes_large (codes of the same documents), or neither")
    small, large = _prepared([(sae_small, "sae_small"), (sae_large, "sae_large")], device)
    nearest, cosine = _nn1(small, large, block_size)
    children = np.bincount(nearest, minlength=small.shape[0]).astype(np.int64)
    siblings = children[nearest]
    act = None
    recurrent = cosine > cos_threshold
    if codes_small is not None:
        cs, cl = _codes(codes_small, "codes_small"), _codes(codes_large, "codes_large")
        pairs = np.stack([nearest, np.arange(large.shape[0], dtype=np.int64)], axis=1)
        act = _activation_similarity(cs, cl, pairs, 1 << 24).similarity
        recurrent &= act >= act_threshold
    split = ~recurrent & (siblings >= 2) & (cosine > split_threshold)
    category = np.full(large.shape[0], "novel", dtype="<U9")
    category[split] = "split"
    category[recurrent] = "recurrent"
    counts = {c: int((category == c).sum()) for c in CATEGORIES}
    return FeatureMatches(nearest, cosine, act, siblings, category, counts, children, cos_threshold,
                          act_threshold if codes_small is not None else None, split_threshold)


_COLOURS = {"recurrent": "tab:green", "split": "tab:orange", "novel": "tab:gray"}


def plot_matches(result: FeatureMatches, path: str | os.PathLike, *, bins: int = 40) -> str:
    """Nearest-neighbour cosine of the large SAE's features, stacked by category; with codes, a
    second panel of decoder cosine vs activation similarity."""
    has_act = result.activation_similarity is not None
    fig, axes = _figure(2 if has_act else 1)
    lo = min(0.0, float(result.cosine.min()))
    data = [np.clip(result.cosine[result.category == c], lo, 1.0) for c in CATEGORIES]
    axes[0].hist(data, bins=bins, range=(lo, 1.0), stacked=True, color=[_COLOURS[c] for c in CATEGORIES],
                 label=[f"{c} ({result.counts[c]})" for c in CATEGORIES])
    axes[0].axvline(result.cos_threshold, color="k", linestyle="--", linewidth=1)
    axes[0].axvline(result.split_threshold, color="k", linestyle=":", linewidth=1)
    axes[0].set_xlabel("cosine to nearest feature of the smaller SAE")
    axes[0].set_ylabel("features of the larger SAE")
    axes[0].legend(fontsize="small")
    if has_act:
        for c in CATEGORIES:
            m = result.category == c
            axes[1].scatter(result.cosine[m], result.activation_similarity[m], s=6, color=_COLOURS[c], label=c)
        axes[1].set_xlabel("decoder cosine")
        axes[1].set_ylabel("activation similarity")
        axes[1].legend(fontsize="small")
    return _save(fig, path)


# ----------------------------------------------------------------------------- 4. triplets


def _neighbours_above(keys: torch.Tensor, queries: torch.Tensor, threshold: float, block_size: int):
    """Every (query, key) pair with cosine > threshold, from top-m lists grown until the m-th
    neighbour of every query is at or below the threshold (exact, no all-pairs pass)."""
    n_k = keys.shape[0]
    q_out, k_out, c_out = [], [], []
    todo = torch.arange(queries.shape[0], device=queries.device)
    m = min(8, n_k)
    while todo.numel():
        idx, val = _topk_blocked(keys, queries[todo], m, block_size)
        if m < n_k:
            full = val[:, -1] > threshold  # the list may continue past m: ask again with more
        else:
            full = torch.zeros(todo.numel(), dtype=torch.bool, device=val.device)
        done = ~full
        keep = (val > threshold) & done[:, None]
        rows = torch.nonzero(keep)
        q_out.append(todo[rows[:, 0]].cpu().numpy())
        k_out.append(idx[rows[:, 0], rows[:, 1]].cpu().numpy())
        c_out.append(val[rows[:, 0], rows[:, 1]].cpu().numpy().astype(np.float64))
        todo = todo[full]
        m = min(4 * m, n_k)
    return np.concatenate(q_out), np.concatenate(k_out), np.concatenate(c_out)


def _row_dots(x: torch.Tensor, y: torch.Tensor, ix: np.ndarray, iy: np.ndarray) -> np.ndarray:
    """``x[ix[p]] . y[iy[p]]`` for every p, gathering about 4M elements of each at a time."""
    out = np.empty(ix.size, dtype=np.float64)
    chunk = max(1, (1 << 22) // x.shape[1])
    for s in range(0, ix.size, chunk):
        a = torch.from_numpy(ix[s : s + chunk]).to(x.device)
        b = torch.from_numpy(iy[s : s + chunk]).to(x.device)
        out[s : s + chunk] = (x[a] * y[b]).sum(dim=1).cpu().numpy()
    return out


@dataclass(eq=False)
class FeatureTriplets:
    """Features present in three SAEs: (i, j, l) with all three decoder cosines above a threshold."""

    triplets: np.ndarray
    """``[T, 3]`` int64 ``(i, j, l)``: ids in the first, second and third SAE, sorted lexicographically."""
    cosines: np.ndarray
    """``[T, 3]`` float64 cosines ``(cos(i, j), cos(j, l), cos(i, l))``."""
    threshold: float
    """The threshold every pairwise cosine exceeds."""
    n_triplets: int
    """Number of triplets."""
    n_recurring: int
    """Number of distinct first-SAE features in at least one triplet (Fig. 13a's count)."""
    n_first: int
    """Number of features of the first SAE."""
    curve_thresholds: np.ndarray
    """Thresholds (>= ``threshold``) at which ``curve_counts`` is evaluated."""
    curve_counts: np.ndarray
    """int64 ``n_recurring`` at each of ``curve_thresholds`` (Fig. 13a)."""


def feature_triplets(W_16: Any, W_32: Any, W_64: Any, *, threshold: float = 0.95, curve_thresholds: Any = None,
                     block_size: int = 4096, device=None) -> FeatureTriplets:
    """All triplets ``(i, j, l)`` (features of the first, second, third SAE) whose three
    pairwise decoder cosines all exceed ``threshold`` (paper Fig. 13a).

    Found through neighbour maps, not all triplets: for each ``i`` the features of the second
    and third SAE with cosine > threshold are listed (top-m nearest-neighbour lists, m grown
    until the list ends below the threshold), and only the combinations of the two lists are
    checked for ``cos(j, l) > threshold``. The result is exact. Meant for high thresholds (the
    paper uses 0.95): at low ones the lists, and their combinations, grow quickly.
    ``curve_thresholds`` (default:
    21 values from ``threshold`` to 1) must be >= ``threshold``: a triplet survives a higher
    threshold when its smallest cosine exceeds it.
    """
    threshold = _finite_float(threshold, "threshold", -1.0, 1.0)
    block_size = _positive_int(block_size, "block_size")
    A, B, C = _prepared([(W_16, "W_16"), (W_32, "W_32"), (W_64, "W_64")], device)
    if curve_thresholds is None:
        grid = np.linspace(threshold, 1.0, 21)
    else:
        grid = np.asarray(curve_thresholds, dtype=np.float64).reshape(-1)
        if grid.size == 0 or not np.isfinite(grid).all():
            raise ValueError("curve_thresholds must be a non-empty list of finite numbers")
        if grid.min() < threshold:
            raise ValueError(f"curve_thresholds must be >= threshold={threshold} (min given {grid.min()})")
    ab_i, ab_j, ab_c = _neighbours_above(B, A, threshold, block_size)
    ac_i, ac_l, ac_c = _neighbours_above(C, A, threshold, block_size)
    # all combinations (i, j) x (i, l) sharing i
    order = np.argsort(ac_i, kind="stable")
    ac_i, ac_l, ac_c = ac_i[order], ac_l[order], ac_c[order]
    n_c = np.bincount(ac_i, minlength=A.shape[0])
    start_c = np.cumsum(n_c) - n_c
    reps = n_c[ab_i]
    e_b = np.repeat(np.arange(ab_i.size), reps)
    e_c = np.repeat(start_c[ab_i], reps) + (np.arange(e_b.size) - np.repeat(np.cumsum(reps) - reps, reps))
    jl = _row_dots(B, C, ab_j[e_b], ac_l[e_c])
    ok = jl > threshold
    e_b, e_c, jl = e_b[ok], e_c[ok], jl[ok]
    trip = np.stack([ab_i[e_b], ab_j[e_b], ac_l[e_c]], axis=1).astype(np.int64)
    cos = np.stack([ab_c[e_b], jl, ac_c[e_c]], axis=1)
    order = np.lexsort((trip[:, 2], trip[:, 1], trip[:, 0]))
    trip, cos = trip[order].reshape(-1, 3), cos[order].reshape(-1, 3)
    low = cos.min(axis=1) if trip.shape[0] else np.zeros(0)
    curve = np.array([np.unique(trip[low > t, 0]).size for t in grid], dtype=np.int64)
    return FeatureTriplets(trip, cos, threshold, int(trip.shape[0]), int(np.unique(trip[:, 0]).size),
                           int(A.shape[0]), grid, curve)


def plot_triplets(result: FeatureTriplets | Mapping[str, FeatureTriplets], path: str | os.PathLike) -> str:
    """Fig. 13a: number of first-SAE features found in all three SAEs vs cosine threshold; a
    mapping label -> result (e.g. one per k) draws one curve each."""
    results = result if isinstance(result, Mapping) else {"": result}
    if not results:
        raise ValueError("nothing to plot (empty mapping)")
    fig, (ax,) = _figure()
    for label, r in results.items():
        ax.plot(r.curve_thresholds, r.curve_counts, marker="o", markersize=3,
                label=(label + ": " if label else "") + f"{r.n_recurring} at > {r.threshold:.2f}")
    ax.set_xlabel("cosine similarity threshold")
    ax.set_ylabel("features re-occurring in all SAEs")
    ax.legend(fontsize="small")
    return _save(fig, path)


# ----------------------------------------------------------------------------- 5. self-consistency


@dataclass(eq=False)
class SelfConsistency:
    """Nearest-neighbour maps from the third SAE to the first, direct vs through the second."""

    direct: np.ndarray
    """``[n_64]`` int64 nearest first-SAE feature of each third-SAE feature."""
    via: np.ndarray
    """``[n_64]`` int64 nearest second-SAE feature of each third-SAE feature."""
    composed: np.ndarray
    """``[n_64]`` int64 nearest first-SAE feature of ``via`` (the map 64 -> 32 -> 16)."""
    agree: np.ndarray
    """``[n_64]`` bool, ``composed == direct``."""
    fraction_agree: float
    """Fraction of third-SAE features for which the two maps agree."""
    set_overlap: np.ndarray
    """``[n_16]`` float64 Jaccard overlap of the third-SAE features mapped to each first-SAE
    feature directly and through the second SAE (NaN when neither map reaches it; Fig. 13b)."""
    set_size_direct: np.ndarray
    """``[n_16]`` int64 number of third-SAE features mapped directly to each first-SAE feature."""
    set_size_composed: np.ndarray
    """``[n_16]`` int64 number mapped to it through the second SAE."""


def self_consistency(W_16: Any, W_32: Any, W_64: Any, *, block_size: int = 4096, device=None) -> SelfConsistency:
    """Compare the composed nearest-neighbour map 64 -> 32 -> 16 with the direct map 64 -> 16.

    For third-SAE feature ``l``: ``direct[l]`` is its nearest first-SAE feature, ``via[l]`` its
    nearest second-SAE feature and ``composed[l]`` the nearest first-SAE feature of ``via[l]``.
    With clean splitting geometry the maps agree. Per first-SAE feature ``i`` the sets
    ``{l: direct[l] = i}`` and ``{l: composed[l] = i}`` are compared by Jaccard overlap
    (paper appendix D.1, Fig. 13b).
    """
    block_size = _positive_int(block_size, "block_size")
    A, B, C = _prepared([(W_16, "W_16"), (W_32, "W_32"), (W_64, "W_64")], device)
    direct, _ = _nn1(A, C, block_size)
    via, _ = _nn1(B, C, block_size)
    nn_ba, _ = _nn1(A, B, block_size)
    composed = nn_ba[via]
    agree = composed == direct
    n = A.shape[0]
    size_d = np.bincount(direct, minlength=n).astype(np.int64)
    size_c = np.bincount(composed, minlength=n).astype(np.int64)
    inter = np.bincount(direct[agree], minlength=n).astype(np.int64)
    union = size_d + size_c - inter
    overlap = np.full(n, np.nan)
    np.divide(inter, union, out=overlap, where=union > 0)
    return SelfConsistency(direct, via, composed, agree, float(agree.mean()), overlap, size_d, size_c)


def plot_self_consistency(result: SelfConsistency, path: str | os.PathLike, *, bins: int = 20) -> str:
    """Fig. 13b: histogram of the per-feature set overlap, and overlap vs set size."""
    fig, (ax, ax2) = _figure(2)
    ov = result.set_overlap
    ok = np.isfinite(ov)
    ax.hist(ov[ok], bins=bins, range=(0.0, 1.0), color="tab:purple")
    ax.set_xlabel("set overlap (Jaccard), direct vs composed")
    ax.set_ylabel("features of the first SAE")
    ax.set_title(f"{100 * result.fraction_agree:.1f}% of third-SAE features agree")
    size = np.maximum(result.set_size_direct, result.set_size_composed)
    ax2.scatter(size[ok], ov[ok], s=6, color="tab:purple")
    ax2.set_xlabel("size of the larger set")
    ax2.set_ylabel("set overlap")
    return _save(fig, path)


# ----------------------------------------------------------------------------- 6. cross-domain


@dataclass(eq=False)
class CrossDomainMatches:
    """Best match in SAE b (another corpus) of selected features of SAE a (Table 4, Fig. 10)."""

    features: np.ndarray
    """``[m]`` int64 feature ids of SAE a that were matched."""
    match: np.ndarray
    """``[m]`` int64 best-matching feature of SAE b (max decoder cosine)."""
    cosine: np.ndarray
    """``[m]`` float64 decoder cosine of the match (the max cosine of Fig. 10)."""
    activation_similarity: np.ndarray | None
    """``[m]`` float64 activation similarity of each match on the shared documents, or None."""
    bin_edges: np.ndarray
    """Histogram bin edges of ``cosine``."""
    counts: np.ndarray
    """int64 histogram counts of ``cosine`` (Fig. 10)."""
    mean_cosine: float
    """Mean of ``cosine``."""
    mean_activation_similarity: float | None
    """Mean of ``activation_similarity`` (None without codes)."""


def _doc_rows(shared_docs: Any) -> tuple[Any, Any]:
    if shared_docs is None:
        return None, None
    if isinstance(shared_docs, tuple):
        if len(shared_docs) != 2:
            raise ValueError("shared_docs must be a row-id array or a (rows_a, rows_b) pair")
        return shared_docs
    return shared_docs, shared_docs


def cross_domain_matches(W_a: Any, W_b: Any, *, features: Any = None, codes_a: Any = None, codes_b: Any = None,
                         shared_docs: Any = None, bins: int = 50, block_size: int = 4096,
                         device=None) -> CrossDomainMatches:
    """For each selected feature ``i`` of SAE a (trained on corpus A), the feature of SAE b
    (corpus B) with the largest decoder cosine (paper appendix C, Fig. 10, Table 4).

    The cosine is taken in the input (embedding) space: each SAE was standardised with its
    own corpus's statistics, so a TopKSAE contributes :meth:`~fastsae.TopKSAE.feature_directions`
    (``W_dec · diag(std)``, normalised), not its ``W_dec``. Raw matrices are used as given and
    must already be input-space directions (e.g. ``sae.feature_directions()``).

    ``features``: ids of SAE a to match (default all). With ``codes_a`` and ``codes_b`` (both
    SAEs' codes on documents they share, e.g. cross-posted papers) the activation similarity
    of each match is computed as in :func:`activation_similarity`. ``shared_docs`` picks those
    documents: None (row ``d`` of both codes is the same document), one row-id array used for
    both, or a pair ``(rows_a, rows_b)`` of equal length aligning the two.
    """
    bins = _positive_int(bins, "bins")
    block_size = _positive_int(block_size, "block_size")
    if (codes_a is None) != (codes_b is None):
        raise ValueError("give both codes_a and codes_b (codes on the same shared documents), or neither")
    if shared_docs is not None and codes_a is None:
        raise ValueError("shared_docs selects rows of codes_a/codes_b, which were not given")
    a, b = _prepared([(W_a, "W_a"), (W_b, "W_b")], device, input_space=True)
    feats = np.arange(a.shape[0], dtype=np.int64) if features is None else _ids(features, "features", a.shape[0])
    if feats.size == 0:
        raise ValueError("features selects no feature of W_a")
    match, cosine = _nn1(b, a[torch.from_numpy(feats).to(a.device)], block_size)
    act = None
    if codes_a is not None:
        rows_a, rows_b = _doc_rows(shared_docs)
        ca = _select_docs(_codes(codes_a, "codes_a"), rows_a, "shared_docs (rows of codes_a)")
        cb = _select_docs(_codes(codes_b, "codes_b"), rows_b, "shared_docs (rows of codes_b)")
        act = _activation_similarity(ca, cb, np.stack([feats, match], axis=1), 1 << 24).similarity
    counts, edges = np.histogram(np.clip(cosine, -1.0, 1.0), bins=bins, range=(-1.0, 1.0))
    return CrossDomainMatches(feats, match, cosine, act, edges, counts.astype(np.int64), float(cosine.mean()),
                              None if act is None else float(act.mean()))


def plot_cross_domain(result: CrossDomainMatches, path: str | os.PathLike, *, bins: int = 50) -> str:
    """Fig. 10: histogram of the max cross-domain cosine; with activation similarities, a second
    panel of cosine vs activation similarity (Table 4's two columns)."""
    has_act = result.activation_similarity is not None
    fig, axes = _figure(2 if has_act else 1)
    lo = min(0.0, float(result.cosine.min()))
    axes[0].hist(np.clip(result.cosine, lo, 1.0), bins=bins, range=(lo, 1.0), color="tab:red")
    axes[0].set_xlabel("max cosine similarity to the other domain's SAE")
    axes[0].set_ylabel("features")
    axes[0].set_title(f"{result.features.size} features, mean {result.mean_cosine:.2f}")
    if has_act:
        axes[1].scatter(result.cosine, result.activation_similarity, s=8, color="tab:red")
        axes[1].set_xlabel("decoder cosine")
        axes[1].set_ylabel("activation similarity (shared documents)")
    return _save(fig, path)


# ----------------------------------------------------------------------------- 7. heatmap


@dataclass(eq=False)
class SplitHeatmap:
    """Similarities between hand-picked features of several SAEs (Figs. 11, 12)."""

    cosine: np.ndarray
    """``[m, m]`` float64 decoder cosine between all chosen features (all SAEs, in order)."""
    activation_similarity: np.ndarray | None
    """``[m, m]`` float64 activation similarity between them, or None without codes."""
    sae: np.ndarray
    """``[m]`` int64 which SAE (position in ``W_list``) each row belongs to."""
    feature_ids: np.ndarray
    """``[m]`` int64 feature id of each row within its SAE."""
    labels: list
    """``[m]`` tick labels, ``"<sae label>:<id>"``."""


def split_heatmap(W_list: Sequence[Any], feature_ids_list: Sequence[Any], *, labels: Sequence[str] | None = None,
                  codes_list: Sequence[Any] | None = None, device=None) -> SplitHeatmap:
    """Cosine between the decoder rows of the chosen features of each SAE (rows/columns in the
    order of ``W_list``, then of the ids); with ``codes_list`` (each SAE's codes on the same
    documents) also their activation similarity (Fig. 11 colours by it)."""
    if len(W_list) == 0:
        raise ValueError("W_list is empty")
    if len(feature_ids_list) != len(W_list):
        raise ValueError(f"feature_ids_list has {len(feature_ids_list)} entries for {len(W_list)} SAEs")
    labels = [f"SAE{s}" for s in range(len(W_list))] if labels is None else [str(x) for x in labels]
    if len(labels) != len(W_list):
        raise ValueError(f"labels has {len(labels)} entries for {len(W_list)} SAEs")
    if codes_list is not None and len(codes_list) != len(W_list):
        raise ValueError(f"codes_list has {len(codes_list)} entries for {len(W_list)} SAEs")
    Ws = _prepared([(W, f"W_list[{s}]") for s, W in enumerate(W_list)], device)
    ids = [_ids(f, f"feature_ids_list[{s}]", Ws[s].shape[0]) for s, f in enumerate(feature_ids_list)]
    if sum(x.size for x in ids) == 0:
        raise ValueError("feature_ids_list selects no features")
    rows = torch.cat([Ws[s][torch.from_numpy(x).to(Ws[s].device)] for s, x in enumerate(ids)])
    cos = (rows @ rows.T).cpu().numpy().astype(np.float64)
    sae = np.concatenate([np.full(x.size, s, dtype=np.int64) for s, x in enumerate(ids)])
    fid = np.concatenate(ids)
    act = None
    if codes_list is not None:
        codes = [_codes(c, f"codes_list[{s}]") for s, c in enumerate(codes_list)]
        act = np.zeros_like(cos)
        off = np.cumsum([0] + [x.size for x in ids])
        for s in range(len(ids)):
            for t in range(len(ids)):
                if ids[s].size == 0 or ids[t].size == 0:
                    continue
                p = np.stack(np.meshgrid(ids[s], ids[t], indexing="ij"), axis=-1).reshape(-1, 2)
                r = _activation_similarity(codes[s], codes[t], p, 1 << 24)
                act[off[s] : off[s + 1], off[t] : off[t + 1]] = r.similarity.reshape(ids[s].size, ids[t].size)
    return SplitHeatmap(cos, act, sae, fid, [f"{labels[s]}:{i}" for s, i in zip(sae, fid)])


def plot_split_heatmap(W_list: Sequence[Any], feature_ids_list: Sequence[Any], path: str | os.PathLike, *,
                       labels: Sequence[str] | None = None, codes_list: Sequence[Any] | None = None,
                       color_by: str = "cosine", annotate: bool = True, device=None) -> SplitHeatmap:
    """Figs. 11/12: heatmap between the chosen features of several SAEs, coloured by decoder
    cosine (``color_by="cosine"``) or activation similarity (``"activation"``, needs
    ``codes_list``), lines between SAEs. Returns the :class:`SplitHeatmap` drawn."""
    if color_by not in ("cosine", "activation"):
        raise ValueError(f"color_by must be 'cosine' or 'activation', got {color_by!r}")
    if color_by == "activation" and codes_list is None:
        raise ValueError("color_by='activation' needs codes_list")
    h = split_heatmap(W_list, feature_ids_list, labels=labels, codes_list=codes_list, device=device)
    m = h.cosine if color_by == "cosine" else h.activation_similarity
    size = max(4.0, 0.45 * len(h.labels) + 2.0)
    fig, (ax,) = _figure(width=size + 1.0, height=size)
    im = ax.imshow(m, vmin=min(0.0, float(m.min())), vmax=1.0, cmap="viridis")
    fig.colorbar(im, ax=ax, label="decoder cosine" if color_by == "cosine" else "activation similarity")
    ax.set_xticks(range(len(h.labels)), h.labels, rotation=90, fontsize="small")
    ax.set_yticks(range(len(h.labels)), h.labels, fontsize="small")
    for b in np.flatnonzero(np.diff(h.sae)) + 0.5:
        ax.axhline(b, color="w", linewidth=1.5)
        ax.axvline(b, color="w", linewidth=1.5)
    if annotate and len(h.labels) <= 30:
        for r in range(m.shape[0]):
            for c in range(m.shape[1]):
                ax.text(c, r, f"{m[r, c]:.2f}", ha="center", va="center", fontsize=6,
                        color="k" if m[r, c] > 0.6 else "w")
    _save(fig, path)
    return h


__all__ = [
    "CATEGORIES",
    "ActivationSimilarity",
    "CosineDistribution",
    "CrossDomainMatches",
    "FeatureMatches",
    "FeatureTriplets",
    "NearestNeighbours",
    "SelfConsistency",
    "SplitHeatmap",
    "activation_similarity",
    "cross_domain_matches",
    "decoder_similarity",
    "feature_triplets",
    "match_features",
    "nn_cosine_distribution",
    "plot_activation_similarity",
    "plot_cross_domain",
    "plot_matches",
    "plot_nn_cosines",
    "plot_self_consistency",
    "plot_split_heatmap",
    "plot_triplets",
    "self_consistency",
    "split_heatmap",
]
