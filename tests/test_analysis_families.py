"""Feature families (paper and precise methods) and their metrics."""

from __future__ import annotations

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
