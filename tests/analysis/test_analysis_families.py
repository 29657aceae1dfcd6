"""Feature families (paper and precise methods) and their metrics."""

from __future__ import annotations

import math

import numpy as np
import pytest

import fastsae
from fastsae.analysis import (
    Family,
    block_order,
    deduplicate,
    family_stats,
    feature_families,
    parent_child_ratio,
    plot_family_stats,
    plot_permuted_cooccurrence,
)
from fastsae.synthetic import planted_hierarchy_codes

PNG = b"\x89PNG\r\n\x1a\n"


def hand_built_codes(seed=0, n=30, n_rows=6000, background=True):
    """Two families with known structure plus background noise latents.

    Family A: parent 3, children 10, 11, 12, 13 (exactly one child per A-document).
    Family B: parent 20, children 5, 6, 7 (exactly one child per B-document).
    Every document is an A- or a B-document and (with ``background``) carries 2 random
    background latents from {0, 1, 2, 25..29} that fire independently of the families."""
    rng = np.random.default_rng(seed)
    A, B = (3, [10, 11, 12, 13]), (20, [5, 6, 7])
    bg_ids = np.array([0, 1, 2, 25, 26, 27, 28, 29])
    idx = np.zeros((n_rows, 4), dtype=np.int64)
    val = np.ones((n_rows, 4), dtype=np.float32)
    for r in range(n_rows):
        p, cs = A if rng.random() < 0.55 else B
        idx[r, 0] = p
        idx[r, 1] = cs[rng.integers(len(cs))]
        idx[r, 2:] = rng.choice(bg_ids, 2, replace=False)
        val[r] = rng.uniform(0.5, 2.0, 4)
        if not background:
            val[r, 2:] = 0.0  # padding
    return idx, val, n, {A[0]: set(A[1]), B[0]: set(B[1])}


@pytest.mark.parametrize("method, background", [("paper", False), ("precise", False), ("precise", True)],
                         ids=["paper", "precise", "precise_with_background"])
def test_hand_built_families_are_found_exactly(method, background):
    idx, val, n, truth = hand_built_codes(background=background)
    cooc = fastsae.cooccurrence(idx, val, n)
    fams = feature_families(cooc, method=method)
    got = {f.parent: set(f.children) for f in fams}
    assert got == truth, got
    for f in fams:
        assert f.depth == [1] * len(f.children)
        assert f.iteration == 0


@pytest.mark.parametrize("method", ["paper", "precise"])
def test_result_does_not_depend_on_feature_order(method):
    data = planted_hierarchy_codes(30000, 400, 16, n_families=10, children_per_family=5, seed=2)
    base = feature_families(fastsae.cooccurrence(data.indices, data.values, 400), method=method)
    perm = np.random.default_rng(7).permutation(400)  # new id of old latent i is perm[i]
    inv = np.argsort(perm)
    permuted = feature_families(fastsae.cooccurrence(perm[data.indices], data.values, 400), method=method)
    mapped = sorted((int(inv[f.parent]), [int(inv[c]) for c in f.children], f.depth, f.iteration) for f in permuted)
    original = sorted((f.parent, f.children, f.depth, f.iteration) for f in base)
    assert mapped == original
    assert len(base) >= 8


def test_planted_families_precision_and_recall():
    data = planted_hierarchy_codes(60000, 1024, 24, n_families=20, children_per_family=6, seed=4)
    cooc = fastsae.cooccurrence(data.indices, data.values, 1024)
    planted = {int(p): set(map(int, cs)) for p, cs in zip(data.parents, data.children)}
    for method in ("paper", "precise"):
        fams = feature_families(cooc, method=method)
        correct = [f for f in fams if f.parent in planted and 2 * len(set(f.children) & planted[f.parent]) >= len(f.children)]
        recalled = [p for p, cs in planted.items() if any(f.parent == p and 2 * len(set(f.children) & cs) >= len(cs) for f in fams)]
        assert len(recalled) / len(planted) >= 0.9, method
        if method == "precise":
            assert len(correct) / len(fams) >= 0.8


def test_feature_filter_and_iterations():
    idx, val, n, truth = hand_built_codes()
    cooc = fastsae.cooccurrence(idx, val, n)
    allowed = [i for i in range(n) if i != 3]  # drop parent A: its children lose their parent
    fams = feature_families(cooc, features=allowed)
    assert all(f.parent != 3 and 3 not in f.children for f in fams)
    # iterations=0 runs the first pass only; more passes never lose first-pass families
    first = {(f.parent, tuple(f.children)) for f in feature_families(cooc, iterations=0)}
    more = {(f.parent, tuple(f.children)) for f in feature_families(cooc, iterations=3)}
    assert first <= more


