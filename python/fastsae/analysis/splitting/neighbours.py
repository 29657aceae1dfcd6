"""Decoder nearest neighbours (paper section 4.1, Fig. 6): the one blocked cosine top-k search of
the package (the report's decoder neighbours call it too), never the full ``n_b x n_a`` matrix."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Mapping, NamedTuple, Sequence

import numpy as np
import torch

from ..._checks import check_int
from ..._plot import save_figure
from .._common import (
    _PNG_DPI,
    _finite_float,
    _positive_int,
    _prepared,
    _unit_rows_or_zero,
    figure_row,
)

# ----------------------------------------------------------------------------- 1. nearest neighbours


class NearestNeighbours(NamedTuple):
    """For each row of ``W_b``, its nearest rows of ``W_a`` by cosine similarity."""

    indices: np.ndarray
    """``[n_b, top]`` int64 row ids into ``W_a``, most similar first."""
    cosines: np.ndarray
    """``[n_b, top]`` cosine similarity of each of those rows (float32, float64 for float64 input)."""


def _topk_blocked(keys: torch.Tensor, queries: torch.Tensor, top: int, block_size: int, *,
                  key_block: int | None = None,
                  exclude: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-``top`` of ``queries @ keys.T`` per query row, holding one [block_size, key_block]
    tile at a time (``key_block`` defaults to ``block_size``).

    ``exclude`` (``[n_q]`` key ids) is a key never returned for each query row: a row's own id
    when the queries are rows of the keys. The caller keeps ``top`` at most the number of keys
    left, so an excluded key (scored -inf) never reaches the output.

    Ties go to the lower key id: with ``top == 1`` ``argmax`` returns the first maximum and a later
    block replaces the running best only when strictly larger; with ``top > 1`` each tile is
    sorted stably and merged after the running list (earlier blocks, lower ids) in a stable sort.
    """
    key_block = block_size if key_block is None else key_block
    n_q, n_k = queries.shape[0], keys.shape[0]
    dev = queries.device
    out_v = torch.empty(n_q, top, dtype=queries.dtype, device=dev)
    out_i = torch.empty(n_q, top, dtype=torch.int64, device=dev)
    for q0 in range(0, n_q, block_size):
        q = queries[q0 : q0 + block_size]
        best_v = torch.full((q.shape[0], top), -torch.inf, dtype=q.dtype, device=dev)
        best_i = torch.full((q.shape[0], top), -1, dtype=torch.int64, device=dev)
        for k0 in range(0, n_k, key_block):
            s = q @ keys[k0 : k0 + key_block].T
            if exclude is not None:
                own = exclude[q0 : q0 + q.shape[0]] - k0
                inside = (own >= 0) & (own < s.shape[1])
                s[torch.nonzero(inside)[:, 0], own[inside]] = -torch.inf
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


def decoder_neighbours(W_dec: Any, top: int = 5, *, rows: Sequence[int] | None = None,
                       block_rows: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """For each decoder row (or each of ``rows``), the ``top`` other rows with the highest
    cosine (self excluded): the search of :func:`decoder_similarity` within one matrix.

    The rows are compared as given (float32): pass one SAE's ``W_dec``, whose rows share one
    (standardised) space, or input-space directions (:meth:`fastsae.TopKSAE.feature_directions`).
    An all-zero row has cosine 0 with every row.

    Returns ``(ids [m, top] int64, cos [m, top] float32)``, best first, ties to the lower id;
    with fewer than ``top + 1`` rows the rest is padded with id -1 and cosine nan. The
    ``m x n`` similarity is computed ``block_rows`` query rows at a time (by default blocks of
    about 16M entries, 64 MB), never whole.
    """
    top = check_int(top, "top", min=0)
    block_rows = check_int(block_rows, "block_rows", min=1, none=True)
    U = _unit_rows_or_zero(W_dec)
    n = U.shape[0]
    q = np.arange(n, dtype=np.int64) if rows is None else np.asarray(rows, dtype=np.int64)
    if q.size and (q.min() < 0 or q.max() >= n):
        raise ValueError(f"rows out of range [0, {n})")
    top_eff = min(top, n - 1)
    ids = np.full((len(q), top), -1, np.int64)
    cos = np.full((len(q), top), np.nan, np.float32)
    if top_eff <= 0 or q.size == 0:
        return ids, cos
    keys, own = torch.from_numpy(U), torch.from_numpy(q)
    step = block_rows or max(1, (1 << 24) // n)
    i, v = _topk_blocked(keys, keys[own], top_eff, step, key_block=n, exclude=own)
    ids[:, :top_eff] = i.numpy()
    cos[:, :top_eff] = v.numpy()
    return ids, cos


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


def plot_nn_cosines(results_by_label: Mapping[str, Any], path: str | os.PathLike, *, bins: int = 50) -> str:
    """Fig. 6: one step histogram (fraction of features) of nearest-neighbour cosine per SAE pair.

    Values of ``results_by_label`` are :class:`NearestNeighbours`, :class:`CosineDistribution`
    or 1-D cosine arrays; keys label the pairs (e.g. ``"k16->k32, n=6144"``).
    """
    if not isinstance(results_by_label, Mapping) or not results_by_label:
        raise ValueError("results_by_label must be a non-empty mapping label -> nearest-neighbour result")
    fig, (ax,) = figure_row(width=6.0)
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
    return save_figure(fig, path, dpi=_PNG_DPI)
