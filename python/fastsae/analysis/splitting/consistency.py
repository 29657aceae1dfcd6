"""Features present in three SAEs (Fig. 13a) and the self-consistency of nearest-neighbour maps
16->64 found directly or through 32 (Fig. 13b)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np
import torch

from ..._plot import save_figure
from .._common import _PNG_DPI, _finite_float, _positive_int, _prepared, figure_row
from .neighbours import _nn1, _topk_blocked

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
    fig, (ax,) = figure_row()
    for label, r in results.items():
        ax.plot(r.curve_thresholds, r.curve_counts, marker="o", markersize=3,
                label=(label + ": " if label else "") + f"{r.n_recurring} at > {r.threshold:.2f}")
    ax.set_xlabel("cosine similarity threshold")
    ax.set_ylabel("features re-occurring in all SAEs")
    ax.legend(fontsize="small")
    return save_figure(fig, path, dpi=_PNG_DPI)


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
    fig, (ax, ax2) = figure_row(2)
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
    return save_figure(fig, path, dpi=_PNG_DPI)