def test_deduplicate_brute_force():
    fams = [Family(1, [2, 3, 4, 5], [1] * 4, 0), Family(9, [2, 3, 4], [1] * 3, 1),  # J = 3/4 > 0.6: dropped
            Family(7, [2, 3, 8, 10], [1] * 4, 0), Family(11, [12, 13], [1, 1], 0)]
    kept = deduplicate(fams, 0.6)
    assert [f.parent for f in kept] == [1, 7, 11]  # J(1, 7) = 2/6 <= 0.6: both kept


def test_metrics_against_brute_force(tmp_path):
    idx, val, n, truth = hand_built_codes()
    cooc = fastsae.cooccurrence(idx, val, n)
    fams = feature_families(cooc)
    stats = family_stats(cooc, fams)
    C, D = cooc.counts.astype(float), cooc.act_sim
    for f, r, rd, cd in zip(fams, stats.r_cooc, stats.r_act, stats.c_diag_over_off):
        ch = f.children
        num = np.mean([C[i, f.parent] for i in ch])
        den = np.mean([sum(C[i, j] for j in ch if j != i) for i in ch])
        assert r == (num / den if den > 0 else np.inf)
        numd = np.mean([D[i, f.parent] for i in ch])
        dend = np.mean([sum(D[i, j] for j in ch if j != i) for i in ch])
        assert rd == pytest.approx(numd / dend if dend > 0 else np.inf)
        mem = f.members
        inside = [C[i, j] for i in mem for j in mem if i != j]
        outside = [C[i, j] for i in mem for j in range(n) if j not in mem]
        assert cd == pytest.approx(np.mean(inside) / np.mean(outside))
    assert list(stats.sizes) == [len(f.members) for f in fams]
    assert stats.f_inc == pytest.approx(len({m for f in fams for m in f.members}) / n)
    assert sum(stats.per_iteration.values()) == len(fams)
    order = block_order(fams, n)
    assert sorted(order.tolist()) == list(range(n))
    assert np.isnan(parent_child_ratio(C, 3, []))
    assert stats.medians()["size"] == np.median(stats.sizes)
    for path in (plot_permuted_cooccurrence(cooc, fams, str(tmp_path / "fig2.png")),
                 plot_family_stats(stats, str(tmp_path / "fig14.png"))):
        assert open(path, "rb").read(8) == PNG


def test_bad_input():
    idx, val, n, _ = hand_built_codes(n_rows=200)
    cooc = fastsae.cooccurrence(idx, val, n)
    with pytest.raises(TypeError, match="Cooccurrence"):
        feature_families(np.eye(3))
    with pytest.raises(ValueError, match="method"):
        feature_families(cooc, method="magic")
    with pytest.raises(ValueError, match="out of range"):
        feature_families(cooc, features=[0, 99])
    with pytest.raises(ValueError, match="dedup_jaccard"):
        feature_families(cooc, dedup_jaccard=2)


@pytest.mark.parametrize("method", ["paper", "precise"])
def test_sparse_results_give_the_same_families(method):
    data = planted_hierarchy_codes(20000, 500, 16, n_families=10, children_per_family=5, seed=2)
    dense = feature_families(fastsae.cooccurrence(data.indices, data.values, 500), method=method)
    sparse = feature_families(fastsae.cooccurrence(data.indices, data.values, 500, dense=False), method=method)
    assert [(f.parent, f.children, f.depth) for f in dense] == [(f.parent, f.children, f.depth) for f in sparse]


# ------------------------------------------------------------------------------------------------
# method="precise": candidates co-fire beyond chance (z >= precise_min_z), the parent maximises
# Loevinger's H(c -> p) = (P(p|c) - P(p)) / (1 - P(p))


