"""fastsae.analysis.splitting against brute-force numpy: full cosine matrices, dense activation
vectors, all triplets, explicit map composition."""

from __future__ import annotations


import numpy as np
import pytest
import torch

import fastsae
from fastsae.analysis import splitting as S

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


# ----------------------------------------------------------------------------- brute-force references


def unit(W) -> np.ndarray:
    W = np.asarray(W, dtype=np.float64)
    return W / np.linalg.norm(W, axis=1, keepdims=True)


def cos_matrix(W_a, W_b) -> np.ndarray:
    """[n_b, n_a] full cosine matrix."""
    return unit(W_b) @ unit(W_a).T


def dense_acts(indices, values, n_latents) -> np.ndarray:
    """[N, n_latents] dense activations (zero-valued padding entries ignored)."""
    idx = np.asarray(indices, dtype=np.int64)
    val = np.asarray(values, dtype=np.float64)
    D = np.zeros((idx.shape[0], n_latents))
    r, c = np.nonzero(val)
    np.add.at(D, (r, idx[r, c]), val[r, c])
    return D


def codes_from_dense(D) -> tuple[np.ndarray, np.ndarray]:
    """Top-k style codes of a dense activation matrix: k = max active per row, padding (0, 0.0)."""
    D = np.asarray(D, dtype=np.float64)
    k = max(1, int((D != 0).sum(axis=1).max()))
    idx = np.zeros((D.shape[0], k), dtype=np.int64)
    val = np.zeros((D.shape[0], k), dtype=np.float32)
    for r in range(D.shape[0]):
        nz = np.flatnonzero(D[r])
        order = nz[np.argsort(-D[r, nz], kind="stable")]
        idx[r, : order.size] = order
        val[r, : order.size] = D[r, order]
    return idx, val


def dense_cos_pairs(Da, Db, pairs) -> np.ndarray:
    out = np.zeros(len(pairs))
    for p, (i, j) in enumerate(pairs):
        a = Da[:, i] if i < Da.shape[1] else np.zeros(Da.shape[0])
        b = Db[:, j] if j < Db.shape[1] else np.zeros(Db.shape[0])
        den = np.linalg.norm(a) * np.linalg.norm(b)
        out[p] = a @ b / den if den > 0 else 0.0
    return out


def sparse_random_acts(rng, n_docs, n_latents, per_doc):
    D = np.zeros((n_docs, n_latents))
    for r in range(n_docs):
        D[r, rng.choice(n_latents, per_doc, replace=False)] = rng.uniform(0.1, 2.0, per_doc)
    return D


def random_codes(rng, n_docs, k, n_latents, pad_frac=0.25):
    """[N, k] codes with distinct ids per row and zero-valued padding that repeats an id."""
    idx = np.argsort(rng.random((n_docs, n_latents)), axis=1)[:, :k]
    val = rng.uniform(0.05, 3.0, size=(n_docs, k)).astype(np.float32)
    pad = rng.random((n_docs, k)) < pad_frac
    val[pad] = 0.0
    idx[pad] = idx[:, :1].repeat(k, axis=1)[pad]
    return idx.astype(np.int64), val


