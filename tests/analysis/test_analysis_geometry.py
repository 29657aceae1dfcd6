"""fastsae.analysis.geometry against brute-force numpy / scipy references on small inputs."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import scipy.sparse as sp
import scipy.stats
import torch

import fastsae
from fastsae.analysis import geometry as geo

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
N, D = 60, 16


def random_weights(seed, n=N, d=D):
    rng = np.random.default_rng(seed)
    dec = rng.standard_normal((n, d))
    dec /= np.linalg.norm(dec, axis=1, keepdims=True)
    enc = 0.6 * dec + 0.4 * rng.standard_normal((n, d)) / math.sqrt(d)  # correlated, not parallel
    return enc, dec


def brute_cosine(a):
    u = a / np.linalg.norm(a, axis=1, keepdims=True)
    return u @ u.T


def brute_alignment(enc, dec):
    """Everything from the full n x n matrix with the diagonal masked."""
    enc_dec = np.sum(enc * dec, axis=1) / (np.linalg.norm(enc, axis=1) * np.linalg.norm(dec, axis=1))
    s = brute_cosine(dec)
    np.fill_diagonal(s, -np.inf)
    return enc_dec, s.max(axis=1), s.argmax(axis=1)


def brute_bandwidth(dense_adj, order):
    pos = np.empty(len(order), dtype=np.int64)
    pos[np.asarray(order)] = np.arange(len(order))
    i, j = np.nonzero(dense_adj)
    return int(np.abs(pos[i] - pos[j]).max()) if i.size else 0


def assert_permutation(order, n):
    assert order.dtype == np.int64 and order.shape == (n,)
    np.testing.assert_array_equal(np.sort(order), np.arange(n))


def contiguous(order, members):
    pos = np.sort(np.flatnonzero(np.isin(order, members)))
    return pos[-1] - pos[0] + 1 == len(members)


# ------------------------------------------------------------------ encoder/decoder alignment


@pytest.mark.parametrize("block_size", [1, 7, 60, 4096], ids=["block1", "block7-ragged", "block-eq-n", "block-default"])
def test_alignment_matches_bruteforce(block_size):
    enc, dec = random_weights(0)
    enc_dec, max_other, arg = brute_alignment(enc, dec)
    r = geo.encoder_decoder_alignment(enc, dec, block_size=block_size)
    np.testing.assert_allclose(r.enc_dec_cosine, enc_dec, rtol=0, atol=1e-12)
    np.testing.assert_allclose(r.max_other_cosine, max_other, rtol=0, atol=1e-12)
    np.testing.assert_array_equal(r.nearest_other, arg)
    assert (r.nearest_other != np.arange(N)).all()
    assert r.mean_enc_dec_cosine == pytest.approx(enc_dec.mean(), abs=1e-12)
    assert r.mean_max_other_cosine == pytest.approx(max_other.mean(), abs=1e-12)
    sp_ref = scipy.stats.spearmanr(enc_dec, max_other)
    pe_ref = scipy.stats.pearsonr(enc_dec, max_other)
    assert r.spearman == pytest.approx(sp_ref.statistic, abs=1e-12)
    assert r.spearman_pvalue == pytest.approx(sp_ref.pvalue, rel=1e-9)
    assert r.pearson == pytest.approx(pe_ref.statistic, abs=1e-12)
    assert r.pearson_pvalue == pytest.approx(pe_ref.pvalue, rel=1e-9)
    assert r.n_latents == N


def test_alignment_duplicate_rows_tie_lowest_index():
    """Exact ties (duplicate decoder rows) resolve to the lowest other index, across tiles."""
    _, dec = random_weights(1, n=12)
    dec[9] = dec[2]
    dec[11] = dec[2]
    enc = dec + 0.1
    for bs in (1, 5, 12):
        r = geo.encoder_decoder_alignment(enc, dec, block_size=bs)
        assert r.nearest_other[2] == 9 and r.nearest_other[9] == 2 and r.nearest_other[11] == 2
        assert r.max_other_cosine[[2, 9, 11]] == pytest.approx(1.0)


def test_alignment_torch_sae_float32():
    torch.manual_seed(0)
    sae = fastsae.TopKSAE(D, N, 4)
    # A fresh SAE has encoder rows parallel to decoder rows: cosine 1, correlations undefined.
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        r0 = geo.encoder_decoder_alignment(sae.W_enc, sae.W_dec, block_size=16)
    np.testing.assert_allclose(r0.enc_dec_cosine, 1.0, atol=1e-6)
    assert math.isnan(r0.spearman) and math.isnan(r0.pearson)
    with torch.no_grad():
        sae.W_enc.add_(0.3 * torch.randn_like(sae.W_enc) / D**0.5)
    r = geo.encoder_decoder_alignment(sae.W_enc, sae.W_dec, block_size=16)
    enc_dec, max_other, arg = brute_alignment(sae.W_enc.detach().double().numpy(), sae.W_dec.detach().double().numpy())
    np.testing.assert_allclose(r.enc_dec_cosine, enc_dec, atol=1e-5)
    np.testing.assert_allclose(r.max_other_cosine, max_other, atol=1e-5)
    assert r.max_other_cosine.dtype == np.float64


def _bad_alignment_cases():
    enc, dec = random_weights(2, n=8, d=4)
    nan = dec.copy()
    nan[3, 1] = np.nan
    inf = enc.copy()
    inf[0, 0] = np.inf
    zero = enc.copy()
    zero[5] = 0.0
    return [
        pytest.param(enc, dec[:, :3], {}, "same shape", id="shape-mismatch"),
        pytest.param(enc[0], dec[0], {}, "2-dimensional", id="1d"),
        pytest.param(enc[:0], dec[:0], {}, "empty", id="empty"),
        pytest.param(enc[:1], dec[:1], {}, "at least 2", id="single-latent"),
        pytest.param(enc, nan, {}, "NaN", id="nan"),
        pytest.param(inf, dec, {}, "NaN or inf", id="inf"),
        pytest.param(zero, dec, {}, "zero", id="zero-row"),
        pytest.param(enc, dec, {"block_size": 0}, "block_size", id="block-size-0"),
    ]


@pytest.mark.parametrize("enc, dec, kw, match", _bad_alignment_cases())
def test_alignment_rejects_bad_input(enc, dec, kw, match):
    with pytest.raises(ValueError, match=match):
        geo.encoder_decoder_alignment(enc, dec, **kw)


# ---------------------------------------------------------------------- decoder ordering


@pytest.mark.parametrize("block_size", [7, 4096], ids=["block7", "block-default"])
def test_similarity_graph_matches_bruteforce(block_size):
    _, dec = random_weights(3)
    thr = 0.45
    s = np.abs(brute_cosine(dec))
    np.fill_diagonal(s, 0.0)
    ref = np.where(s >= thr, s, 0.0)
    g = geo.similarity_graph(dec, thr, block_size=block_size)
    assert g.nnz == np.count_nonzero(ref) > 0
    np.testing.assert_allclose(g.toarray(), ref, atol=1e-12)


@pytest.mark.parametrize("method", ["rcm", "spectral"])
def test_ordering_is_valid_permutation(method):
    _, dec = random_weights(4)
    thr = 0.45
    res = geo.decoder_ordering(dec, threshold=thr, method=method, block_size=16)
    assert_permutation(res.order, N)
    s = np.abs(brute_cosine(dec))
    np.fill_diagonal(s, 0.0)
    adj = s >= thr
    assert res.n_edges == np.count_nonzero(adj) // 2
    assert res.bandwidth_before == brute_bandwidth(adj, np.arange(N))
    assert res.bandwidth_after == brute_bandwidth(adj, res.order)
    assert res.n_components == sp.csgraph.connected_components(sp.csr_matrix(adj), directed=False)[0]
    assert res.method == method and res.threshold == thr


def banded(n, b):
    i, j = np.indices((n, n))
    a = ((np.abs(i - j) <= b) & (i != j)).astype(float)
    return a


@pytest.mark.parametrize("n, b", [(60, 1), (60, 3), (45, 6)], ids=["n60-b1", "n60-b3", "n45-b6"])
def test_rcm_recovers_shuffled_banded_matrix(n, b):
    a = banded(n, b)
    perm = np.random.default_rng(n + b).permutation(n)
    shuffled = a[np.ix_(perm, perm)]
    assert brute_bandwidth(shuffled, np.arange(n)) > b
    order = geo.order_graph(sp.csr_matrix(shuffled), "rcm")
    assert_permutation(order, n)
    assert brute_bandwidth(shuffled, order) <= b
    assert geo.bandwidth(shuffled, order) == brute_bandwidth(shuffled, order)


def arc_decoder(n, d, seed):
    """Unit rows on a quarter-circle arc in a random 2-plane: |cos| >= thr exactly for |i-j| <= 3."""
    rng = np.random.default_rng(seed)
    step = (math.pi / 2) / n
    theta = step * np.arange(n)
    q, _ = np.linalg.qr(rng.standard_normal((d, 2)))
    w = np.cos(theta)[:, None] * q[:, 0] + np.sin(theta)[:, None] * q[:, 1]
    return w, math.cos(3.5 * step), 3


@pytest.mark.parametrize(
    "method, dense_max",
    [("rcm", 500), ("spectral", 500), ("spectral", 0)],
    ids=["rcm", "spectral-dense-eigh", "spectral-lobpcg"],
)
def test_decoder_ordering_recovers_shuffled_arc(monkeypatch, method, dense_max):
    monkeypatch.setattr(geo, "_DENSE_EIGH_MAX", dense_max)
    w, thr, band = arc_decoder(N, D, 5)
    perm = np.random.default_rng(6).permutation(N)
    res = geo.decoder_ordering(w[perm], threshold=thr, method=method, block_size=16)
    assert_permutation(res.order, N)
    assert res.bandwidth_before > band
    assert res.bandwidth_after <= band
    assert res.n_components == 1


def clusters_decoder(seed, sizes, n_isolated):
    """Tight clusters around orthogonal axes plus isolated axis-aligned rows, shuffled."""
    rng = np.random.default_rng(seed)
    d = len(sizes) + n_isolated + 4
    rows, labels = [], []
    for c, size in enumerate(sizes):
        rows.append(np.eye(d)[c] + 0.05 * rng.standard_normal((size, d)))
        labels += [c] * size
    for k in range(n_isolated):
        rows.append(np.eye(d)[len(sizes) + k][None])
        labels.append(-1 - k)
    w = np.concatenate(rows)
    perm = rng.permutation(len(w))
    return w[perm], np.asarray(labels)[perm]


@pytest.mark.parametrize("method", ["spectral", "rcm"])
@pytest.mark.parametrize(
    "sizes, n_isolated", [((25, 35), 0), ((20, 12), 5)], ids=["two-cliques", "two-cliques-plus-isolated"]
)
def test_disconnected_cliques_are_contiguous(method, sizes, n_isolated):
    w, labels = clusters_decoder(7, sizes, n_isolated)
    res = geo.decoder_ordering(w, threshold=0.5, method=method)
    n = len(w)
    assert_permutation(res.order, n)
    adj = np.abs(brute_cosine(w)) >= 0.5
    np.fill_diagonal(adj, False)
    for c, size in enumerate(sizes):  # each cluster is a clique and has no edge outside
        members = np.flatnonzero(labels == c)
        assert adj[np.ix_(members, members)].sum() == size * (size - 1)
        assert not adj[members][:, labels != c].any()
        assert contiguous(res.order, members)
    assert res.n_components == len(sizes) + n_isolated
    if method == "spectral":  # largest component first, isolated latents last
        assert (labels[res.order[: max(sizes)]] == int(np.argmax(sizes))).all()
        assert (labels[res.order[n - n_isolated :]] < 0).all()


@pytest.mark.parametrize("dense_max", [500, 0], ids=["dense-eigh", "sparse-lobpcg"])
def test_spectral_orders_shuffled_path(monkeypatch, dense_max):
    monkeypatch.setattr(geo, "_DENSE_EIGH_MAX", dense_max)
    n = 80
    perm = np.random.default_rng(8).permutation(n)
    shuffled = banded(n, 1)[np.ix_(perm, perm)]
    order = geo.order_graph(shuffled, "spectral")
    assert_permutation(order, n)
    assert brute_bandwidth(shuffled, order) == 1  # the Fiedler vector of a path is monotone


@pytest.mark.parametrize(
    "kw, match",
    [
        pytest.param({"threshold": 0.0}, "threshold", id="threshold-0"),
        pytest.param({"threshold": 1.5}, "threshold", id="threshold-above-1"),
        pytest.param({"threshold": float("nan")}, "threshold", id="threshold-nan"),
        pytest.param({"method": "umap"}, "method", id="bad-method"),
        pytest.param({"threshold": 0.01, "max_edges": 10}, "max_edges", id="too-many-edges"),
        pytest.param({"block_size": -1}, "block_size", id="block-size-negative"),
    ],
)
def test_decoder_ordering_rejects_bad_arguments(kw, match):
    _, dec = random_weights(9)
    with pytest.raises(ValueError, match=match):
        geo.decoder_ordering(dec, **kw)


@pytest.mark.parametrize(
    "adj, match",
    [
        pytest.param(np.ones((3, 4)), "square", id="not-square"),
        pytest.param(np.ones(3), "square", id="1d"),
        pytest.param(np.zeros((0, 0)), "empty", id="empty"),
        pytest.param(np.full((3, 3), np.nan), "NaN", id="nan"),
    ],
)
def test_order_graph_rejects_bad_adjacency(adj, match):
    with pytest.raises(ValueError, match=match):
        geo.order_graph(adj, "rcm")


def test_decoder_ordering_rejects_nan_weights():
    _, dec = random_weights(10)
    dec[7, 2] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        geo.decoder_ordering(dec)


# ---------------------------------------------------------------------- feature density


def _freq_with_dead(seed, n=N, n_rows=500):
    rng = np.random.default_rng(seed)
    freq = rng.integers(1, n_rows + 1, size=n).astype(np.int64)
    freq[rng.choice(n, 7, replace=False)] = 0
    freq[0] = n_rows  # fires on every row: log density 0
    return freq, n_rows


def _numpy_reference(freq, n_rows):
    alive = freq > 0
    logd = np.log10(freq[alive] / n_rows)
    return np.flatnonzero(alive), logd, np.flatnonzero(~alive)


@pytest.mark.parametrize("source", ["array", "torch", "cooccurrence", "real-cooccurrence"])
def test_log_density_matches_numpy(source):
    freq, n_rows = _freq_with_dead(11)
    if source == "array":
        r = geo.log_feature_density(freq, n_rows)
    elif source == "torch":
        r = geo.log_feature_density(torch.from_numpy(freq), n_rows=np.int64(n_rows))
    elif source == "cooccurrence":
        cooc = fastsae.Cooccurrence(counts=np.diag(freq), act_sim=np.diag(freq.astype(float)), freq=freq, n_rows=n_rows)
        r = geo.log_feature_density(cooc)
    else:  # counts from the real accumulator: latents >= 50 never appear in the codes
        rng = np.random.default_rng(12)
        n_rows = 200
        idx = np.argsort(rng.random((n_rows, 50)), axis=1)[:, :4].astype(np.int64)
        val = rng.uniform(0.1, 1.0, size=idx.shape).astype(np.float32)
        cooc = fastsae.cooccurrence(idx, val, N)
        freq = np.bincount(idx.ravel(), minlength=N)
        np.testing.assert_array_equal(cooc.freq, freq)
        r = geo.log_feature_density(cooc, n_rows=n_rows)
    features, logd, dead = _numpy_reference(freq, n_rows)
    np.testing.assert_array_equal(r.features, features)
    np.testing.assert_allclose(r.log10_density, logd, rtol=0, atol=1e-12)
    np.testing.assert_array_equal(r.dead, dead)
    assert r.n_dead == dead.size > 0 and np.isfinite(r.log10_density).all()
    assert r.n_latents == N and r.n_rows == n_rows
    assert r.dead_fraction == pytest.approx(dead.size / N)
    assert r.mean == pytest.approx(logd.mean(), abs=1e-12)
    assert r.median == pytest.approx(np.median(logd), abs=1e-12)
    assert r.std == pytest.approx(logd.std(), abs=1e-12)


def test_log_density_all_dead():
    r = geo.log_feature_density(np.zeros(5, dtype=np.int64), 10)
    assert r.n_dead == 5 and r.log10_density.size == 0
    assert math.isnan(r.mean) and math.isnan(r.median)


@pytest.mark.parametrize(
    "freq, n_rows, match",
    [
        pytest.param(np.ones(4, dtype=np.int64), 0, "positive", id="n_rows-0"),
        pytest.param(np.ones(4, dtype=np.int64), -3, "positive", id="n_rows-negative"),
        pytest.param(np.ones(4, dtype=np.int64), None, "required", id="n_rows-missing"),
        pytest.param(np.ones(4, dtype=np.int64), 2.5, "int", id="n_rows-float"),
        pytest.param(np.array([], dtype=np.int64), 10, "empty", id="empty"),
        pytest.param(np.ones((2, 2), dtype=np.int64), 10, "1-dimensional", id="2d"),
        pytest.param(np.array([1.0, np.nan]), 10, "NaN", id="nan"),
        pytest.param(np.array([1, -1]), 10, "non-negative", id="negative"),
        pytest.param(np.array([1, 11]), 10, "exceeds", id="freq-above-n_rows"),
    ],
)
def test_log_density_rejects_bad_input(freq, n_rows, match):
    with pytest.raises(ValueError, match=match):
        geo.log_feature_density(freq, n_rows)


def test_log_density_rejects_conflicting_n_rows():
    freq = np.array([1, 2, 0], dtype=np.int64)
    cooc = fastsae.Cooccurrence(counts=np.diag(freq), act_sim=np.diag(freq.astype(float)), freq=freq, n_rows=5)
    with pytest.raises(ValueError, match="disagrees"):
        geo.log_feature_density(cooc, n_rows=6)
    cooc.n_rows = 0
    with pytest.raises(ValueError, match="positive"):
        geo.log_feature_density(cooc)


# ------------------------------------------------------------------------------- plots


def _plot_alignment(path):
    enc, dec = random_weights(13)
    return geo.plot_encoder_decoder_alignment(geo.encoder_decoder_alignment(enc, dec), path)


def _plot_permuted(path):
    _, dec = random_weights(14)
    return geo.plot_permuted_similarity(dec, geo.decoder_ordering(dec, threshold=0.45), path)


def _plot_permuted_subsampled(path):
    _, dec = random_weights(15)
    order = geo.decoder_ordering(dec, threshold=0.45, method="spectral").order
    return geo.plot_permuted_similarity(dec, order, path, max_features=17)


def _plot_log_density(path):
    results = {f"k={k}": geo.log_feature_density(*_freq_with_dead(k)) for k in (16, 32, 64)}
    return geo.plot_log_density(results, path)


def _plot_log_density_all_dead(path):
    results = {"dead": geo.log_feature_density(np.zeros(4, dtype=np.int64), 3),
               "one": geo.log_feature_density(np.array([2, 2, 0]), 3)}
    return geo.plot_log_density(results, path)


@pytest.mark.parametrize(
    "plot",
    [_plot_alignment, _plot_permuted, _plot_permuted_subsampled, _plot_log_density, _plot_log_density_all_dead],
    ids=["alignment", "permuted-similarity", "permuted-similarity-subsampled", "log-density", "log-density-degenerate"],
)
def test_plot_writes_png(tmp_path, plot):
    path = tmp_path / "fig.png"
    out = plot(path)
    assert out == str(path)
    assert path.read_bytes()[:8] == PNG_MAGIC


def _permuted(order, **kw):
    return lambda p: geo.plot_permuted_similarity(random_weights(0)[1], order, p, **kw)


@pytest.mark.parametrize(
    "call, exc, match",
    [
        pytest.param(_permuted(np.arange(N - 1)), ValueError, "permutation", id="order-wrong-length"),
        pytest.param(_permuted(np.zeros(N, dtype=int)), ValueError, "permutation", id="order-repeats"),
        pytest.param(_permuted(np.arange(N), max_features=0), ValueError, "max_features", id="max-features-0"),
        pytest.param(lambda p: geo.plot_log_density({}, p), ValueError, "non-empty", id="log-density-empty"),
        pytest.param(lambda p: geo.plot_log_density({"a": np.zeros(3)}, p), TypeError, "LogFeatureDensity",
                     id="log-density-wrong-type"),
        pytest.param(lambda p: geo.plot_encoder_decoder_alignment(None, p), TypeError, "EncoderDecoderAlignment",
                     id="alignment-wrong-type"),
    ],
)
def test_plot_rejects_bad_input(tmp_path, call, exc, match):
    path = tmp_path / "fig.png"
    with pytest.raises(exc, match=match):
        call(path)
    assert not path.exists()