def suppressed_parent_codes():
    """Rows 0..449 are family rows in blocks of 5: block b carries child 2 + b % 3, and parent 1
    fires on the block when (b // 3) % 3 != 0, so P(1 | child) = 2/3 exactly (a parent that top-k
    or absorption drops on a third of its children's rows). Latent 0 is dense and unrelated: it
    fires on 4 of every 5 rows everywhere, so P(0 | child) = P(0) = 0.8 > P(1 | child). Latent 9
    fires on every row. Latent 5 fills rows 450.. where latent 0 is off. Padding ids 6..8."""
    n_rows, n = 1000, 10
    idx = np.tile(np.array([6, 7, 8, 9]), (n_rows, 1))
    val = np.zeros((n_rows, 4), dtype=np.float32)
    val[:, 3] = 1.0
    for r in range(n_rows):
        if r % 5 < 4:
            idx[r, 0], val[r, 0] = 0, 1.0 + 0.1 * (r % 7)
        elif r >= 450:
            idx[r, 0], val[r, 0] = 5, 1.0
        if r < 450:
            b = r // 5
            idx[r, 2], val[r, 2] = 2 + b % 3, 0.5 + 0.1 * (r % 3)
            if (b // 3) % 3 != 0:
                idx[r, 1], val[r, 1] = 1, 1.5
    return idx, val, n


def test_precise_scores_parents_against_chance():
    idx, val, n = suppressed_parent_codes()
    cooc = fastsae.cooccurrence(idx, val, n)
    C, f, N = np.asarray(cooc.counts), cooc.freq, cooc.n_rows
    assert list(f[[0, 1, 2, 3, 4, 9]]) == [800, 300, 150, 150, 150, 1000]
    for c in (2, 3, 4):  # raw co-firing favours the dense unrelated latent 0 ...
        assert C[0, c] / f[c] == pytest.approx(0.8) and C[1, c] / f[c] == pytest.approx(2 / 3)
        assert C[9, c] == f[c]  # ... and the always-on latent 9 co-fires every time
    # H(c -> 0) = (0.8 - 0.8) / 0.2 = 0, latent 9 is never a parent (P(9) = 1),
    # H(c -> 1) = (2/3 - 0.3) / 0.7 and z(c -> 1) = (100 - 45) / sqrt(45 * 0.7)
    for min_z in (0.0, 5.0):
        fams = feature_families(cooc, method="precise", precise_min_z=min_z)
        assert [(f.parent, sorted(f.children), f.depth) for f in fams] == [(1, [2, 3, 4], [1, 1, 1])]
    h, z = (2 / 3 - 0.3) / 0.7, 55 / np.sqrt(45 * 0.7)  # 0.524, 9.80
    assert feature_families(cooc, method="precise", precise_threshold=h - 1e-9)
    assert not feature_families(cooc, method="precise", precise_threshold=h + 1e-9)
    assert feature_families(cooc, method="precise", precise_min_z=z - 1e-9)
    assert not feature_families(cooc, method="precise", precise_min_z=z + 1e-9)
    # without the true parent, nothing is left that c implies beyond chance: no false family
    assert not feature_families(cooc, method="precise", features=[0, 2, 3, 4, 5, 9], precise_threshold=0.01,
                                precise_min_z=0.0)


def test_precise_ignores_chance_cofiring_with_a_near_constant_latent():
    """Latent 0 fires on 98% of the rows (off on rows r % 50 == 0); latents 1..4 fire on 30 rows
    each, all with latent 0 on, as happens by chance (0.98**30 = 0.55): P(0 | c) = 1, so H = 1,
    yet z = (30 - 29.4) / sqrt(29.4 * 0.02) = 0.78 -- no evidence of any relation."""
    n_rows, n = 2000, 8
    idx = np.tile(np.array([0, 6, 7]), (n_rows, 1))
    val = np.zeros((n_rows, 3), dtype=np.float32)
    val[:, 0] = (np.arange(n_rows) % 50 != 0).astype(np.float32)
    for c in range(1, 5):
        rows = [r for r in range(n_rows) if r % 50 != 0 and r % 7 == c][:30]
        idx[rows, 1], val[rows, 1] = c, 1.0
    idx[::50, 1], val[::50, 1] = 5, 1.0  # latent 5 on the rows latent 0 is off
    cooc = fastsae.cooccurrence(idx, val, n)
    assert list(cooc.freq[:5]) == [1960, 30, 30, 30, 30]
    assert not feature_families(cooc, method="precise")
    chance = feature_families(cooc, method="precise", precise_min_z=0.0)  # H alone is fooled
    assert [(f.parent, sorted(f.children)) for f in chance] == [(0, [1, 2, 3, 4])]


def brute_force_precise(cooc, threshold, min_z, family_min_children, keep):
    """The precise rule written out pair by pair (no blocks, no vectorisation)."""
    n, N = cooc.n_latents, cooc.n_rows
    C = np.asarray(cooc.counts.toarray() if hasattr(cooc.counts, "toarray") else cooc.counts)
    f = [int(x) for x in cooc.freq]
    d = np.asarray(cooc.act_sim.diagonal() if hasattr(cooc.act_sim, "toarray") else np.diag(cooc.act_sim))
    dense_key = {i: (f[i], float(d[i]), i) for i in range(n)}  # density order, ids break exact ties
    parent = {}
    for c in range(n):
        if not keep[c] or f[c] == 0:
            continue
        best = None
        for p in range(n):
            if p == c or not keep[p] or dense_key[p] <= dense_key[c] or C[p, c] == 0:
                continue
            base = f[p] / N
            if base == 1.0:
                continue
            z = (C[p, c] - f[c] * base) / math.sqrt(f[c] * base * (1.0 - base))
            if z < min_z:
                continue
            h = (C[p, c] / f[c] - base) / (1.0 - base)
            if best is None or (h, dense_key[p]) > (best[0], dense_key[best[1]]):
                best = (h, p)
        if best is not None and best[0] >= threshold:
            parent[c] = best[1]
    direct = {}
    for c, p in parent.items():
        direct.setdefault(p, []).append(c)

    def below(p):
        out = set()
        for c in direct.get(p, []):
            out |= {c} | below(c)
        return out

    return {p: below(p) for p, cs in direct.items() if len(cs) > family_min_children}


@pytest.mark.parametrize("threshold, min_z", [(0.05, 0.0), (0.05, 3.0), (0.3, 5.0), (0.6, 1.0)])
@pytest.mark.parametrize("filtered", [False, True])
def test_precise_matches_brute_force(threshold, min_z, filtered):
    data = planted_hierarchy_codes(3000, 60, 6, n_families=5, children_per_family=4, seed=3)
    rng = np.random.default_rng(5)
    val = data.values.copy()
    val[rng.random(val.shape) < 0.25] = 0.0  # drop a quarter of all activations (parents too)
    cooc = fastsae.cooccurrence(data.indices, val, 60)
    keep = np.ones(60, dtype=bool)
    if filtered:
        keep[rng.choice(60, 12, replace=False)] = False
    features = np.flatnonzero(keep) if filtered else None
    for fmc in (0, 2):
        fams = feature_families(cooc, method="precise", precise_threshold=threshold, precise_min_z=min_z,
                                family_min_children=fmc, dedup_jaccard=1.0, features=features)
        got = {f.parent: set(f.children) for f in fams}
        assert len(got) == len(fams)
        assert got == brute_force_precise(cooc, threshold, min_z, fmc, keep)
        assert got


def test_precise_bad_parameters():
    idx, val, n, _ = hand_built_codes(n_rows=200)
    cooc = fastsae.cooccurrence(idx, val, n)
    for bad in (0, 1.5):
        with pytest.raises(ValueError, match="precise_threshold"):
            feature_families(cooc, method="precise", precise_threshold=bad)
    for bad in (-1.0, float("inf"), float("nan"), "3"):
        with pytest.raises(ValueError, match="precise_min_z"):
            feature_families(cooc, method="precise", precise_min_z=bad)


def test_figures_never_touch_pyplot_or_the_global_backend():
    """Every analysis figure is drawn through fastsae._plot (an Agg canvas): plotting in a fresh
    interpreter leaves pyplot unimported and matplotlib's backend as the user set it."""
    from conftest import run_python

    code = '''
import sys, numpy as np, matplotlib
matplotlib.use("svg")
import fastsae
from fastsae.analysis import feature_families, family_stats, plot_family_stats, plot_permuted_cooccurrence
from fastsae.analysis import geometry, splitting
rng = np.random.default_rng(0)
idx = np.stack([rng.choice(np.arange(1, 12), 3, replace=False) for _ in range(300)])
idx[:150, 0] = 0  # latent 0 fires with everything in half the rows: a parent
cooc = fastsae.cooccurrence(idx, rng.uniform(0.5, 1.0, idx.shape), 12)
fams = feature_families(cooc)
plot_permuted_cooccurrence(cooc, fams, "f2.png")
plot_family_stats(family_stats(cooc, fams), "f14.png")
W = rng.normal(size=(12, 6))
geometry.plot_log_density({"a": geometry.log_feature_density(cooc)}, "fd.png")
splitting.plot_nn_cosines({"a": splitting.decoder_similarity(W, W[:5] + 0.1)}, "nn.png")
for p in ("f2.png", "f14.png", "fd.png", "nn.png"):
    assert open(p, "rb").read(8) == b"\\x89PNG\\r\\n\\x1a\\n", p
print("pyplot" if "matplotlib.pyplot" in sys.modules else "no-pyplot", matplotlib.get_backend())
'''
    import os
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        cwd = os.getcwd()
        os.chdir(d)
        try:
            out = run_python(code, timeout=300)
        finally:
            os.chdir(cwd)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.split() == ["no-pyplot", "svg"]
