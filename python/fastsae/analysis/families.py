"""Feature families (paper section 4.2, appendix D.2) and their metrics (Table 1, Figs. 2, 14, 16).

Two methods, every choice a parameter:

``method="paper"`` (default, for reproduction) follows the authors' released code:

1. optional feature filter (``features=``, e.g. interpretable latents only);
2. C normalised row-wise by frequency, ``C_ij / (n_i + 1)``, entries below ``tau`` zeroed
   (the authors then map survivors through exp(), a monotone map that leaves the tree as is);
3. symmetrised by ``symmetrize`` (default max: order-independent, unlike the authors' code,
   where the entry written last won) and reduced to a maximum spanning forest (native);
4. each tree edge directed from the denser feature (higher activation count) to the sparser;
5. roots: nodes without an incoming edge and more than ``root_min_children`` children; a
   family is the depth-first subtree of a root, kept when it has more than
   ``family_min_children`` members below the root;
6. repeated ``iterations`` times after the first pass with every parent found so far removed;
7. families whose child sets overlap with Jaccard > ``dedup_jaccard`` are deduplicated,
   keeping the larger.

``method="precise"`` (beyond the paper): latent c becomes a child of the strictly denser latent
p whose firing c implies most strongly beyond chance. With P(p | c) = C_pc / n_c and
P(p) = n_p / N, the candidates for c are the strictly denser latents that co-fire with c
significantly more often than chance, by the score test of a proportion

    z(c -> p) = (C_pc - n_c P(p)) / sqrt(n_c P(p) (1 - P(p)))  >=  precise_min_z  (5),

and the parent is the candidate with the largest Loevinger's H

    H(c -> p) = (P(p | c) - P(p)) / (1 - P(p))

(0 when p and c fire independently, 1 when p fires whenever c fires), kept when
``H >= precise_threshold`` (0.3); equal H goes to the denser candidate. A latent that fires on
every row is never a parent. Why chance matters: a very dense unrelated latent (on half of all
rows, say) co-fires with any c about half the time, as often as a true parent whose firing top-k
or feature absorption suppresses on part of c's rows, so raw co-firing counts pick the wrong
parent and H does not; and a latent on 98% of rows co-fires with a rare c on all of c's rows by
chance alone (H = 1 on a few dozen rows), which the z test rejects. The default 5 is a one-sided
p-value of 3e-7 per pair: each c is tested against every denser latent, so with 9,216 latents
z >= 3 still lets a few chance pairs through (false families under very dense latents on
planted codes, benchmarks/bench_families.py sizes) and z >= 5 keeps the family-wise error of
a c below 1% up to ~30,000 candidates.

Each c has at most one parent and parents are strictly denser, so this is a forest; every latent
with at least ``family_min_children + 1`` direct children heads a family (its depth-first
subtree). On planted hierarchies it keeps recall while cutting the paper method's false
families (benchmarks/bench_families.py, benchmarks/bench_recovery.py).

Both results are independent of the order of latent ids: forest ties are broken by the
activation similarity (D as a cosine), then by id, and DFS visits children strongest first.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Sequence

import numpy as np
import scipy.sparse as sp

from .._plot import new_figure, save_figure
from ..cooc import Cooccurrence, normalize_frequency, threshold
from ..cooc._check import check_structure
from ..cooc.forest import maximum_spanning_forest


@dataclass
class Family:
    """A parent latent and the latents below it."""

    parent: int
    """Latent id of the parent (the densest feature of the family)."""
    children: list[int]
    """Latent ids below the parent, in depth-first order (strongest edge first)."""
    depth: list[int]
    """Depth of each child (1 = direct child of the parent), aligned with ``children``."""
    iteration: int
    """Pass of the search that found it (0 = first pass)."""

    @property
    def members(self) -> list[int]:
        return [self.parent, *self.children]


def _dense(m) -> np.ndarray:
    return m.toarray() if sp.issparse(m) else np.asarray(m)


def _density_key(cooc: Cooccurrence) -> np.ndarray:
    """A label-free total preorder of density: activation count, then sum of squared activations."""
    diag = np.asarray(cooc.act_sim.diagonal() if sp.issparse(cooc.act_sim) else np.diag(cooc.act_sim), dtype=np.float64)
    return np.lexsort((diag, cooc.freq.astype(np.float64)))  # ascending density rank order


def _ranks(cooc: Cooccurrence) -> np.ndarray:
    order = _density_key(cooc)
    ranks = np.empty(len(order), dtype=np.int64)
    ranks[order] = np.arange(len(order))
    return ranks  # higher rank = denser; ties broken by id only when freq and D_ii tie exactly


def _activation_cosine_at(cooc: Cooccurrence, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """D_ij / sqrt(D_ii D_jj) at the given entries only (never the whole n x n cosine)."""
    D = cooc.act_sim
    diag = np.asarray(D.diagonal() if sp.issparse(D) else np.diag(D), dtype=np.float64)
    dij = np.asarray(D[rows, cols]).ravel().astype(np.float64)
    den = np.sqrt(diag[rows] * diag[cols])
    return np.divide(dij, den, out=np.zeros_like(dij), where=den > 0)


def _tie_broken(weights: sp.csr_matrix, cooc: Cooccurrence) -> sp.csr_matrix:
    """weights + eps * cos(D): equal weights are ordered by activation similarity, while any two
    distinct weights keep their order (eps is below half the smallest gap between them)."""
    w = weights.tocoo()
    if w.nnz == 0:
        return weights.tocsr()
    vals = np.unique(w.data)
    gap = np.diff(vals).min() if len(vals) > 1 else 1.0
    cosv = np.clip(_activation_cosine_at(cooc, w.row, w.col), 0.0, 1.0)
    eps = gap / 4.0
    return sp.csr_matrix((w.data + eps * cosv, (w.row, w.col)), shape=weights.shape)


def _thresholded_frequency_normalised(cooc: Cooccurrence, tau: float) -> sp.csr_matrix:
    """C_ij / (n_i + 1) where it is >= tau, off the diagonal, as CSR (built from the surviving
    entries only: at n = 9,216 this replaced a 1 GB dense-to-sparse conversion)."""
    f = cooc.freq.astype(np.float64)
    n = cooc.n_latents
    if sp.issparse(cooc.counts):
        m = sp.csr_matrix(threshold(normalize_frequency(cooc), tau))
    else:
        rows_l, cols_l, vals_l = [], [], []
        for a in range(0, n, 1024):  # row blocks: bounded temporaries
            blk = cooc.counts[a : a + 1024] / (f[a : a + 1024, None] + 1.0)
            r, c = np.nonzero(blk >= tau)
            rows_l.append(r + a)
            cols_l.append(c)
            vals_l.append(blk[r, c])
        m = sp.csr_matrix((np.concatenate(vals_l), (np.concatenate(rows_l), np.concatenate(cols_l))), shape=(n, n))
    m.setdiag(0)
    m.eliminate_zeros()
    return m


def _check(cooc: Cooccurrence, features) -> np.ndarray:
    if not isinstance(cooc, Cooccurrence):
        raise TypeError("cooc must be a fastsae.Cooccurrence (from fastsae.cooccurrence)")
    # Fields are mutable: the structure (sparse indptr/indices above all) is checked again
    # before any scipy routine below reads it.
    check_structure(cooc.counts, cooc.act_sim, cooc.freq, cooc.n_rows)
    n = cooc.n_latents
    keep = np.ones(n, dtype=bool)
    if features is not None:
        f = np.asarray(list(features) if not isinstance(features, np.ndarray) else features)
        keep[:] = False
        if f.dtype == bool:
            if f.shape != (n,):
                raise ValueError(f"a boolean feature mask must have n_latents={n} entries")
            keep = f.copy()
        else:
            if f.size and (f.min() < 0 or f.max() >= n):
                raise ValueError("feature ids out of range")
            keep[f.astype(np.int64)] = True
    return keep


def _dfs(root: int, out_edges: dict[int, list[tuple[float, int]]]) -> tuple[list[int], list[int]]:
    children, depth = [], []
    stack = [(c, 1) for _, c in reversed(out_edges.get(root, []))]
    seen = {root}
    while stack:
        node, dep = stack.pop()
        if node in seen:
            continue
        seen.add(node)
        children.append(node)
        depth.append(dep)
        stack.extend((c, dep + 1) for _, c in reversed(out_edges.get(node, [])))
    return children, depth


def _sorted_edges(edges: dict[int, list[tuple[float, int]]], ranks: np.ndarray) -> None:
    for p in edges:  # strongest edge first, then denser child (label-free), then id
        edges[p].sort(key=lambda wc: (-wc[0], -ranks[wc[1]], wc[1]))


def _paper_pass(cooc, weights, alive, ranks, root_min_children, family_min_children, symmetrize, iteration):
    m = weights.tocsr().copy()
    dead = ~alive
    if dead.any():  # remove nodes: zero their rows and columns
        d = sp.diags(alive.astype(np.float64))
        m = (d @ m @ d).tocsr()
        m.eliminate_zeros()
    forest = maximum_spanning_forest(_tie_broken(m, cooc), symmetrize=symmetrize)
    out_edges: dict[int, list[tuple[float, int]]] = {}
    has_parent = set()
    for (u, v), w in zip(forest.edges.tolist(), forest.edge_weights.tolist()):
        p, c = (u, v) if ranks[u] > ranks[v] else (v, u)
        out_edges.setdefault(p, []).append((w, c))
        has_parent.add(c)
    _sorted_edges(out_edges, ranks)
    fams = []
    for root in sorted(out_edges, key=lambda r: (-ranks[r], r)):
        if root in has_parent or len(out_edges[root]) <= root_min_children:
            continue
        children, depth = _dfs(root, out_edges)
        if len(children) > family_min_children:
            fams.append(Family(int(root), [int(c) for c in children], depth, iteration))
    return fams


def _implication_scores(counts: np.ndarray, freq: np.ndarray, cols: np.ndarray, n_rows: int) -> tuple[np.ndarray, np.ndarray]:
    """For every p (rows) and the latents c = ``cols`` (``counts`` is C[:, cols]): Loevinger's
    H(c -> p) = (P(p | c) - P(p)) / (1 - P(p)) and the score-test statistic
    z(c -> p) = (C_pc - n_c P(p)) / sqrt(n_c P(p) (1 - P(p))). Where 1 - P(p) = 0 (p fires on
    every row) or n_c = 0, H = 0 and z = -inf."""
    f = freq.astype(np.float64)
    fc = f[cols][None, :]
    base = (f / max(n_rows, 1))[:, None]
    den = 1.0 - base
    c = counts.astype(np.float64)
    h = np.divide(c, fc, out=np.zeros(c.shape), where=fc > 0)  # P(p | c)
    h -= base
    np.divide(h, den, out=h, where=den > 0)
    h[np.broadcast_to(den <= 0, h.shape) | np.broadcast_to(fc <= 0, h.shape)] = 0.0
    expected = fc * base
    c -= expected  # the excess count
    expected *= den  # the variance under independence
    np.sqrt(expected, out=expected)
    z = np.divide(c, expected, out=np.full(c.shape, -np.inf), where=expected > 0)
    return h, z


def _precise(cooc, keep, ranks, threshold_h, min_z, family_min_children):
    n = cooc.n_latents
    freq = cooc.freq.astype(np.int64)
    C = cooc.counts.tocsc() if sp.issparse(cooc.counts) else np.asarray(cooc.counts)
    parent_of = np.full(n, -1, dtype=np.int64)
    strength = np.zeros(n)
    cols = np.nonzero(keep & (freq > 0))[0]
    width = int(min(1024, max(1, (1 << 22) // max(n, 1))))  # [n, width] float64 temporaries: ~32 MiB each
    for a in range(0, len(cols), width):  # column blocks: bounded memory for any n
        cb = cols[a : a + width]
        block = (C[:, cb].toarray() if sp.issparse(C) else C[:, cb]).astype(np.int64)  # [n, b]: C[p, c]
        # Candidates: kept, strictly denser than c, co-firing with c (z >= min_z). The parent is
        # the candidate with the largest H(c -> p); equal H goes to the denser candidate.
        h, z = _implication_scores(block, freq, cb, cooc.n_rows)
        ok = keep[:, None] & (ranks[:, None] > ranks[cb][None, :]) & (block > 0) & (z >= min_z)
        h = np.where(ok, h, -np.inf)
        top = h.max(axis=0)
        best = np.where(ok & (h == top[None, :]), ranks[:, None], -1).argmax(axis=0)
        sel = np.isfinite(top) & (top >= threshold_h)
        parent_of[cb[sel]] = best[sel]
        strength[cb[sel]] = top[sel]
    out_edges: dict[int, list[tuple[float, int]]] = {}
    for c in np.nonzero(parent_of >= 0)[0]:
        out_edges.setdefault(int(parent_of[c]), []).append((float(strength[c]), int(c)))
    _sorted_edges(out_edges, ranks)
    fams = []
    for p in sorted(out_edges, key=lambda r: (-ranks[r], r)):
        if len(out_edges[p]) > family_min_children:
            children, depth = _dfs(p, out_edges)
            fams.append(Family(int(p), [int(c) for c in children], depth, 0))
    return fams


def deduplicate(families: Sequence[Family], jaccard: float = 0.6, ranks: np.ndarray | None = None) -> list[Family]:
    """Drop families whose child set overlaps a kept one with Jaccard > ``jaccard``; larger
    families are kept first (then earlier iteration, then denser parent, then parent id)."""
    def key(f):
        return (-len(f.children), f.iteration, -(ranks[f.parent] if ranks is not None else 0), f.parent)

    kept: list[Family] = []
    for f in sorted(families, key=key):
        s = set(f.children)
        if all(len(s & set(g.children)) / max(len(s | set(g.children)), 1) <= jaccard for g in kept):
            kept.append(f)
    return kept


def feature_families(
    cooc: Cooccurrence,
    *,
    tau: float = 0.1,
    iterations: int = 3,
    dedup_jaccard: float = 0.6,
    features: Iterable[int] | np.ndarray | None = None,
    method: str = "paper",
    root_min_children: int = 2,
    family_min_children: int = 2,
    symmetrize: str = "max",
    precise_threshold: float = 0.3,
    precise_min_z: float = 5.0,
) -> list[Family]:
    """Feature families from a co-occurrence result (see the module docstring for both methods)."""
    keep = _check(cooc, features)
    if method not in ("paper", "precise"):
        raise ValueError(f"method must be 'paper' or 'precise', got {method!r}")
    if iterations < 0 or root_min_children < 0 or family_min_children < 0:
        raise ValueError("iterations and the minimum children counts must be >= 0")
    if not 0 <= dedup_jaccard <= 1:
        raise ValueError("dedup_jaccard must be in [0, 1]")
    ranks = _ranks(cooc)
    if method == "precise":
        if not 0 < precise_threshold <= 1:
            raise ValueError("precise_threshold must be in (0, 1]")
        if not (isinstance(precise_min_z, (int, float, np.number)) and 0 <= precise_min_z < np.inf):
            raise ValueError(f"precise_min_z must be a finite number >= 0, got {precise_min_z!r}")
        fams = _precise(cooc, keep, ranks, precise_threshold, float(precise_min_z), family_min_children)
        return deduplicate(fams, dedup_jaccard, ranks)
    weights = _thresholded_frequency_normalised(cooc, tau)
    alive = keep.copy()
    found: list[Family] = []
    for it in range(iterations + 1):
        fams = _paper_pass(cooc, weights, alive, ranks, root_min_children, family_min_children, symmetrize, it)
        if not fams and it > 0:
            break
        found.extend(fams)
        for f in fams:  # remove every parent found so far, then rebuild
            alive[f.parent] = False
    return deduplicate(found, dedup_jaccard, ranks)


# ------------------------------------------------------------------------------------------------
# Metrics


@dataclass
class FamilyStats:
    """Family metrics (paper Table 1, Figs. 14 and 16)."""

    sizes: np.ndarray
    """Members per family, parent included."""
    r_cooc: np.ndarray
    """R(p, C) per family: mean child-parent co-occurrence over mean child-child co-occurrence."""
    r_act: np.ndarray
    """The same ratio computed on the activation similarity D."""
    c_diag_over_off: np.ndarray
    """Per family: mean in-block C (off the diagonal) over mean C between the family and the rest."""
    d_diag_over_off: np.ndarray
    """The same on D."""
    f_inc: float
    """Fraction of the considered features that belong to some family."""
    per_iteration: dict[int, int]
    """New families found in each pass."""
    order: np.ndarray = field(repr=False)
    """Greedy block-diagonal permutation of the latents by families (then the rest)."""

    def medians(self) -> dict[str, float]:
        def med(a):
            a = a[np.isfinite(a)]
            return float(np.median(a)) if a.size else float("nan")

        return {"size": med(self.sizes.astype(float)), "R(p,C)": med(self.r_cooc), "R_act": med(self.r_act),
                "C_diag/C_off": med(self.c_diag_over_off), "D_diag/D_off": med(self.d_diag_over_off), "f_inc": self.f_inc}


def parent_child_ratio(matrix: np.ndarray, parent: int, children: Sequence[int]) -> float:
    """R(p, C) = avg_i A[i, p] / avg_i sum_{j in C, j != i} A[i, j] over children i (inf when the
    children never co-occur with each other)."""
    ch = np.asarray(children, dtype=np.int64)
    if ch.size == 0:
        return float("nan")
    num = matrix[ch, parent].astype(np.float64).mean()
    sub = matrix[np.ix_(ch, ch)].astype(np.float64)
    den = (sub.sum(axis=1) - np.diag(sub)).mean()
    return float(num / den) if den > 0 else float("inf")


def block_order(families: Sequence[Family], n: int) -> np.ndarray:
    """Greedy block-diagonal permutation: families largest first, each member placed once, then
    the remaining latents."""
    placed = np.zeros(n, dtype=bool)
    order: list[int] = []
    for f in sorted(families, key=lambda f: (-len(f.members), f.parent)):
        for m in f.members:
            if not placed[m]:
                placed[m] = True
                order.append(m)
    order.extend(np.nonzero(~placed)[0].tolist())
    return np.asarray(order, dtype=np.int64)


def _block_ratio(M: np.ndarray, members: np.ndarray, n: int) -> float:
    inside = M[np.ix_(members, members)].astype(np.float64)
    k = len(members)
    in_mean = (inside.sum() - np.trace(inside)) / max(k * (k - 1), 1)
    rest = np.setdiff1d(np.arange(n), members)
    if rest.size == 0:
        return float("nan")
    off_mean = M[np.ix_(members, rest)].astype(np.float64).mean()
    return float(in_mean / off_mean) if off_mean > 0 else float("inf")


def family_stats(cooc: Cooccurrence, families: Sequence[Family], *, features=None) -> FamilyStats:
    """Metrics of a family list (dense results; sparse ones are densified over the family members)."""
    n = cooc.n_latents
    keep = _check(cooc, features)
    C = _dense(cooc.counts)
    D = _dense(cooc.act_sim)
    sizes = np.array([len(f.members) for f in families], dtype=np.int64)
    r_c = np.array([parent_child_ratio(C, f.parent, f.children) for f in families])
    r_d = np.array([parent_child_ratio(D, f.parent, f.children) for f in families])
    cd = np.array([_block_ratio(C, np.asarray(f.members), n) for f in families])
    dd = np.array([_block_ratio(D, np.asarray(f.members), n) for f in families])
    members = set()
    for f in families:
        members.update(f.members)
    considered = int(keep.sum())
    f_inc = len(members & set(np.nonzero(keep)[0].tolist())) / considered if considered else float("nan")
    per_it: dict[int, int] = {}
    for f in families:
        per_it[f.iteration] = per_it.get(f.iteration, 0) + 1
    return FamilyStats(sizes, r_c, r_d, cd, dd, f_inc, per_it, block_order(families, n))


def family_table(stats_by_sae: "dict[str, FamilyStats]") -> str:
    """Paper Table 1 as Markdown: per SAE the number of families, f_inc and the medians of the
    family size, R(p, C), R on D, C_diag/C_off and D_diag/D_off."""
    head = ("| SAE | families | f_inc | median size | median R(p,C) | median R(p,D) | "
            "median C_diag/C_off | median D_diag/D_off |")
    lines = [head, "|" + "---|" * 8]

    def f(x: float, digits: int = 2) -> str:
        return "n/a" if not np.isfinite(x) else f"{x:.{digits}f}"

    for name, st in stats_by_sae.items():
        m = st.medians()
        lines.append(f"| {name} | {len(st.sizes)} | {f(m['f_inc'], 3)} | {f(m['size'], 1)} | {f(m['R(p,C)'])} | "
                     f"{f(m['R_act'])} | {f(m['C_diag/C_off'])} | {f(m['D_diag/D_off'])} |")
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------
# Figures


def plot_permuted_cooccurrence(cooc: Cooccurrence, families: Sequence[Family], path: str, *, max_features: int = 400,
                               normalized: bool = True) -> str:
    """Fig. 2: C (frequency-normalised by default) permuted into family blocks, first
    ``max_features`` latents of the order, log colour scale."""
    from matplotlib.patches import Rectangle

    order = block_order(families, cooc.n_latents)[:max_features]
    M = _dense(normalize_frequency(cooc)) if normalized else _dense(cooc.counts).astype(float)
    sub = M[np.ix_(order, order)]
    fig, ax = new_figure(5, 5)
    im = ax.imshow(np.log10(sub + 1e-4), cmap="magma", interpolation="nearest")
    pos = 0
    for f in sorted(families, key=lambda f: (-len(f.members), f.parent)):
        size = len(f.members)
        if pos + size > len(order):
            break
        ax.add_patch(Rectangle((pos - 0.5, pos - 0.5), size, size, fill=False, edgecolor="cyan", lw=0.6))
        pos += size
    fig.colorbar(im, ax=ax, label="log10 normalised co-occurrence")
    ax.set_title("co-occurrence permuted by feature families")
    save_figure(fig, path, dpi=130)
    return path


def plot_family_stats(stats: FamilyStats, path: str) -> str:
    """Fig. 14: histograms of family sizes, R(p, C) and in-block/off-block ratios; Fig. 16 inset:
    new families per iteration."""
    fig, axes = new_figure(14, 3.2, ncols=4)
    for ax, data, title in ((axes[0], stats.sizes, "family size"), (axes[1], stats.r_cooc, "R(p, C)"),
                            (axes[2], stats.c_diag_over_off, "C_diag / C_off")):
        d = np.asarray(data, dtype=float)
        d = d[np.isfinite(d)]
        ax.hist(d, bins=20, color="C0")
        ax.set_title(title)
    its = sorted(stats.per_iteration)
    axes[3].bar(its, [stats.per_iteration[i] for i in its], color="C1")
    axes[3].set_title("new families per iteration")
    axes[3].set_xlabel("iteration")
    save_figure(fig, path, dpi=130)
    return path