@pytest.fixture
def rng():
    return np.random.default_rng(20240611)


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """The inputs are tiny: on a busy shared machine, waking intra-op threads for each small
    matmul costs more than the work (seconds per test). Restored afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# ----------------------------------------------------------------------------- 1. decoder similarity

NN_CASES = {
    "top1_one_block": (1, 4096),
    "top1_block7": (1, 7),
    "top3_one_block": (3, 4096),
    "top3_block7": (3, 7),
    "top3_block1": (3, 1),
    "top40_all_block16": (40, 16),
}
INPUT_KINDS = ["numpy_f64", "numpy_f32", "torch_f32", "torch_bf16", "numpy_int"]


def as_kind(W: np.ndarray, kind: str):
    if kind == "numpy_f64":
        return W
    if kind == "numpy_f32":
        return W.astype(np.float32)
    if kind == "torch_f32":
        return torch.from_numpy(W.astype(np.float32))
    if kind == "torch_bf16":
        return torch.from_numpy(W).to(torch.bfloat16)
    if kind == "numpy_int":
        return np.round(W * 10).astype(np.int32)
    raise AssertionError(kind)


def as_float64(W) -> np.ndarray:
    return W.double().numpy() if isinstance(W, torch.Tensor) else np.asarray(W, dtype=np.float64)


@pytest.mark.parametrize("top,block_size", NN_CASES.values(), ids=NN_CASES.keys())
@pytest.mark.parametrize("kind", INPUT_KINDS, ids=INPUT_KINDS)
def test_decoder_similarity_matches_bruteforce(rng, top, block_size, kind):
    # unnormalised rows (random scales): the function normalises itself
    W_a = rng.normal(size=(40, 16)) * rng.uniform(0.2, 5.0, size=(40, 1))
    W_b = rng.normal(size=(70, 16)) * rng.uniform(0.2, 5.0, size=(70, 1))
    A, B = as_kind(W_a, kind), as_kind(W_b, kind)
    nn = S.decoder_similarity(A, B, top=top, block_size=block_size)
    full = cos_matrix(as_float64(A), as_float64(B))  # brute force on the very values passed in
    order = np.argsort(-full, axis=1, kind="stable")[:, :top]
    assert nn.indices.shape == (70, top) and nn.cosines.shape == (70, top)
    assert nn.indices.dtype == np.int64
    tol = 1e-12 if kind in ("numpy_f64", "numpy_int") else 2e-6
    np.testing.assert_allclose(nn.cosines, np.take_along_axis(full, order, axis=1), atol=tol, rtol=0)
    if kind == "numpy_int":  # rounding to integers may create exact ties: compare values only
        np.testing.assert_allclose(np.take_along_axis(full, nn.indices, axis=1), nn.cosines, atol=1e-12)
    else:
        np.testing.assert_array_equal(nn.indices, order)
    if top == 1:
        np.testing.assert_array_equal(nn.indices[:, 0], full.argmax(axis=1))


@pytest.mark.parametrize("top,block_size", [(1, 4096), (1, 3), (3, 4096), (3, 3)],
                         ids=["top1_one_block", "top1_block3", "top3_one_block", "top3_block3"])
def test_decoder_similarity_ties_go_to_lower_id(rng, top, block_size):
    base = rng.normal(size=(4, 8))
    W_a = np.concatenate([rng.normal(size=(5, 8)), base, base * 2.0, base * 0.5])  # rows 5+r, 9+r, 13+r equal
    nn = S.decoder_similarity(W_a, base, top=top, block_size=block_size)
    expected = np.stack([np.arange(4) + 5, np.arange(4) + 9, np.arange(4) + 13], axis=1)[:, :top]
    np.testing.assert_array_equal(nn.indices, expected)
    np.testing.assert_allclose(nn.cosines, 1.0, atol=1e-12)


def test_decoder_similarity_takes_saes_and_same_matrix(rng):
    torch.manual_seed(0)
    small, large = fastsae.TopKSAE(16, 30, 4), fastsae.TopKSAE(16, 50, 4)
    nn = S.decoder_similarity(small, large)
    full = cos_matrix(small.W_dec.detach().double().numpy(), large.W_dec.detach().double().numpy())
    np.testing.assert_array_equal(nn.indices[:, 0], full.argmax(axis=1))
    self_nn = S.decoder_similarity(small.W_dec, small.W_dec, top=2)
    np.testing.assert_array_equal(self_nn.indices[:, 0], np.arange(30))


BAD_WEIGHTS = {
    "one_dimensional": (lambda W: W[0], ValueError, "2-dimensional"),
    "no_rows": (lambda W: W[:0], ValueError, "empty"),
    "no_columns": (lambda W: W[:, :0], ValueError, "empty"),
    "nan": (lambda W: np.where(np.arange(W.size).reshape(W.shape) == 5, np.nan, W), ValueError, "NaN"),
    "inf_torch": (lambda W: torch.from_numpy(np.where(np.arange(W.size).reshape(W.shape) == 3, np.inf, W)),
                  ValueError, "NaN or infinite"),
    "zero_row": (lambda W: np.concatenate([W, np.zeros((1, W.shape[1]))]), ValueError, "all-zero rows"),
    "dim_mismatch": (lambda W: W[:, :7], ValueError, "embedding dimension"),
    "strings": (lambda W: np.full(W.shape, "a"), TypeError, "real numbers"),
}


@pytest.mark.parametrize("make,exc,msg", BAD_WEIGHTS.values(), ids=BAD_WEIGHTS.keys())
def test_decoder_similarity_rejects_bad_weights(rng, make, exc, msg):
    W = rng.normal(size=(10, 8))
    with pytest.raises(exc, match=msg):
        S.decoder_similarity(W, make(W))
    with pytest.raises(exc, match=msg):
        S.decoder_similarity(make(W), W)


BAD_ARGS = {
    "top_too_large": (dict(top=11), ValueError, "exceeds"),
    "top_zero": (dict(top=0), ValueError, "positive"),
    "top_float": (dict(top=1.5), TypeError, "int"),
    "block_zero": (dict(block_size=0), ValueError, "positive"),
}


@pytest.mark.parametrize("kwargs,exc,msg", BAD_ARGS.values(), ids=BAD_ARGS.keys())
def test_decoder_similarity_rejects_bad_arguments(rng, kwargs, exc, msg):
    with pytest.raises(exc, match=msg):
        S.decoder_similarity(rng.normal(size=(10, 8)), rng.normal(size=(12, 8)), **kwargs)


def test_nn_cosine_distribution(rng):
    nn = S.decoder_similarity(rng.normal(size=(40, 16)), rng.normal(size=(70, 16)), top=2)
    d = S.nn_cosine_distribution(nn, bins=20)
    np.testing.assert_allclose(d.cosines, nn.cosines[:, 0])
    counts, edges = np.histogram(nn.cosines[:, 0].astype(np.float64), bins=20, range=(-1, 1))
    np.testing.assert_array_equal(d.counts, counts)
    np.testing.assert_allclose(d.bin_edges, edges)
    assert d.counts.sum() == 70
    assert d.mean == pytest.approx(nn.cosines[:, 0].mean()) and d.median == pytest.approx(np.median(nn.cosines[:, 0]))
    edge = S.nn_cosine_distribution(np.array([1.0 + 1e-15, -1.0]), bins=4)  # rounding past +-1 still counted
    np.testing.assert_array_equal(edge.counts, [1, 0, 0, 1])
    with pytest.raises(ValueError, match="empty"):
        S.nn_cosine_distribution(np.zeros(0))
    with pytest.raises(ValueError, match="NaN"):
        S.nn_cosine_distribution(np.array([0.5, np.nan]))


# ----------------------------------------------------------------------------- 2. activation similarity

ACT_CASES = {
    "numpy_codes": ("numpy", 1 << 24),
    "torch_sparsecode": ("torch", 1 << 24),
    "chunked_tiny_budget": ("numpy", 5),
    "chunked_medium_budget": ("torch", 40),
}


@pytest.mark.parametrize("kind,chunk_nnz", ACT_CASES.values(), ids=ACT_CASES.keys())
def test_activation_similarity_matches_dense(rng, kind, chunk_nnz):
    n_docs, n_a, n_b = 60, 25, 35
    ia, va = random_codes(rng, n_docs, 4, n_a)
    ib, vb = random_codes(rng, n_docs, 6, n_b)
    Da, Db = dense_acts(ia, va, n_a), dense_acts(ib, vb, n_b)
    pairs = np.concatenate([
        np.stack([rng.integers(0, n_a, 80), rng.integers(0, n_b, 80)], axis=1),
        [[3, 3], [3, 3], [n_a + 4, 2], [1, n_b + 9]],  # repeated pair; ids that never fire
    ])
    if kind == "torch":
        ca = fastsae.SparseCode(torch.from_numpy(ia), torch.from_numpy(va))
        cb = fastsae.SparseCode(torch.from_numpy(ib), torch.from_numpy(vb))
        pairs_in = torch.from_numpy(pairs)
    else:
        ca, cb, pairs_in = (ia, va), (ib, vb), pairs
    res = S.activation_similarity(ca, cb, pairs_in, n_docs, chunk_nnz=chunk_nnz)
    np.testing.assert_array_equal(res.pairs, pairs)
    np.testing.assert_allclose(res.similarity, dense_cos_pairs(Da, Db, pairs), rtol=1e-12, atol=1e-15)
    ext_a = np.pad(Da != 0, ((0, 0), (0, 10)))
    ext_b = np.pad(Db != 0, ((0, 0), (0, 10)))
    np.testing.assert_array_equal(res.co_active, (ext_a[:, pairs[:, 0]] & ext_b[:, pairs[:, 1]]).sum(axis=0))
    assert res.n_docs == n_docs
    assert res.similarity[-1] == 0.0 and res.similarity[-2] == 0.0
    assert ((res.similarity >= 0) & (res.similarity <= 1 + 1e-12)).all()


def test_activation_similarity_same_codes_is_one_on_diagonal(rng):
    idx, val = random_codes(rng, 50, 5, 20, pad_frac=0.0)
    fired = np.unique(idx)
    res = S.activation_similarity((idx, val), (idx, val), np.stack([fired, fired], axis=1))
    np.testing.assert_allclose(res.similarity, 1.0, rtol=1e-12)
    empty = S.activation_similarity((idx, val), (idx, val), np.zeros((0, 2), dtype=np.int64))
    assert empty.similarity.shape == (0,) and empty.co_active.shape == (0,)


def _codes_pair(rng):
    return random_codes(rng, 10, 3, 8), random_codes(rng, 10, 3, 8)


BAD_ACT = {
    "rows_differ": (lambda a, b: (a, (b[0][:7], b[1][:7]), [[0, 0]], None), ValueError, "same documents"),
    "n_docs_wrong": (lambda a, b: (a, b, [[0, 0]], 11), ValueError, "n_docs=11"),
    "shape_mismatch": (lambda a, b: ((a[0], a[1][:, :2]), b, [[0, 0]], None), ValueError, "same shape"),
    "no_documents": (lambda a, b: ((a[0][:0], a[1][:0]), b, [[0, 0]], None), ValueError, "no documents"),
    "nan_values": (lambda a, b: ((a[0], np.where(a[1] > 1, np.nan, a[1])), b, [[0, 0]], None), ValueError, "NaN"),
    "negative_index": (lambda a, b: ((np.where(a[1] > 0, -1, a[0]), a[1]), b, [[0, 0]], None), ValueError, ">= 0"),
    "pairs_shape": (lambda a, b: (a, b, [[0, 0, 0]], None), ValueError, r"\[P, 2\]"),
    "pairs_negative": (lambda a, b: (a, b, [[0, -2]], None), ValueError, "negative"),
    "pairs_float": (lambda a, b: (a, b, [[0.0, 1.0]], None), TypeError, "integer"),
    "not_codes": (lambda a, b: (a[0], b, [[0, 0]], None), TypeError, "SparseCode"),
}


@pytest.mark.parametrize("make,exc,msg", BAD_ACT.values(), ids=BAD_ACT.keys())
def test_activation_similarity_rejects_bad_input(rng, make, exc, msg):
    a, b = _codes_pair(rng)
    ca, cb, pairs, n_docs = make(a, b)
    with pytest.raises(exc, match=msg):
        S.activation_similarity(ca, cb, pairs, n_docs)


# ----------------------------------------------------------------------------- 3. match categories


def handmade_match_case(rng):
    """W_small 40 rows in dims 0..47; W_large 70 rows whose off-small parts lie in dims 48..63
    (orthogonal to every small row), so each nearest neighbour and cosine is known exactly."""
    d = 64
    W_small = np.zeros((40, d))
    W_small[:, :48] = unit(rng.normal(size=(40, 48)))

    def off(n):
        u = np.zeros((n, d))
        u[:, 48:] = unit(rng.normal(size=(n, 16)))
        return u

    def near(i, c, n=1):  # n rows at cosine exactly c to small row i
        return c * W_small[i] + np.sqrt(1 - c * c) * off(n)

    rows = {}
    for i in range(10):
        rows[i] = W_small[i] * (1 + i)  # exact copies (any scale): recurrent
    rows[10], rows[11] = near(20, 0.85, 2)  # two children of 20 at 0.85: split
    rows[12] = near(25, 0.85)[0]  # a lone child at 0.85: novel
    rows[13] = near(26, 0.97)[0]  # a lone child at 0.97: recurrent
    rows[14], rows[15] = near(27, 0.6, 2)  # two children below split_threshold: novel
    for j, r in zip(range(16, 69), near(30, 0.3, 53)):
        rows[j] = r  # 53 children of 30 at 0.3: novel
    rows[69] = near(5, 0.8)[0]  # a sibling of the exact copy of 5: split (the copy stays recurrent)
    W_large = np.stack([rows[j] for j in range(70)])
    nearest = np.array([*range(10), 20, 20, 25, 26, 27, 27, *[30] * 53, 5])
    cosine = np.array([1.0] * 10 + [0.85, 0.85, 0.85, 0.97, 0.6, 0.6] + [0.3] * 53 + [0.8])
    category = np.array(["recurrent"] * 10 + ["split", "split", "novel", "recurrent", "novel", "novel"]
                        + ["novel"] * 53 + ["split"])
    return W_small, W_large, nearest, cosine, category


@pytest.mark.parametrize("block_size", [4096, 6], ids=["one_block", "block6"])
def test_match_features_handmade_without_codes(rng, block_size):
    W_small, W_large, nearest, cosine, category = handmade_match_case(rng)
    full = cos_matrix(W_small, W_large)
    np.testing.assert_array_equal(full.argmax(axis=1), nearest)  # the construction is what it says
    res = S.match_features(W_small, W_large, block_size=block_size)
    np.testing.assert_array_equal(res.nearest, nearest)
    np.testing.assert_allclose(res.cosine, cosine, atol=1e-12)
    np.testing.assert_array_equal(res.category, category)
    assert res.activation_similarity is None and res.act_threshold is None
    assert res.counts == {"recurrent": 11, "split": 3, "novel": 56}
    expected_children = np.bincount(nearest, minlength=40)
    np.testing.assert_array_equal(res.children, expected_children)
    np.testing.assert_array_equal(res.n_siblings, expected_children[nearest])


def test_match_features_handmade_with_codes(rng):
    W_small, W_large, nearest, cosine, category = handmade_match_case(rng)
    n_docs = 40
    As = sparse_random_acts(rng, n_docs, 40, 5)
    Al = sparse_random_acts(rng, n_docs, 70, 6)
    for j in (0, 1, 2, 4, 5, 6, 7, 8, 9):
        Al[:, j] = As[:, j]  # recurrent copies fire on the same documents: similarity 1
    Al[:, 13] = 2.5 * As[:, 26]  # scaled: still similarity 1
    assert (As[:, 3] != 0).any() and (As[:, 3] == 0).any()
    Al[:, 3] = np.where(As[:, 3] == 0, 1.0, 0.0)  # exact copy of 3 that fires elsewhere: similarity 0
    Al[:, 10] = 0.0  # a split child that never fires: similarity 0, still split
    cs, cl = codes_from_dense(As), codes_from_dense(Al)
    res = S.match_features(W_small, W_large, fastsae.SparseCode(*map(torch.from_numpy, cs)), cl)
    act = dense_cos_pairs(As, Al, np.stack([nearest, np.arange(70)], axis=1))
    np.testing.assert_allclose(res.activation_similarity, act, rtol=1e-6, atol=1e-7)
    assert res.activation_similarity[3] == 0.0 and res.activation_similarity[13] == pytest.approx(1.0)
    expected = category.copy()
    expected[3] = "novel"  # cosine 1 but activation similarity 0 < 0.5, and it has no sibling
    np.testing.assert_array_equal(res.category, expected)
    assert res.counts == {"recurrent": 10, "split": 3, "novel": 57}
    assert res.act_threshold == 0.5
    # a lower act_threshold restores it, an impossible one demotes every exact copy
    assert S.match_features(W_small, W_large, cs, cl, act_threshold=-0.1).category[3] == "recurrent"
    strict = S.match_features(W_small, W_large, cs, cl, act_threshold=1.5)
    assert strict.counts["recurrent"] == 0
    assert strict.category[5] == "split"  # 5 keeps two children (its copy and row 69)


def rule_categories(cos, act, siblings, cos_t, act_t, split_t):
    """The documented rules, one feature at a time."""
    out = []
    for c, a, s in zip(cos, act if act is not None else [None] * len(cos), siblings):
        if c > cos_t and (a is None or a >= act_t):
            out.append("recurrent")
        elif s >= 2 and c > split_t:
            out.append("split")
        else:
            out.append("novel")
    return np.array(out)


@pytest.mark.parametrize("thresholds", [(0.95, 0.5, 0.7), (0.5, 0.3, 0.4), (0.6, 0.1, 0.2)],
                         ids=["paper_defaults", "loose", "looser"])
def test_match_features_on_encoded_saes_follows_rules(rng, thresholds):
    torch.manual_seed(1)
    small, large = fastsae.TopKSAE(12, 20, 4), fastsae.TopKSAE(12, 48, 4)
    with torch.no_grad():  # some large features near small ones so every rule has work to do
        large.W_dec[:20] = small.W_dec + 0.3 * torch.randn(20, 12)
        large.normalize_decoder_()
    x = torch.randn(80, 12)
    with torch.no_grad():
        cs, cl = small.encode(x), large.encode(x)
    cos_t, act_t, split_t = thresholds
    res = S.match_features(small, large, cs, cl, cos_threshold=cos_t, act_threshold=act_t, split_threshold=split_t)
    full = cos_matrix(small.W_dec.detach().numpy(), large.W_dec.detach().numpy())
    nearest = full.argmax(axis=1)
    np.testing.assert_array_equal(res.nearest, nearest)
    np.testing.assert_allclose(res.cosine, full.max(axis=1), atol=1e-6)
    Ds = dense_acts(cs.indices.numpy(), cs.values.numpy(), 20)
    Dl = dense_acts(cl.indices.numpy(), cl.values.numpy(), 48)
    act = dense_cos_pairs(Ds, Dl, np.stack([nearest, np.arange(48)], axis=1))
    np.testing.assert_allclose(res.activation_similarity, act, rtol=1e-6, atol=1e-7)
    siblings = np.bincount(nearest, minlength=20)[nearest]
    np.testing.assert_array_equal(res.category, rule_categories(res.cosine, act, siblings, cos_t, act_t, split_t))
    assert sum(res.counts.values()) == 48
    assert sum(v > 0 for v in res.counts.values()) >= 2  # the case exercises more than one rule


BAD_MATCH = {
    "one_code_only": (dict(codes_small=((np.zeros((3, 1), np.int64), np.ones((3, 1))))), ValueError, "both"),
    "nan_threshold": (dict(cos_threshold=float("nan")), ValueError, "finite"),
    "threshold_range": (dict(split_threshold=1.5), ValueError, r"\[-1.0, 1.0\]"),
    "codes_rows_differ": (dict(codes_small=(np.zeros((3, 1), np.int64), np.ones((3, 1))),
                               codes_large=(np.zeros((4, 1), np.int64), np.ones((4, 1)))),
                          ValueError, "same documents"),
}


@pytest.mark.parametrize("kwargs,exc,msg", BAD_MATCH.values(), ids=BAD_MATCH.keys())
def test_match_features_rejects_bad_input(rng, kwargs, exc, msg):
    with pytest.raises(exc, match=msg):
        S.match_features(rng.normal(size=(5, 4)), rng.normal(size=(9, 4)), **kwargs)


# ----------------------------------------------------------------------------- 4. triplets


def triplet_case(rng):
    d = 16
    W16 = unit(rng.normal(size=(30, d)))

    def noisy(rows, eps):
        return unit(rows + eps * rng.normal(size=rows.shape))

    W32 = np.concatenate([
        noisy(W16[:10], 0.05),
        noisy(np.repeat(W16[:1], 12, axis=0), 0.12),  # 12+1 neighbours of feature 0: lists grow past 8
        noisy(W16[10:14], 0.25),  # looser matches (some pass 0.9, fewer pass 0.95)
        unit(rng.normal(size=(14, d))),
    ])
    W64 = np.concatenate([
        noisy(W16[:8], 0.05),
        noisy(np.repeat(W16[:1], 3, axis=0), 0.1),
        noisy(W16[10:14], 0.2),
        noisy(W16[20:23], 0.05),  # in W64 only: no triplet
        unit(rng.normal(size=(30, d))),
    ])
    return W16, W32, W64


def brute_triplets(W16, W32, W64, t):
    S12, S23, S13 = cos_matrix(W16, W32).T, cos_matrix(W32, W64).T, cos_matrix(W16, W64).T
    # S12[i, j] = cos(W16_i, W32_j) etc.
    mask = (S12[:, :, None] > t) & (S23[None, :, :] > t) & (S13[:, None, :] > t)
    trip = np.argwhere(mask)  # lexicographic order
    cos = np.stack([S12[trip[:, 0], trip[:, 1]], S23[trip[:, 1], trip[:, 2]], S13[trip[:, 0], trip[:, 2]]], axis=1)
    return trip, cos


@pytest.mark.parametrize("threshold", [0.95, 0.9, 0.6], ids=["t0.95", "t0.90", "t0.60"])
@pytest.mark.parametrize("block_size", [4096, 5], ids=["one_block", "block5"])
def test_feature_triplets_match_bruteforce(rng, threshold, block_size):
    W16, W32, W64 = triplet_case(rng)
    res = S.feature_triplets(W16, torch.from_numpy(W32), W64, threshold=threshold, block_size=block_size)
    trip, cos = brute_triplets(W16, W32, W64, threshold)
    assert trip.shape[0] > 0
    np.testing.assert_array_equal(res.triplets, trip)
    np.testing.assert_allclose(res.cosines, cos, atol=1e-12)
    assert res.n_triplets == trip.shape[0]
    assert res.n_recurring == np.unique(trip[:, 0]).size
    assert res.n_first == 30 and res.threshold == threshold
    # Fig. 13a curve: recurring first-SAE features at each higher threshold, by brute force
    for t, count in zip(res.curve_thresholds, res.curve_counts):
        tt, _ = brute_triplets(W16, W32, W64, t)
        assert count == np.unique(tt[:, 0]).size, t
    assert res.curve_counts[0] == res.n_recurring and res.curve_counts[-1] == 0


def test_feature_triplets_none_and_curve_validation(rng):
    W = [rng.normal(size=(n, 16)) for n in (10, 12, 14)]
    res = S.feature_triplets(*W, threshold=0.99, curve_thresholds=[0.99, 0.995])
    assert res.triplets.shape == (0, 3) and res.n_triplets == 0 and res.n_recurring == 0
    np.testing.assert_array_equal(res.curve_counts, [0, 0])
    with pytest.raises(ValueError, match="curve_thresholds must be >= threshold"):
        S.feature_triplets(*W, threshold=0.9, curve_thresholds=[0.8])
    with pytest.raises(ValueError, match="embedding dimension"):
        S.feature_triplets(W[0], W[1], W[2][:, :5])


# ----------------------------------------------------------------------------- 5. self-consistency


@pytest.mark.parametrize("block_size", [4096, 5], ids=["one_block", "block5"])
def test_self_consistency_matches_bruteforce(rng, block_size):
    W16, W32, W64 = triplet_case(rng)
    W64 = np.concatenate([W64, unit(W32[30:40] + 0.3 * rng.normal(size=(10, 16)))])
    res = S.self_consistency(W16, W32, W64, block_size=block_size)
    direct = cos_matrix(W16, W64).argmax(axis=1)
    via = cos_matrix(W32, W64).argmax(axis=1)
    nn_32_16 = cos_matrix(W16, W32).argmax(axis=1)
    composed = np.array([nn_32_16[v] for v in via])
    np.testing.assert_array_equal(res.direct, direct)
    np.testing.assert_array_equal(res.via, via)
    np.testing.assert_array_equal(res.composed, composed)
    np.testing.assert_array_equal(res.agree, direct == composed)
    assert res.fraction_agree == pytest.approx(np.mean(direct == composed))
    assert 0 < res.fraction_agree < 1
    for i in range(W16.shape[0]):
        d_set = {l for l in range(len(direct)) if direct[l] == i}
        c_set = {l for l in range(len(direct)) if composed[l] == i}
        assert res.set_size_direct[i] == len(d_set) and res.set_size_composed[i] == len(c_set)
        if d_set | c_set:
            assert res.set_overlap[i] == pytest.approx(len(d_set & c_set) / len(d_set | c_set))
        else:
            assert np.isnan(res.set_overlap[i])


def test_self_consistency_identical_saes_agree(rng):
    W = rng.normal(size=(20, 8))
    res = S.self_consistency(W, W * 2, W * 3)
    assert res.fraction_agree == 1.0
    np.testing.assert_allclose(res.set_overlap, 1.0)


# ----------------------------------------------------------------------------- 6. cross-domain


CROSS_CASES = {
    "all_features_no_codes": (None, False, None),
    "subset_aligned_codes": ([3, 0, 17, 17, 39], True, None),
    "all_features_shared_rows": (None, True, "same"),
    "subset_shared_row_pairs": ([5, 6, 7, 30], True, "pair"),
}


@pytest.mark.parametrize("features,with_codes,shared", CROSS_CASES.values(), ids=CROSS_CASES.keys())
def test_cross_domain_matches_bruteforce(rng, features, with_codes, shared):
    W_a = rng.normal(size=(40, 16))
    W_b = np.concatenate([unit(W_a[:6]) + 0.1 * rng.normal(size=(6, 16)), rng.normal(size=(64, 16))])
    feats = np.arange(40) if features is None else np.array(features)
    kwargs = {}
    rows_a = rows_b = None
    if with_codes:
        ia, va = random_codes(rng, 30, 5, 40)
        ib, vb = random_codes(rng, 30 if shared != "pair" else 25, 7, 70)
        kwargs = dict(codes_a=(ia, va), codes_b=fastsae.SparseCode(torch.from_numpy(ib), torch.from_numpy(vb)))
        if shared == "same":
            rows_a = rows_b = np.array([0, 4, 4, 9, 12, 29, 7, 3, 18, 21, 2, 1])
            kwargs["shared_docs"] = rows_a
        elif shared == "pair":
            rows_a = rng.choice(30, 15, replace=False)
            rows_b = rng.choice(25, 15, replace=False)
            kwargs["shared_docs"] = (rows_a, torch.from_numpy(rows_b))
    res = S.cross_domain_matches(W_a, W_b, features=features, **kwargs)
    full = cos_matrix(W_b, W_a)  # [n_a, n_b]
    np.testing.assert_array_equal(res.features, feats)
    np.testing.assert_array_equal(res.match, full[feats].argmax(axis=1))
    np.testing.assert_allclose(res.cosine, full[feats].max(axis=1), atol=1e-12)
    assert res.mean_cosine == pytest.approx(full[feats].max(axis=1).mean())
    counts, _ = np.histogram(full[feats].max(axis=1), bins=50, range=(-1, 1))
    np.testing.assert_array_equal(res.counts, counts)
    if with_codes:
        Da, Db = dense_acts(ia, va, 40), dense_acts(ib, vb, 70)
        if rows_a is not None:
            Da, Db = Da[rows_a], Db[rows_b]
        act = dense_cos_pairs(Da, Db, np.stack([feats, res.match], axis=1))
        np.testing.assert_allclose(res.activation_similarity, act, rtol=1e-6, atol=1e-7)
        assert res.mean_activation_similarity == pytest.approx(act.mean())
    else:
        assert res.activation_similarity is None and res.mean_activation_similarity is None


def _sae_with_directions(U, perm, mean, std, seed):
    """A standardised TopKSAE whose input-space directions are U[perm]: W_dec = U[perm] / std
    (row-normalised), because latent j moves the input-space reconstruction along W_dec[j] * std."""
    sae = fastsae.TopKSAE(U.shape[1], len(perm), 3, dtype=torch.float64)
    W = U[perm] / std
    with torch.no_grad():
        sae.W_dec.copy_(torch.from_numpy(W / np.linalg.norm(W, axis=1, keepdims=True)))
        sae.W_enc.normal_(generator=torch.Generator().manual_seed(seed))
    sae.set_standardization(torch.from_numpy(mean), torch.from_numpy(std))
    return sae


def test_cross_domain_matches_in_the_input_space(rng):
    """Two SAEs trained on different corpora (different standardisations) that learned the same
    input-space directions in different orders: matched one to one at cosine 1 in the input
    space; the same decoders compared in their two standardised spaces are mismatched."""
    d, m = 12, 30
    U = unit(rng.normal(size=(m, d)))
    perm_a, perm_b = rng.permutation(m), rng.permutation(m)
    std_a = np.logspace(-1, 1, d)
    std_b = std_a[::-1].copy()
    sae_a = _sae_with_directions(U, perm_a, rng.normal(size=d) * 10, std_a, 0)
    sae_b = _sae_with_directions(U, perm_b, rng.normal(size=d) * 10, std_b, 1)
    truth = np.argsort(perm_b)[perm_a]  # feature i of a is U[perm_a[i]] = feature truth[i] of b
    # brute force in float64 numpy, from the weights and the statistics by hand
    dir_a = sae_a.W_dec.detach().numpy() * std_a
    dir_b = sae_b.W_dec.detach().numpy() * std_b
    full = cos_matrix(dir_b, dir_a)  # [n_a, n_b]
    np.testing.assert_array_equal(full.argmax(axis=1), truth)
    res = S.cross_domain_matches(sae_a, sae_b)
    np.testing.assert_array_equal(res.match, truth)
    np.testing.assert_allclose(res.cosine, 1.0, atol=1e-12)
    raw = S.cross_domain_matches(sae_a.feature_directions(), sae_b.feature_directions())
    np.testing.assert_array_equal(raw.match, truth)
    # what the standardised spaces would have said: many features matched wrongly
    wrong = S.cross_domain_matches(sae_a.W_dec, sae_b.W_dec)
    np.testing.assert_array_equal(wrong.match, cos_matrix(sae_b.W_dec.detach().numpy(),
                                                          sae_a.W_dec.detach().numpy()).argmax(axis=1))
    assert (wrong.match != truth).mean() >= 0.1 and wrong.mean_cosine < 0.5
    # within one run (shared standardisation) a TopKSAE still means its W_dec
    nn = S.decoder_similarity(sae_a, sae_b)
    np.testing.assert_array_equal(nn.indices[:, 0], cos_matrix(sae_a.W_dec.detach().numpy(),
                                                               sae_b.W_dec.detach().numpy()).argmax(axis=1))


BAD_CROSS = {
    "feature_out_of_range": (dict(features=[40]), ValueError, "out of range"),
    "no_features": (dict(features=[]), ValueError, "no feature"),
    "float_features": (dict(features=[1.5]), TypeError, "integer"),
    "codes_a_only": (dict(codes_a=(np.zeros((3, 1), np.int64), np.ones((3, 1)))), ValueError, "both"),
    "shared_without_codes": (dict(shared_docs=[0, 1]), ValueError, "not given"),
    "shared_out_of_range": (dict(codes_a=(np.zeros((3, 1), np.int64), np.ones((3, 1))),
                                 codes_b=(np.zeros((3, 1), np.int64), np.ones((3, 1))), shared_docs=[0, 3]),
                            ValueError, "out of range"),
    "shared_pair_lengths": (dict(codes_a=(np.zeros((3, 1), np.int64), np.ones((3, 1))),
                                 codes_b=(np.zeros((3, 1), np.int64), np.ones((3, 1))), shared_docs=([0, 1], [2])),
                            ValueError, "same documents"),
}


@pytest.mark.parametrize("kwargs,exc,msg", BAD_CROSS.values(), ids=BAD_CROSS.keys())
def test_cross_domain_rejects_bad_input(rng, kwargs, exc, msg):
    with pytest.raises(exc, match=msg):
        S.cross_domain_matches(rng.normal(size=(40, 8)), rng.normal(size=(20, 8)), **kwargs)


# ----------------------------------------------------------------------------- 7. heatmap


def test_split_heatmap_matches_bruteforce(rng):
    Ws = [rng.normal(size=(n, 16)) for n in (10, 20, 30)]
    ids = [[2], [0, 5], [1, 7, 29]]
    codes = [random_codes(rng, 40, 4, n) for n in (10, 20, 30)]
    h = S.split_heatmap(Ws, ids, labels=["16", "32", "64"], codes_list=codes)
    rows = np.concatenate([unit(W)[i] for W, i in zip(Ws, ids)])
    np.testing.assert_allclose(h.cosine, rows @ rows.T, atol=1e-12)
    np.testing.assert_array_equal(h.sae, [0, 1, 1, 2, 2, 2])
    np.testing.assert_array_equal(h.feature_ids, [2, 0, 5, 1, 7, 29])
    assert h.labels == ["16:2", "32:0", "32:5", "64:1", "64:7", "64:29"]
    dense = [dense_acts(i, v, n) for (i, v), n in zip(codes, (10, 20, 30))]
    cols = np.concatenate([dense[s][:, i] for s, i in enumerate(ids)], axis=1)
    norms = np.linalg.norm(cols, axis=0)
    den = norms[:, None] * norms[None, :]
    expected = np.divide(cols.T @ cols, den, out=np.zeros_like(den), where=den > 0)
    np.testing.assert_allclose(h.activation_similarity, expected, rtol=1e-12, atol=1e-15)
    with pytest.raises(ValueError, match="entries for 3 SAEs"):
        S.split_heatmap(Ws, ids[:2])
    with pytest.raises(ValueError, match="out of range"):
        S.split_heatmap(Ws, [[10], [], []])
    with pytest.raises(ValueError, match="no features"):
        S.split_heatmap(Ws, [[], [], []])


# ----------------------------------------------------------------------------- plots


@pytest.fixture(scope="module")
def results():
    rng = np.random.default_rng(7)
    W16, W32, W64 = triplet_case(rng)
    codes = [random_codes(rng, 50, 4, n) for n in (30, 40, 50)]
    return {
        "W": (W16, W32, W64),
        "codes": codes,
        "nn": {"16->32": S.decoder_similarity(W16, W32), "16->64": S.decoder_similarity(W16, W64),
               "32->64 (dist)": S.nn_cosine_distribution(S.decoder_similarity(W32, W64))},
        "act": S.activation_similarity(codes[0], codes[1], [[0, 0], [1, 2], [3, 4]]),
        "match": S.match_features(W16, W32, codes[0], codes[1]),
        "match_nocodes": S.match_features(W16, W64),
        "triplets": S.feature_triplets(W16, W32, W64, threshold=0.9),
        "self": S.self_consistency(W16, W32, W64),
        "cross": S.cross_domain_matches(W16, W64, codes_a=codes[0], codes_b=codes[2]),
        "cross_nocodes": S.cross_domain_matches(W16, W64),
    }


PLOTS = {
    "nn_cosines": lambda r, p: S.plot_nn_cosines(r["nn"], p),
    "activation_similarity": lambda r, p: S.plot_activation_similarity(r["act"], p),
    "matches_with_codes": lambda r, p: S.plot_matches(r["match"], p),
    "matches_without_codes": lambda r, p: S.plot_matches(r["match_nocodes"], p),
    "triplets": lambda r, p: S.plot_triplets(r["triplets"], p),
    "triplets_by_label": lambda r, p: S.plot_triplets({"k=16": r["triplets"], "k=32": r["triplets"]}, p),
    "self_consistency": lambda r, p: S.plot_self_consistency(r["self"], p),
    "cross_domain_with_codes": lambda r, p: S.plot_cross_domain(r["cross"], p),
    "cross_domain_without_codes": lambda r, p: S.plot_cross_domain(r["cross_nocodes"], p),
    "split_heatmap_cosine": lambda r, p: S.plot_split_heatmap(r["W"], [[0], [0, 10], [0, 8, 9]], p),
    "split_heatmap_activation": lambda r, p: S.plot_split_heatmap(
        r["W"], [[0], [0, 10], [0, 8, 9]], p, labels=["16", "32", "64"], codes_list=r["codes"], color_by="activation"),
}


@pytest.mark.parametrize("draw", PLOTS.values(), ids=PLOTS.keys())
def test_plot_writes_png(results, tmp_path, draw):
    path = tmp_path / "figure.png"
    draw(results, path)
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC and len(data) > 1000


def test_plot_input_errors(results, tmp_path):
    with pytest.raises(ValueError, match="non-empty mapping"):
        S.plot_nn_cosines({}, tmp_path / "x.png")
    with pytest.raises(ValueError, match="needs codes_list"):
        S.plot_split_heatmap(results["W"], [[0], [0], [0]], tmp_path / "x.png", color_by="activation")
    with pytest.raises(ValueError, match="color_by"):
        S.plot_split_heatmap(results["W"], [[0], [0], [0]], tmp_path / "x.png", color_by="jaccard")


@pytest.mark.parametrize("top,block_rows", [(1, None), (4, None), (4, 2), (1, 3)])
def test_decoder_neighbours_exclude_self_and_match_bruteforce(rng, top, block_rows):
    """The report's neighbour search (one SAE's rows among themselves) on the same blocked core as
    decoder_similarity: self excluded, ties (duplicate rows, a zero row) to the lower id."""
    W = rng.normal(size=(41, 16)) * rng.uniform(0.2, 5.0, size=(41, 1))
    W[9] = W[4]
    W[30] = 3.0 * W[4]
    W[17] = 0.0  # no direction: cosine 0 with every row
    rows = [4, 0, 17, 40, 30]
    ids, cos = S.decoder_neighbours(W, top, rows=rows, block_rows=block_rows)
    assert ids.shape == cos.shape == (5, top) and ids.dtype == np.int64 and cos.dtype == np.float32
    U = np.zeros_like(W)
    live = np.linalg.norm(W, axis=1) > 0
    U[live] = W[live] / np.linalg.norm(W[live], axis=1, keepdims=True)
    full = U @ U.T
    for r, j in enumerate(rows):
        s = np.round(full[j], 5)  # float32 rounding must not reorder: compare on rounded values
        s[j] = -np.inf
        expect = np.lexsort((np.arange(41), -s))[:top]
        assert ids[r].tolist() == expect.tolist(), (j, ids[r], expect)
        np.testing.assert_allclose(cos[r], full[j, expect], atol=2e-6)
    if top >= 2:
        assert ids[0, :2].tolist() == [9, 30]
    assert ids[2].tolist() == [0, 1, 2, 3][:top]  # the zero row: all ties at 0, lowest ids
    from fastsae.report.data import decoder_neighbours as report_search
    r_ids, r_cos = report_search(W, top, rows=rows, block_rows=block_rows)
    np.testing.assert_array_equal(r_ids, ids)
    np.testing.assert_array_equal(r_cos, cos)


def test_decoder_neighbours_pads_and_checks(rng):
    ids, cos = S.decoder_neighbours(rng.normal(size=(3, 5)), 4)
    assert (ids[:, 2:] == -1).all() and np.isnan(cos[:, 2:]).all()
    assert sorted(ids[0, :2].tolist()) == [1, 2]
    ids, cos = S.decoder_neighbours(np.ones((1, 4)), 2)
    assert ids.tolist() == [[-1, -1]] and np.isnan(cos).all()
    with pytest.raises(ValueError, match="out of range"):
        S.decoder_neighbours(rng.normal(size=(5, 3)), 2, rows=[5])
    with pytest.raises(TypeError, match="top must be an int"):
        S.decoder_neighbours(rng.normal(size=(5, 3)), 2.5)
    with pytest.raises(ValueError, match="block_rows"):
        S.decoder_neighbours(rng.normal(size=(5, 3)), 2, block_rows=0)
