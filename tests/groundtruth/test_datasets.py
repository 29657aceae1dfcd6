"""fastsae.datasets: planted-family embedding corpora, true codes, and recovery metrics."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest
import scipy.sparse as sp

from fastsae.datasets import (
    PlantedCorpus,
    family_recovery,
    family_recovery_by_ids,
    features_recovered,
    planted_codes_from_corpus,
    planted_embeddings,
)

N_DOCS, D = 3000, 32


@pytest.fixture(scope="module")
def corpus() -> PlantedCorpus:
    return planted_embeddings(N_DOCS, D, seed=7)


def active(c: PlantedCorpus) -> np.ndarray:
    """[n_docs, n_true] bool: which true features are active on each document."""
    return (c.activations > 0).toarray()


def topic_counts(c: PlantedCorpus) -> np.ndarray:
    """Documents per topic (families first, then isolated), read off the truth."""
    A = active(c)
    ids = [p for p, _ in c.families] + list(c.isolated)
    return A[:, ids].sum(axis=0)


def ranks(x: np.ndarray) -> np.ndarray:
    r = np.empty(len(x))
    r[np.argsort(x, kind="stable")] = np.arange(len(x))
    return r


# --------------------------------------------------------------------------------------------
# Corpus: determinism, shapes, structure
# --------------------------------------------------------------------------------------------


def assert_same_corpus(a: PlantedCorpus, b: PlantedCorpus) -> None:
    np.testing.assert_array_equal(a.embeddings, b.embeddings)
    np.testing.assert_array_equal(a.features, b.features)
    assert (a.activations != b.activations).nnz == 0
    assert a.families == b.families and a.isolated == b.isolated
    np.testing.assert_array_equal(a.topic_probabilities, b.topic_probabilities)


def test_same_seed_same_corpus():
    assert_same_corpus(planted_embeddings(500, 16, seed=3), planted_embeddings(500, 16, seed=3))


def test_different_seed_different_corpus():
    a, b = planted_embeddings(500, 16, seed=3), planted_embeddings(500, 16, seed=4)
    assert a.families != b.families
    assert not np.array_equal(a.embeddings, b.embeddings)
    assert not np.array_equal(a.topic_probabilities, b.topic_probabilities)


def test_structure_independent_of_n_docs_and_noise():
    a = planted_embeddings(300, 16, seed=5, noise=0.0)
    b = planted_embeddings(700, 16, seed=5, noise=0.2)
    np.testing.assert_array_equal(a.features, b.features)
    assert a.families == b.families and a.isolated == b.isolated
    c = planted_embeddings(300, 16, seed=5, noise=0.2)  # noise changes embeddings only
    assert (a.activations != c.activations).nnz == 0
    assert not np.array_equal(a.embeddings, c.embeddings)


CONFIGS = {
    "defaults": dict(),
    "fixed_children": dict(n_families=5, children_per_family=4, n_isolated=3),
    "families_only": dict(n_families=4, n_isolated=0, topics_per_doc=2),
    "isolated_only": dict(n_families=0, n_isolated=10, topics_per_doc=(1, 4)),
    "one_child": dict(n_families=3, children_per_family=1, n_isolated=0, topics_per_doc=1),
}


@pytest.mark.parametrize("kw", list(CONFIGS.values()), ids=list(CONFIGS))
def test_shapes_dtypes_and_layout(kw):
    c = planted_embeddings(400, 24, seed=1, **kw)
    n_fam = kw.get("n_families", 20)
    n_iso = kw.get("n_isolated", 20)
    lo, hi = (kw["children_per_family"],) * 2 if isinstance(kw.get("children_per_family"), int) else (3, 8)
    assert c.embeddings.shape == (400, 24) and c.embeddings.dtype == np.float32
    assert c.features.dtype == np.float32 and c.features.shape[1] == 24
    assert sp.isspmatrix_csr(c.activations) and c.activations.dtype == np.float32
    assert c.activations.shape == (400, c.n_true) and c.activations.has_sorted_indices
    assert (c.n_docs, c.d) == (400, 24)
    assert len(c.families) == n_fam and len(c.isolated) == n_iso
    assert all(lo <= len(ch) <= hi for _, ch in c.families)
    # Every feature id appears exactly once as a parent, child or isolated feature.
    ids = [p for p, _ in c.families] + [i for _, ch in c.families for i in ch] + c.isolated
    assert sorted(ids) == list(range(c.n_true))
    assert c.parent_of.dtype == np.int64 and c.parent_of.shape == (c.n_true,)
    for p, ch in c.families:
        assert c.parent_of[p] == -1 and all(c.parent_of[i] == p for i in ch)
    assert np.all(c.parent_of[c.isolated] == -1)
    assert c.topic_probabilities.shape == (n_fam + n_iso,)
    assert math.isclose(c.topic_probabilities.sum(), 1.0)
    assert np.all(c.activations.data > 0)  # non-negative (in fact positive) coefficients
    assert np.all(np.diff(c.activations.indptr) >= 1)  # every document has something active
    ids0, vals0 = c.active_features(0)
    assert ids0.dtype == np.int64 and vals0.dtype == np.float32
    np.testing.assert_array_equal(ids0, c.activations[0].indices)


def test_features_unit_norm(corpus):
    np.testing.assert_allclose(np.linalg.norm(corpus.features.astype(np.float64), axis=1), 1.0, atol=1e-6)


@pytest.mark.parametrize("cos", [0.0, 0.3, 0.8], ids=["orthogonal", "default", "close"])
def test_child_parent_cosine(cos):
    c = planted_embeddings(10, 64, seed=2, child_cosine=cos)
    F = c.features.astype(np.float64)
    for p, ch in c.families:
        np.testing.assert_allclose(F[ch] @ F[p], cos, atol=1e-6)


def test_children_activate_parent(corpus):
    A = active(corpus)
    for p, ch in corpus.families:
        child_docs = A[:, ch].any(axis=1)
        assert child_docs.sum() > 0
        assert np.all(A[child_docs, p]), f"a child of family {p} fired without its parent"
    # ... and parents also fire alone (child_prob < 1)
    alone = [A[:, p] & ~A[:, ch].any(axis=1) for p, ch in corpus.families]
    assert all(a.sum() > 0 for a in alone[:5])


@pytest.mark.parametrize(
    "child_prob,expect", [(0.0, "none"), (1.0, "always")], ids=["parent_only", "always_child"]
)
def test_child_prob_extremes(child_prob, expect):
    c = planted_embeddings(500, 16, seed=4, child_prob=child_prob)
    A = active(c)
    for p, ch in c.families:
        with_child = A[:, ch].any(axis=1)
        if expect == "none":
            assert not with_child.any()
        else:
            np.testing.assert_array_equal(with_child, A[:, p])


def test_children_rarely_cooccur(corpus):
    A = active(corpus)
    child_docs = two = 0
    for _, ch in corpus.families:
        n = A[:, ch].sum(axis=1)
        child_docs += (n >= 1).sum()
        two += (n >= 2).sum()
    assert child_docs > 1000
    assert two / child_docs < 0.05
    assert two > 0  # "mostly" exclusive: the default child_cooccur_prob is 2%
    c0 = planted_embeddings(N_DOCS, D, seed=7, child_cooccur_prob=0.0)
    A0 = active(c0)
    assert all(A0[:, ch].sum(axis=1).max() <= 1 for _, ch in c0.families)


def test_zipf_frequencies(corpus):
    counts = topic_counts(corpus)
    p = corpus.topic_probabilities
    # Ranks of the observed frequencies follow the planted law (Spearman correlation).
    rho = np.corrcoef(ranks(counts), ranks(p))[0, 1]
    assert rho > 0.9
    order = np.argsort(-p)
    top, bottom = counts[order[:5]].sum(), counts[order[-5:]].sum()
    assert top > 5 * bottom
    # The law itself: p ~ 1 / rank ** alpha.
    np.testing.assert_allclose(np.sort(p)[::-1][0] / np.sort(p)[::-1][3], 4.0)


def test_zipf_alpha_zero_is_uniform():
    c = planted_embeddings(N_DOCS, D, seed=7, zipf_alpha=0.0, topics_per_doc=1)
    counts = topic_counts(c)
    np.testing.assert_allclose(c.topic_probabilities, 1 / len(counts))
    expected = N_DOCS / len(counts)
    assert np.all(np.abs(counts - expected) < 6 * math.sqrt(expected))


@pytest.mark.parametrize("tpd", [1, (2, 3)], ids=["one_topic", "two_or_three"])
def test_topics_per_doc(tpd):
    c = planted_embeddings(400, 16, seed=8, topics_per_doc=tpd, child_prob=0.0)
    lo, hi = (tpd, tpd) if isinstance(tpd, int) else tpd
    n_active = np.diff(c.activations.indptr)  # parent-only families: one feature per topic
    assert n_active.min() == lo and n_active.max() == hi


def test_embeddings_are_truth_times_features_noiseless():
    c = planted_embeddings(800, 32, seed=9, noise=0.0)
    expected = c.activations.astype(np.float64) @ c.features.astype(np.float64)
    np.testing.assert_array_equal(c.embeddings, expected.astype(np.float32))
    np.testing.assert_allclose(c.embeddings, expected, rtol=1e-6, atol=1e-6)


def test_embeddings_noise_level():
    noise, d = 0.1, 64
    c = planted_embeddings(2000, d, seed=9, noise=noise)
    resid = c.embeddings - c.activations.astype(np.float64) @ c.features.astype(np.float64)
    assert abs(resid.mean()) < 0.01 * noise
    np.testing.assert_allclose(resid.std(), noise / math.sqrt(d), rtol=0.02)
    np.testing.assert_allclose(np.sqrt((np.linalg.norm(resid, axis=1) ** 2).mean()), noise, rtol=0.02)


# --------------------------------------------------------------------------------------------
# True codes
# --------------------------------------------------------------------------------------------


def codes_to_csr(indices, values, n_true):
    keep = values > 0
    rows = np.repeat(np.arange(indices.shape[0]), indices.shape[1])[keep.ravel()]
    return sp.csr_matrix((values[keep], (rows, indices[keep])), shape=(indices.shape[0], n_true))


def test_planted_codes_round_trip(corpus):
    idx, val = planted_codes_from_corpus(corpus)
    k_max = np.diff(corpus.activations.indptr).max()
    assert idx.shape == val.shape == (N_DOCS, k_max)
    assert idx.dtype == np.int64 and val.dtype == np.float32
    assert idx.min() >= 0 and idx.max() < corpus.n_true
    assert np.all(np.diff(val, axis=1) <= 0)  # value descending, padding (0) last
    assert (codes_to_csr(idx, val, corpus.n_true) != corpus.activations).nnz == 0
    # padding repeats a valid id of the row (the first)
    pad = val == 0
    np.testing.assert_array_equal(idx[pad], np.broadcast_to(idx[:, :1], idx.shape)[pad])


def test_planted_codes_wider_k_and_too_small_k(corpus):
    k_max = np.diff(corpus.activations.indptr).max()
    idx, val = planted_codes_from_corpus(corpus, k=k_max + 3)
    assert idx.shape == (N_DOCS, k_max + 3) and np.all(val[:, k_max:] == 0)
    assert (codes_to_csr(idx, val, corpus.n_true) != corpus.activations).nnz == 0
    with pytest.raises(ValueError, match="smaller than"):
        planted_codes_from_corpus(corpus, k=k_max - 1)


def test_planted_codes_feed_cooccurrence(corpus):
    from fastsae.cooc import cooccurrence

    idx, val = planted_codes_from_corpus(corpus)
    res = cooccurrence(idx, val, corpus.n_true)
    A = corpus.activations.copy()
    A.data[:] = 1
    C = (A.T @ A).toarray().astype(np.int64)
    np.testing.assert_array_equal(res.counts, C)
    np.testing.assert_array_equal(res.freq, np.diag(C))


# --------------------------------------------------------------------------------------------
# Feature recovery
# --------------------------------------------------------------------------------------------


def brute_force(W, F, threshold):
    W = np.asarray(W, np.float64)
    F = np.asarray(F, np.float64)
    wn = np.linalg.norm(W, axis=1)
    cos = np.array(
        [[(w @ f) / (np.linalg.norm(w) * np.linalg.norm(f)) if n > 0 else 0.0 for f in F] for w, n in zip(W, wn)]
    )  # [n_latents, n_true]
    best = cos.max(axis=0)
    arg = cos.argmax(axis=0)
    return best, arg, best >= threshold


@pytest.mark.parametrize("threshold", [0.5, 0.9, 0.99], ids=["t0.5", "t0.9", "t0.99"])
def test_features_recovered_matches_brute_force(corpus, threshold):
    rng = np.random.default_rng(0)
    F = corpus.features[:40]
    # Some latents are noisy copies of true features (scaled), some random, one dead (zero).
    noisy = 3.0 * F[:25] + rng.normal(scale=0.08, size=(25, D))
    W = np.concatenate([rng.normal(size=(30, D)), noisy, np.zeros((1, D))])[rng.permutation(56)]
    r = features_recovered(W.astype(np.float32), F, threshold=threshold)
    best, arg, rec = brute_force(W.astype(np.float32), F, threshold)
    np.testing.assert_allclose(r.best_cosine, best, atol=1e-9)
    np.testing.assert_array_equal(r.best_latent, arg)
    np.testing.assert_array_equal(r.recovered, rec)
    assert r.fraction == pytest.approx(rec.mean())
    assert r.matching == {int(t): int(arg[t]) for t in np.flatnonzero(rec)}
    assert r.n_recovered == rec.sum() and r.threshold == threshold
    assert 0 < rec.sum() < 40 or threshold == 0.5


def test_features_recovered_exact_on_permutation(corpus):
    perm = np.random.default_rng(1).permutation(corpus.n_true)
    W = corpus.features[perm] * 2.5  # latent i is true feature perm[i], rescaled
    r = features_recovered(W, corpus.features)
    assert r.fraction == 1.0 and r.recovered.all()
    np.testing.assert_allclose(r.best_cosine, 1.0, atol=1e-6)
    inv = np.argsort(perm)
    assert r.matching == {t: int(inv[t]) for t in range(corpus.n_true)}
    assert r.latent_to_true == {int(i): int(perm[i]) for i in range(corpus.n_true)}


def test_features_recovered_torch_and_extra_latents(corpus):
    torch = pytest.importorskip("torch")
    W = np.concatenate([np.random.default_rng(2).normal(size=(50, D)), corpus.features])
    r = features_recovered(torch.tensor(W, dtype=torch.float32, requires_grad=True), corpus.features)
    assert r.fraction == 1.0
    np.testing.assert_array_equal(r.best_latent, 50 + np.arange(corpus.n_true))


def test_features_recovered_from_a_standardised_sae_uses_input_space_directions(corpus):
    """A TopKSAE whose input-space directions are the planted features (W_dec = F[perm] / std,
    as a model standardised with per-dimension std would hold them) recovers every feature;
    its raw W_dec, in the standardised space, does not."""
    torch = pytest.importorskip("torch")
    import fastsae

    perm = np.random.default_rng(4).permutation(corpus.n_true)
    std = np.logspace(-1, 1, D)[np.random.default_rng(5).permutation(D)]
    W = corpus.features[perm] / std
    sae = fastsae.TopKSAE(D, corpus.n_true, 2, dtype=torch.float64)
    with torch.no_grad():
        sae.W_dec.copy_(torch.from_numpy(W / np.linalg.norm(W, axis=1, keepdims=True)))
    sae.set_standardization(torch.full((D,), 3.0, dtype=torch.float64), torch.from_numpy(std))
    r = features_recovered(sae, corpus.features)
    assert r.fraction == 1.0
    np.testing.assert_allclose(r.best_cosine, 1.0, atol=1e-9)
    inv = np.argsort(perm)
    assert r.matching == {t: int(inv[t]) for t in range(corpus.n_true)}
    # the same through the accessor
    r2 = features_recovered(sae.feature_directions(), corpus.features)
    np.testing.assert_array_equal(r2.best_latent, r.best_latent)
    wrong = features_recovered(sae.W_dec, corpus.features)
    assert wrong.fraction < 0.5


def test_latent_to_true_shared_latent():
    # One latent is the best match of two close true features: it maps to the closer one.
    F = np.array([[1.0, 0.0, 0.0], [0.995, 0.0998, 0.0], [0.0, 0.0, 1.0]])
    W = np.array([[1.0, 0.02, 0.0], [0.0, 0.0, 1.0]])
    r = features_recovered(W, F, threshold=0.9)
    assert r.matching == {0: 0, 1: 0, 2: 1}
    assert r.latent_to_true == {0: 0, 1: 2}


# --------------------------------------------------------------------------------------------
# Family recovery (hand-built answers)
# --------------------------------------------------------------------------------------------

TRUE = [(0, [1, 2, 3]), (4, [5, 6]), (7, [8, 9, 10, 11])]
L2T = {100: 0, 101: 1, 102: 2, 103: 3, 104: 4, 105: 5, 106: 6, 107: 7, 108: 8}
FOUND = [
    (100, [101, 102]),  # T0, children {1,2} vs {1,2,3}: J = 2/3
    (104, [105, 199]),  # T1, {5} (199 unmatched) vs {5,6}: J = 1/2 (1/3 counting 199)
    (107, [108]),  # T2, {8} vs {8,9,10,11}: J = 1/4
    (199, [101, 102, 103]),  # parent has no match
    (101, [102, 103]),  # parent maps to a child, not a true parent
    (100, [101, 102, 103]),  # T0 again (duplicate), J = 1
]


@pytest.mark.parametrize(
    "kw,recall,precision",
    [
        (dict(), 2 / 3, 3 / 6),
        (dict(count_unmatched=True), 1 / 3, 2 / 6),
        (dict(jaccard=0.7), 1 / 3, 1 / 6),
        (dict(jaccard=0.25), 3 / 3, 4 / 6),
        (dict(jaccard=0.0), 3 / 3, 4 / 6),
    ],
    ids=["default", "count_unmatched", "jaccard0.7", "jaccard0.25", "jaccard0"],
)
def test_family_recovery_hand_built(kw, recall, precision):
    r = family_recovery(FOUND, TRUE, L2T, **kw)
    assert r.recall == pytest.approx(recall)
    assert r.precision == pytest.approx(precision)
    assert (r.n_true, r.n_found) == (3, 6)
    assert r.n_true_matched == round(recall * 3) and r.n_found_matched == round(precision * 6)


def test_family_recovery_details():
    r = family_recovery(FOUND, TRUE, L2T)
    assert [t.best_found for t in r.true_details] == [5, 1, 2]
    assert [t.jaccard for t in r.true_details] == pytest.approx([1.0, 0.5, 0.25])
    assert [t.matched for t in r.true_details] == [True, True, False]
    f = r.found_details
    assert [x.mapped_parent for x in f] == [0, 4, 7, -1, 1, 0]
    assert f[1].mapped_children == [5] and f[1].n_unmapped_children == 1
    assert [x.best_true for x in f] == [0, 1, 2, -1, -1, 0]
    assert [x.jaccard for x in f] == pytest.approx([2 / 3, 0.5, 0.25, 0.0, 0.0, 1.0])
    assert [x.matched for x in f] == [True, True, False, False, False, True]
    assert r.f1 == pytest.approx(2 * (2 / 3) * 0.5 / (2 / 3 + 0.5))


@pytest.mark.parametrize("form", ["dict", "array", "feature_recovery"], ids=["dict", "array", "feature_recovery"])
def test_family_recovery_mapping_forms(form):
    if form == "dict":
        m = L2T
    elif form == "array":
        m = np.full(200, -1)
        for k, v in L2T.items():
            m[k] = v
    else:  # decoder rows 100..108 equal true features 0..8 (one-hot), the others match nothing
        F = np.eye(12)
        W = np.zeros((200, 12))
        W[:, 11] = 1.0  # unrelated latents all point at true feature 11 ...
        W[:, 0] = 1.0  # ... at cosine 0.71: below the threshold
        for k, v in L2T.items():
            W[k] = F[v]
        fr = features_recovered(W, F)
        assert fr.latent_to_true == L2T
        m = fr
    found = [SimpleNamespace(parent=p, children=ch) for p, ch in FOUND]  # Family-like objects
    r = family_recovery(found, TRUE, m)
    assert (r.recall, r.precision) == pytest.approx((2 / 3, 0.5))


def test_family_recovery_by_ids():
    found = [(0, [1, 2]), (4, [5]), (7, [8]), (1, [2, 3]), (0, [1, 2, 3])]
    r = family_recovery_by_ids(found, TRUE)
    assert r.recall == pytest.approx(2 / 3) and r.precision == pytest.approx(3 / 5)
    assert [x.matched for x in r.found_details] == [True, True, False, False, True]
    r = family_recovery_by_ids(found, TRUE, jaccard=0.9)
    assert r.recall == pytest.approx(1 / 3) and r.precision == pytest.approx(1 / 5)


def test_family_recovery_empty():
    r = family_recovery_by_ids([], TRUE)
    assert r.recall == 0.0 and math.isnan(r.precision) and r.n_found == 0
    r = family_recovery_by_ids(TRUE, [])
    assert math.isnan(r.recall) and r.precision == 0.0


def test_family_recovery_on_planted_corpus(corpus):
    # The true families against themselves, in true ids and through a permuted "decoder".
    r = family_recovery_by_ids(corpus.families, corpus)
    assert r.recall == 1.0 and r.precision == 1.0
    perm = np.random.default_rng(3).permutation(corpus.n_true)
    fr = features_recovered(corpus.features[perm], corpus.features)
    inv = np.argsort(perm)  # true id -> latent id
    found = [(int(inv[p]), [int(inv[c]) for c in ch]) for p, ch in corpus.families]
    r = family_recovery(found, corpus.families, fr)
    assert r.recall == 1.0 and r.precision == 1.0
    # dropping all but one child of every family with >= 3 children: J <= 1/3 < 0.5
    partial = [(p, ch[:1]) for p, ch in found]
    r = family_recovery(partial, corpus.families, fr)
    n_small = sum(len(ch) <= 2 for _, ch in corpus.families)
    assert r.recall == pytest.approx(n_small / len(corpus.families))


# --------------------------------------------------------------------------------------------
# Parameter validation
# --------------------------------------------------------------------------------------------

BAD_PARAMS = {
    "n_docs_zero": (dict(n_docs=0), "n_docs"),
    "n_docs_float": (dict(n_docs=10.0), "n_docs"),
    "d_one": (dict(d=1), "d must"),
    "negative_families": (dict(n_families=-1), "n_families"),
    "no_topics": (dict(n_families=0, n_isolated=0), "at least one"),
    "children_zero": (dict(children_per_family=0), "children_per_family"),
    "children_reversed": (dict(children_per_family=(5, 2)), "lo must not exceed hi"),
    "children_bad_type": (dict(children_per_family=(1, 2, 3)), "children_per_family"),
    "alpha_negative": (dict(zipf_alpha=-0.5), "zipf_alpha"),
    "alpha_nan": (dict(zipf_alpha=float("nan")), "zipf_alpha"),
    "child_prob_above_one": (dict(child_prob=1.5), "child_prob"),
    "cooccur_negative": (dict(child_cooccur_prob=-0.1), "child_cooccur_prob"),
    "too_many_topics_per_doc": (dict(n_families=2, n_isolated=1, topics_per_doc=(1, 4)), "only"),
    "topics_per_doc_zero": (dict(topics_per_doc=0), "topics_per_doc"),
    "child_cosine_one": (dict(child_cosine=1.0), "child_cosine"),
    "noise_negative": (dict(noise=-0.01), "noise"),
    "noise_inf": (dict(noise=float("inf")), "noise"),
    "seed_negative": (dict(seed=-1), "seed"),
    "seed_bool": (dict(seed=True), "seed"),
}


@pytest.mark.parametrize("kw,match", list(BAD_PARAMS.values()), ids=list(BAD_PARAMS))
def test_planted_embeddings_rejects(kw, match):
    args = dict(n_docs=10, d=8)
    args.update(kw)
    with pytest.raises(ValueError, match=match):
        planted_embeddings(args.pop("n_docs"), args.pop("d"), **args)


BAD_RECOVERY = {
    "dim_mismatch": (lambda: features_recovered(np.ones((4, 3)), np.ones((2, 5))), "dimension"),
    "transposed_hint": (lambda: features_recovered(np.ones((3, 4)), np.ones((2, 3))), "one row per latent"),
    "one_d": (lambda: features_recovered(np.ones(3), np.ones((2, 3))), "2-D"),
    "nan": (lambda: features_recovered(np.full((2, 3), np.nan), np.ones((2, 3))), "NaN"),
    "empty_decoder": (lambda: features_recovered(np.ones((0, 3)), np.ones((2, 3))), "no rows"),
    "threshold": (lambda: features_recovered(np.ones((2, 3)), np.ones((2, 3)), threshold=1.5), "threshold"),
    "jaccard": (lambda: family_recovery_by_ids(TRUE, TRUE, jaccard=1.2), "jaccard"),
    "bad_family": (lambda: family_recovery_by_ids([(0, 1, 2)], TRUE), r"found\[0\]"),
    "float_children": (lambda: family_recovery_by_ids([(0, [1.5])], TRUE), "integer"),
    "negative_id": (lambda: family_recovery_by_ids([(-1, [1])], TRUE), "non-negative"),
    "bad_mapping": (lambda: family_recovery(TRUE, TRUE, np.ones((2, 2), dtype=int)), "latent_to_true"),
    "not_a_list": (lambda: family_recovery_by_ids(5, TRUE), "list"),
}


@pytest.mark.parametrize("call,match", list(BAD_RECOVERY.values()), ids=list(BAD_RECOVERY))
def test_recovery_rejects(call, match):
    with pytest.raises(ValueError, match=match):
        call()
