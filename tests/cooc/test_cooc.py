"""Co-occurrence C and activation similarity D against scipy.sparse (A^T A, B^T B)."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import scipy.sparse as sp
import torch

import fastsae
from fastsae.cooc import Cooccurrence, act_sim_cosine, jaccard, normalize, normalize_frequency, normalize_min, npmi

from fastsae import _cooc_check

from conftest import random_codes, run_python, scipy_reference

SHAPES = {
    "one_row_one_latent": (1, 1, 1),
    "tiny_odd": (5, 3, 7),
    "k_equals_n": (40, 9, 9),
    "B200_k7_n50": (200, 7, 50),
    "B1000_k16_n301": (1000, 16, 301),
    "B3001_k33_n97": (3001, 33, 97),
}
DTYPES = {
    "i32_f32": (np.int32, np.float32),
    "i64_f32": (np.int64, np.float32),
    "i32_f64": (np.int32, np.float64),
    "i64_f64": (np.int64, np.float64),
}


def assert_matches_reference(res, indices, values, n):
    C, D, freq = scipy_reference(indices, values, n)
    counts = res.counts.toarray() if sp.issparse(res.counts) else res.counts
    act_sim = res.act_sim.toarray() if sp.issparse(res.act_sim) else res.act_sim
    assert counts.dtype == np.int64 and act_sim.dtype == np.float64 and res.freq.dtype == np.int64
    np.testing.assert_array_equal(counts, C)
    np.testing.assert_allclose(act_sim, D, rtol=1e-12, atol=0)
    np.testing.assert_array_equal(res.freq, freq)
    np.testing.assert_array_equal(np.diag(counts), freq)
    assert res.n_rows == indices.shape[0]


@pytest.mark.parametrize("shape", SHAPES.values(), ids=SHAPES.keys())
@pytest.mark.parametrize("dtypes", DTYPES.values(), ids=DTYPES.keys())
@pytest.mark.parametrize("dense", [True, False], ids=["dense", "sparse"])
def test_matches_scipy(rng, shape, dtypes, dense):
    n_rows, k, n = shape
    idx, val = random_codes(rng, n_rows, k, n, index_dtype=dtypes[0], value_dtype=dtypes[1])
    res = fastsae.cooccurrence(idx, val, n, dense=dense)
    assert isinstance(res, Cooccurrence) and res.dense == dense
    assert_matches_reference(res, idx, val, n)


def test_chunked_equals_one_shot_equals_merged_shards(rng):
    n = 83
    idx, val = random_codes(rng, 2500, 11, n, value_dtype=np.float64)
    one = fastsae.cooccurrence(idx, val, n, chunk_size=10_000)
    chunked = fastsae.cooccurrence(idx, val, n, chunk_size=97)
    shards = [fastsae.CooccurrenceAccumulator(n).update(idx[a:b], val[a:b]) for a, b in [(0, 700), (700, 1900), (1900, 2500)]]
    merged = shards[2]
    merged.merge(shards[0]).merge(shards[1])  # merged in another order than the rows
    for res in (chunked, merged.result()):
        np.testing.assert_array_equal(res.counts, one.counts)
        np.testing.assert_allclose(res.act_sim, one.act_sim, rtol=1e-12, atol=0)
        np.testing.assert_array_equal(res.freq, one.freq)
        assert res.n_rows == one.n_rows
    assert_matches_reference(one, idx, val, n)


def test_chunk_order_does_not_matter(rng):
    n = 61
    idx, val = random_codes(rng, 1200, 8, n, value_dtype=np.float64)
    fwd = fastsae.CooccurrenceAccumulator(n)
    bwd = fastsae.CooccurrenceAccumulator(n, dense=False)
    bounds = list(range(0, 1200, 100))
    for a in bounds:
        fwd.update(idx[a : a + 100], val[a : a + 100])
    for a in reversed(bounds):
        bwd.update(idx[a : a + 100], val[a : a + 100])
    f, b = fwd.result(), bwd.result()
    np.testing.assert_array_equal(b.counts.toarray(), f.counts)
    np.testing.assert_allclose(b.act_sim.toarray(), f.act_sim, rtol=1e-12, atol=0)


def test_results_do_not_depend_on_thread_count(tmp_path, rng):
    idx, val = random_codes(rng, 4000, 24, 157, value_dtype=np.float32)
    np.save(tmp_path / "i.npy", idx)
    np.save(tmp_path / "v.npy", val)
    code = f"""
import os, torch
torch.set_num_threads(int(os.environ["THREADS"]))  # fastsae's OpenMP runtime is torch's
import numpy as np, fastsae
from fastsae import _native
i = np.load({str(tmp_path / 'i.npy')!r}); v = np.load({str(tmp_path / 'v.npy')!r})
for dense in (True, False):
    r = fastsae.cooccurrence(i, v, 157, chunk_size=1000, dense=dense)
    c = r.counts if dense else r.counts.toarray(); d = r.act_sim if dense else r.act_sim.toarray()
    np.save({str(tmp_path)!r} + f"/c_{{_native.max_threads()}}_{{dense}}.npy", c)
    np.save({str(tmp_path)!r} + f"/d_{{_native.max_threads()}}_{{dense}}.npy", d)
print(_native.max_threads())
"""
    threads = []
    for t in ("1", "3"):
        out = run_python(code, env={"THREADS": t})
        assert out.returncode == 0, out.stderr
        threads.append(out.stdout.strip())
    assert threads == ["1", "3"]
    for dense in (True, False):
        # Bitwise equal: every entry is summed in row order whatever the thread count.
        np.testing.assert_array_equal(np.load(tmp_path / f"c_1_{dense}.npy"), np.load(tmp_path / f"c_3_{dense}.npy"))
        np.testing.assert_array_equal(np.load(tmp_path / f"d_1_{dense}.npy"), np.load(tmp_path / f"d_3_{dense}.npy"))


def test_padding_and_inactive_rows(rng):
    idx = np.array([[3, 3, 3], [0, 1, 2], [2, 2, 4]], dtype=np.int64)
    val = np.array([[0.0, 0.0, 0.0], [1.0, 0.0, 2.0], [0.5, 0.0, 0.25]], dtype=np.float32)
    res = fastsae.cooccurrence(idx, val, 5)
    assert_matches_reference(res, idx, val, 5)
    assert res.freq.tolist() == [1, 0, 2, 0, 1]
    assert res.counts[0, 2] == 1 and res.counts[2, 4] == 1 and res.counts[1].sum() == 0
    assert res.act_sim[0, 2] == 2.0 and res.act_sim[2, 2] == 4.0 + 0.25


def test_empty_input():
    res = fastsae.cooccurrence(np.zeros((0, 4), np.int32), np.zeros((0, 4), np.float32), 6)
    assert res.n_rows == 0 and res.counts.sum() == 0 and res.freq.sum() == 0


def test_torch_inputs_including_bf16(rng):
    idx, val = random_codes(rng, 300, 6, 40, value_dtype=np.float32)
    t_idx, t_val = torch.from_numpy(idx), torch.from_numpy(val)
    res = fastsae.cooccurrence(t_idx, t_val, 40)
    assert_matches_reference(res, idx, val, 40)
    bf = t_val.to(torch.bfloat16)
    res_bf = fastsae.CooccurrenceAccumulator(40).update(t_idx, bf).result()
    assert_matches_reference(res_bf, idx, bf.float().numpy(), 40)


def test_memmap_input(tmp_path, rng):
    idx, val = random_codes(rng, 5000, 12, 70, index_dtype=np.int32)
    np.save(tmp_path / "i.npy", idx)
    np.save(tmp_path / "v.npy", val)
    mi = np.load(tmp_path / "i.npy", mmap_mode="r")
    mv = np.load(tmp_path / "v.npy", mmap_mode="r")
    res = fastsae.cooccurrence(mi, mv, 70, chunk_size=333)
    assert_matches_reference(res, idx, val, 70)


def test_memory_does_not_grow_with_rows(tmp_path):
    """Streaming 96 MB of memmapped codes must not leave them resident (subprocess, RSS)."""
    n_rows, k = 1_000_000, 12
    i = np.lib.format.open_memmap(tmp_path / "i.npy", mode="w+", dtype=np.int32, shape=(n_rows, k))
    v = np.lib.format.open_memmap(tmp_path / "v.npy", mode="w+", dtype=np.float32, shape=(n_rows, k))
    base = np.arange(k, dtype=np.int32)
    for a in range(0, n_rows, 100_000):
        i[a : a + 100_000] = (base + np.arange(a, a + 100_000)[:, None] % 37)
        v[a : a + 100_000] = 1.0
    i.flush(), v.flush()
    del i, v
    code = f"""
import numpy as np, fastsae
def rss():
    for line in open('/proc/self/status'):
        if line.startswith('VmRSS:'):
            return int(line.split()[1]) * 1024
mi = np.load({str(tmp_path / 'i.npy')!r}, mmap_mode='r'); mv = np.load({str(tmp_path / 'v.npy')!r}, mmap_mode='r')
fastsae.cooccurrence(mi[:1000], mv[:1000], 64)   # warm up allocations
before = rss()
r = fastsae.cooccurrence(mi, mv, 64, chunk_size=50_000)
after = rss()
assert r.n_rows == {n_rows} and r.freq.sum() == {n_rows * k}
print(after - before)
"""
    out = run_python(code)
    assert out.returncode == 0, out.stderr
    growth = int(out.stdout.strip())
    assert growth < 40 * 2**20, f"RSS grew by {growth / 2**20:.1f} MiB over 96 MiB of input"


def test_result_is_not_changed_by_later_updates(rng):
    idx, val = random_codes(rng, 100, 5, 20)
    acc = fastsae.CooccurrenceAccumulator(20)
    acc.update(idx[:50], val[:50])
    first = acc.result()
    snapshot = first.counts.copy(), first.act_sim.copy()
    acc.update(idx[50:], val[50:])
    second = acc.result()
    np.testing.assert_array_equal(first.counts, snapshot[0])
    np.testing.assert_array_equal(first.act_sim, snapshot[1])
    assert_matches_reference(second, idx, val, 20)


def test_merge_self_pickle_and_saved_results(tmp_path, rng):
    n = 30
    idx, val = random_codes(rng, 400, 6, n, value_dtype=np.float64)
    for dense in (True, False):
        acc = fastsae.CooccurrenceAccumulator(n, dense=dense).update(idx[:200], val[:200])
        clone = pickle.loads(pickle.dumps(acc))
        clone.update(idx[200:], val[200:])
        assert_matches_reference(clone.result(), idx, val, n)
        twice = fastsae.CooccurrenceAccumulator(n, dense=dense).update(idx, val)
        twice.merge(twice)
        both = np.concatenate([idx, idx]), np.concatenate([val, val])
        assert_matches_reference(twice.result(), *both, n)
        # A saved result merges into an accumulator of either mode.
        path = tmp_path / f"part_{dense}.npz"
        acc.result().save(path)
        loaded = Cooccurrence.load(path)
        other = fastsae.CooccurrenceAccumulator(n, dense=not dense).update(idx[200:], val[200:])
        other.merge(loaded)
        assert_matches_reference(other.result(), idx, val, n)


def test_corrupt_saved_file(tmp_path):
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not a zip file")
    with pytest.raises(ValueError, match="co-occurrence"):
        Cooccurrence.load(bad)
    np.savez(tmp_path / "partial.npz", freq=np.zeros(3, np.int64))
    with pytest.raises(ValueError, match="corrupt"):
        Cooccurrence.load(tmp_path / "partial.npz")


# ---------------------------------------------------------------------------------------------
# Normalisations against direct numpy formulas.


def _np_formulas(C, D, f, N):
    C = C.astype(np.float64)
    fi, fj = f[:, None].astype(np.float64), f[None, :].astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        out = {
            "frequency": C / (fi + 1),
            "min": np.nan_to_num(C / np.minimum(fi, fj), nan=0.0, posinf=0.0),
            "jaccard": np.nan_to_num(C / (fi + fj - C), nan=0.0, posinf=0.0),
            "cosine": np.nan_to_num(D / np.sqrt(np.outer(np.diag(D), np.diag(D))), nan=0.0, posinf=0.0),
        }
        p_ij, p_i, p_j = C / N, fi / N, fj / N
        npmi_ref = np.log(p_ij / (p_i * p_j)) / -np.log(p_ij)
    npmi_ref = np.where(C == 0, -1.0, npmi_ref)
    npmi_ref = np.where(C == N, 1.0, npmi_ref)
    out["npmi"] = npmi_ref
    return out


@pytest.mark.parametrize("method", ["frequency", "min", "jaccard", "npmi", "cosine"])
def test_normalisations_match_numpy(rng, method):
    n = 45
    idx, val = random_codes(rng, 700, 6, n - 1, value_dtype=np.float64)
    idx[:, 0] = n - 1  # latent 44 fires in every row: exercises p_ij = 1 in NPMI
    val[:, 0] = 1.0
    dense = fastsae.cooccurrence(idx, val, n)
    sparse = fastsae.cooccurrence(idx, val, n, dense=False)
    ref = _np_formulas(dense.counts, dense.act_sim, dense.freq, dense.n_rows)[method]
    got = normalize(dense, method)
    np.testing.assert_allclose(got, ref, rtol=1e-12, atol=1e-15)
    # Sparse results hold the same values on the observed pairs (structure of counts).
    got_sp = normalize(sparse, method)
    assert sp.issparse(got_sp)
    mask = dense.counts > 0
    np.testing.assert_allclose(got_sp.toarray()[mask], ref[mask], rtol=1e-12, atol=1e-15)
    assert got_sp.nnz == np.count_nonzero(mask)


def test_named_normalisation_functions_and_threshold(rng):
    idx, val = random_codes(rng, 300, 5, 25)
    res = fastsae.cooccurrence(idx, val, 25)
    for fn, name in [(normalize_frequency, "frequency"), (normalize_min, "min"), (jaccard, "jaccard"),
                     (npmi, "npmi"), (act_sim_cosine, "cosine")]:
        np.testing.assert_array_equal(fn(res), normalize(res, name))
    m = normalize_frequency(res)
    t = fastsae.threshold(m, 0.1)
    np.testing.assert_array_equal(t, np.where(m >= 0.1, m, 0.0))
    ts = fastsae.threshold(sp.csr_matrix(m), 0.1)
    np.testing.assert_array_equal(ts.toarray(), t)
    assert ts.data.min() >= 0.1
    np.testing.assert_array_equal(res.normalized("frequency", tau=0.1), t)
    with pytest.raises(ValueError, match="unknown normalisation"):
        normalize(res, "pmi")


# ---------------------------------------------------------------------------------------------
# Damaged results: Cooccurrence.load and merge check contents, not only shapes.


def _valid_arrays(tmp_path, dense):
    rng = np.random.default_rng(7)
    idx, val = random_codes(rng, 12, 3, 9, value_dtype=np.float64)
    res = fastsae.CooccurrenceAccumulator(9, dense=dense).update(idx, val).result()
    path = tmp_path / f"valid_{dense}.npz"
    res.save(path)
    with np.load(path) as z:
        return res, path, {k: z[k].copy() for k in z.files}


def _sym_set(a, i, j, v):
    a[i, j] = v
    a[j, i] = v


def _pair(z, cond):  # first stored off-diagonal entry (i < j) of a CSR file satisfying cond
    rows = np.repeat(np.arange(len(z["indptr"]) - 1), np.diff(z["indptr"]))
    for e in range(len(rows)):
        if rows[e] < z["indices"][e] and cond(e):
            mirror = np.flatnonzero((rows == z["indices"][e]) & (z["indices"] == rows[e]))[0]
            return e, mirror
    raise AssertionError("no such entry")


DENSE_DAMAGE = {
    "negative_count": (lambda z: _sym_set(z["counts"], 0, 1, -1), "negative count"),
    "count_above_min_freq": (lambda z: _sym_set(z["counts"], 0, 1, min(z["freq"][0], z["freq"][1]) + 1), "exceed min"),
    "diagonal_not_freq": (lambda z: z["counts"].__setitem__((2, 2), z["freq"][2] + 1), r"counts\[2, 2\] = \d+ differs from freq\[2\]"),
    "counts_asymmetric": (lambda z: z["counts"].__setitem__((0, 1), max(z["counts"][0, 1] - 1, 0) if z["counts"][0, 1] else 1), "counts|act_sim"),
    "nan_act_sim": (lambda z: _sym_set(z["act_sim"], 1, 2, np.nan), "NaN or infinite"),
    "inf_act_sim": (lambda z: _sym_set(z["act_sim"], 1, 2, np.inf), "NaN or infinite"),
    "negative_act_sim": (lambda z: _sym_set(z["act_sim"], 3, 3, -1.0), "act_sim holds a negative value at \\(3, 3\\)"),
    "act_sim_asymmetric": (lambda z: z["act_sim"].__setitem__((0, 1), z["act_sim"][0, 1] * 1.5 + 1.0), "act_sim is not symmetric at \\(0, 1\\)|non-zero where counts are 0"),
    "act_sim_without_counts": (lambda z: _sym_set(z["act_sim"], *np.argwhere(z["counts"] == 0)[0], 1.0), "non-zero where counts are 0"),
    "freq_above_n_rows": (lambda z: (z["freq"].__setitem__(0, z["n_rows"] + 1), z["counts"].__setitem__((0, 0), z["n_rows"] + 1)), r"freq\[0\] = 13 is outside \[0, n_rows=12\]"),
    "freq_negative": (lambda z: z["freq"].__setitem__(4, -1), r"freq\[4\] = -1 is outside"),
    "n_rows_negative": (lambda z: z.__setitem__("n_rows", np.int64(-3)), "n_rows = -3 is negative"),
    "float_counts": (lambda z: z.__setitem__("counts", z["counts"].astype(np.float64)), "counts has dtype float64"),
    "int_act_sim": (lambda z: z.__setitem__("act_sim", z["act_sim"].astype(np.int64)), "act_sim has dtype int64"),
    "missing_key": (lambda z: z.pop("act_sim"), r"missing keys \['act_sim'\]"),
    "extra_key": (lambda z: z.__setitem__("extra", np.zeros(2)), r"unexpected keys \['extra'\]"),
    "unknown_format": (lambda z: z.__setitem__("format", np.array("coo")), "unknown 'format'"),
    "wrong_shape": (lambda z: z.__setitem__("counts", z["counts"][:, :8].copy()), r"counts has shape \(9, 8\)"),
}

SPARSE_DAMAGE = {
    "negative_count": (lambda z: [z["counts"].__setitem__(e, -1) for e in _pair(z, lambda e: True)], "negative count"),
    "count_above_min_freq": (lambda z: [z["counts"].__setitem__(e, 10**6) for e in _pair(z, lambda e: True)], "exceed min"),
    "counts_asymmetric": (lambda z: z["counts"].__setitem__(_pair(z, lambda e: z["counts"][e] > 1)[0], 1), "counts is not symmetric"),
    "nan_act_sim": (lambda z: z["act_sim"].__setitem__(3, np.nan), "NaN or infinite"),
    "negative_act_sim": (lambda z: [z["act_sim"].__setitem__(e, -1.0) for e in _pair(z, lambda e: True)], "negative value"),
    "act_sim_asymmetric": (lambda z: z["act_sim"].__setitem__(_pair(z, lambda e: True)[0], 1e6), "act_sim is not symmetric"),
    "diagonal_not_freq": (lambda z: z["freq"].__setitem__(0, z["freq"][0] - 1), r"differs from freq\[0\]"),
    "indptr_not_monotone": (lambda z: z["indptr"].__setitem__(2, z["indptr"][3] + 1), "counts.indptr is not non-decreasing"),
    "indptr_past_end": (lambda z: z.__setitem__("indptr", np.concatenate([z["indptr"][:-1].astype(np.int64), [10**12]])), "counts.indptr ends at 1000000000000"),
    "indices_out_of_range": (lambda z: z["indices"].__setitem__(0, 99), r"counts.indices\[0\] = 99 is outside \[0, 9\)"),
    "float_indices": (lambda z: z.__setitem__("indices", z["indices"].astype(np.float64)), "indices has dtype float64"),
    "data_length": (lambda z: z.__setitem__("act_sim", z["act_sim"][:-1].copy()), r"act_sim.data has shape"),
    "missing_indptr": (lambda z: z.pop("indptr"), r"missing keys \['indptr'\]"),
}


def _damaged(tmp_path, dense, damage):
    res, path, z = _valid_arrays(tmp_path, dense)
    damage(z)
    bad = tmp_path / "damaged.npz"
    np.savez(bad, **z)
    return res, bad, z


def _use_dense_check(monkeypatch, path):
    """Runs the dense content check on the native pass or on the numpy one; on the native
    side the numpy pass is made to fail, so a silent fallback cannot pass for native."""
    if path == "numpy":
        monkeypatch.setattr(_cooc_check, "_USE_NATIVE", False)
    else:
        def no_numpy(*args):
            raise AssertionError("the numpy dense check ran where the native one should")
        monkeypatch.setattr(_cooc_check, "_first_dense_violation_numpy", no_numpy)


@pytest.fixture(params=["native", "numpy"])
def dense_check_path(request, monkeypatch):
    _use_dense_check(monkeypatch, request.param)
    return request.param


def _load_error(path):
    with pytest.raises(ValueError) as e:
        Cooccurrence.load(path)
    return str(e.value)


@pytest.mark.parametrize("case", DENSE_DAMAGE.values(), ids=DENSE_DAMAGE.keys())
def test_load_refuses_damaged_dense_file(tmp_path, case, dense_check_path, monkeypatch):
    damage, match = case
    _, bad, _ = _damaged(tmp_path, True, damage)
    with pytest.raises(ValueError, match=match) as e:
        Cooccurrence.load(bad)
    assert str(bad) in str(e.value)
    # The other path gives the very same message.
    monkeypatch.undo()
    monkeypatch.setattr(_cooc_check, "_USE_NATIVE", dense_check_path == "numpy")
    assert _load_error(bad) == str(e.value)


@pytest.mark.parametrize("case", SPARSE_DAMAGE.values(), ids=SPARSE_DAMAGE.keys())
def test_load_refuses_damaged_sparse_file(tmp_path, case):
    damage, match = case
    _, bad, _ = _damaged(tmp_path, False, damage)
    with pytest.raises(ValueError, match=match) as e:
        Cooccurrence.load(bad)
    assert str(bad) in str(e.value)


@pytest.mark.parametrize("dense,check_path", [(True, "native"), (True, "numpy"), (False, "sparse")],
                         ids=["dense-native", "dense-numpy", "sparse"])
@pytest.mark.parametrize("name", ["negative_count", "count_above_min_freq", "nan_act_sim", "negative_act_sim",
                                  "act_sim_asymmetric", "diagonal_not_freq", "counts_asymmetric"])
def test_merge_refuses_damaged_results_and_changes_nothing(tmp_path, dense, check_path, name, monkeypatch):
    if dense:
        _use_dense_check(monkeypatch, check_path)
    damage, match = (DENSE_DAMAGE if dense else SPARSE_DAMAGE)[name]
    res, _, z = _damaged(tmp_path, dense, damage)
    if dense:
        damaged = Cooccurrence(counts=z["counts"], act_sim=z["act_sim"], freq=z["freq"], n_rows=int(z["n_rows"]))
    else:
        shape = (9, 9)
        damaged = Cooccurrence(counts=sp.csr_matrix((z["counts"], z["indices"], z["indptr"]), shape=shape),
                               act_sim=sp.csr_matrix((z["act_sim"], z["indices"], z["indptr"]), shape=shape),
                               freq=z["freq"], n_rows=int(z["n_rows"]))
    for into_dense in (True, False):
        acc = fastsae.CooccurrenceAccumulator(9, dense=into_dense).merge(res)
        with pytest.raises(ValueError, match="cannot merge: .*(" + match + ")"):
            acc.merge(damaged)
        after = acc.result()
        counts = after.counts.toarray() if sp.issparse(after.counts) else after.counts
        ref = res.counts.toarray() if sp.issparse(res.counts) else res.counts
        np.testing.assert_array_equal(counts, ref)
        assert after.n_rows == res.n_rows


@pytest.mark.parametrize("dense", [True, False], ids=["dense", "sparse"])
def test_truncated_and_bit_flipped_files(tmp_path, dense):
    res, path, _ = _valid_arrays(tmp_path, dense)
    blob = path.read_bytes()
    bad = tmp_path / "cut.npz"
    for cut in (0, 1, 30, 100, len(blob) // 3, len(blob) // 2, len(blob) - 200, len(blob) - 23, len(blob) - 1):
        bad.write_bytes(blob[:cut])
        with pytest.raises(ValueError, match="not a readable co-occurrence file") as e:
            Cooccurrence.load(bad)
        assert str(bad) in str(e.value)
    ref_c = res.counts.toarray() if dense is False else res.counts
    refused = 0
    for pos in np.linspace(0, len(blob) - 1, 97).astype(int):
        b = bytearray(blob)
        b[pos] ^= 0x10
        bad.write_bytes(bytes(b))
        try:
            got = Cooccurrence.load(bad)
        except ValueError as e:
            assert str(bad) in str(e)
            refused += 1
            continue
        # Accepted only when nothing that matters changed (e.g. a zip timestamp byte).
        gc = got.counts.toarray() if sp.issparse(got.counts) else got.counts
        np.testing.assert_array_equal(gc, ref_c)
        np.testing.assert_array_equal(got.freq, res.freq)
        assert got.n_rows == res.n_rows
    assert refused >= 80  # the data bytes are covered by the zip's CRC


def test_a_valid_file_round_trips_and_passes_check(tmp_path):
    for dense in (True, False):
        res, path, _ = _valid_arrays(tmp_path, dense)
        loaded = Cooccurrence.load(path).check()
        a = loaded.counts.toarray() if sp.issparse(loaded.counts) else loaded.counts
        b = res.counts.toarray() if sp.issparse(res.counts) else res.counts
        np.testing.assert_array_equal(a, b)


def test_flag_bit_flip_reads_as_encrypted_and_is_refused(tmp_path):
    # Found by the fuzz: bit 0 of a member's general-purpose flags means "encrypted", and
    # zipfile then raises RuntimeError; it must read as a damaged file like any other.
    _, path, _ = _valid_arrays(tmp_path, False)
    blob = bytearray(path.read_bytes())
    cd = blob.rfind(b"PK\x01\x02")  # last central-directory entry
    blob[cd + 8] |= 1
    bad = tmp_path / "flag.npz"
    bad.write_bytes(bytes(blob))
    with pytest.raises(ValueError, match="not a readable co-occurrence file .*encrypted") as e:
        Cooccurrence.load(bad)
    assert str(bad) in str(e.value)


def _first_violation_brute_force(C, D, f):
    """The definition, on whole matrices: diagonal first, then the smallest (i, j), then kind."""
    diag = np.flatnonzero(np.diagonal(C) != f)
    if diag.size:
        return "diagonal_not_freq", int(diag[0]), int(diag[0])
    Df = D.astype(np.float64)
    with np.errstate(invalid="ignore"):
        masks = [C < 0, C > np.minimum.outer(f, f), C != C.T, ~np.isfinite(Df), Df < 0, (C == 0) & (Df != 0),
                 np.abs(Df - Df.T) > _cooc_check._SYM_RTOL * np.maximum(np.abs(Df), np.abs(Df.T))]
    hits = [(int(i), int(j), k) for k, m in enumerate(masks) for i, j in np.argwhere(m)]
    if not hits:
        return None
    i, j, k = min(hits)
    return _cooc_check._DENSE_KINDS[k], i, j


def _corrupt(rng, C, D, f):
    """One to three random damages of random kinds (some one-sided, some on both triangles)."""
    n = f.shape[0]
    for _ in range(rng.integers(1, 4)):
        i, j = (int(x) for x in rng.integers(0, n, 2))
        kind = rng.integers(0, 9)
        sym = bool(rng.integers(0, 2))
        def put(M, v):
            M[i, j] = v
            if sym:
                M[j, i] = v
        if kind == 0:
            put(C, -int(rng.integers(1, 5)))
        elif kind == 1:
            put(C, min(f[i], f[j]) + int(rng.integers(1, 3)))
        elif kind == 2:
            C[i, j] += int(rng.choice([-1, 1]))
        elif kind == 3:
            put(D, rng.choice([np.nan, np.inf, -np.inf]))
        elif kind == 4:
            put(D, -float(rng.uniform(1e-12, 2.0)))
        elif kind == 5:
            zi, zj = np.nonzero(C == 0) if (C == 0).any() else (np.array([i]), np.array([j]))
            p = rng.integers(0, zi.size)
            i, j = int(zi[p]), int(zj[p])
            put(D, float(rng.uniform(0.1, 2.0)))
        elif kind == 6:  # just above / just below the symmetry tolerance
            D[i, j] = D[j, i] * (1 + _cooc_check._SYM_RTOL * rng.choice([0.5, 3.0])) + (0.0 if D[j, i] else 1e-300)
        elif kind == 7:
            C[i, i] += 1
        else:
            f[i] += int(rng.choice([-1, 1]))


def test_native_and_numpy_dense_checks_find_the_same_first_violation(monkeypatch):
    rng = np.random.default_rng(2024)
    monkeypatch.setattr(_cooc_check, "_BLOCK", 16)  # several numpy tiles per matrix
    threads = torch.get_num_threads()
    seen = set()
    try:
        for trial in range(300):
            n = int(rng.choice([1, 2, 5, 17, 63, 64, 65, 130, 200]))
            idx, val = random_codes(rng, int(rng.integers(1, 60)), int(rng.integers(1, 6)), n, value_dtype=np.float64)
            res = fastsae.CooccurrenceAccumulator(n, dense=True).update(idx, val).result()
            C, D, f = res.counts.copy(), res.act_sim.copy(), res.freq.copy()
            if trial % 10:  # every tenth stays valid
                _corrupt(rng, C, D, f)
            want = _first_violation_brute_force(C, D, f)
            got = {}
            for path in ("native", "numpy"):
                with monkeypatch.context() as m:
                    _use_dense_check(m, path)
                    got[path] = _cooc_check._first_dense_violation(C, D, f)
            # Other dtypes and layouts take the numpy path (even when native is allowed) and agree.
            with monkeypatch.context() as m:
                _use_dense_check(m, "numpy")
                m.setattr(_cooc_check, "_USE_NATIVE", True)
                got["other"] = _cooc_check._first_dense_violation(np.asfortranarray(C.astype(np.int32)),
                                                                  np.asfortranarray(D), f)
            # The native pass's min-reduction over threads (fastsae's OpenMP runtime is torch's).
            torch.set_num_threads(3)
            assert fastsae._native.max_threads() == 3
            got["native-3"] = _cooc_check._first_dense_violation(C, D, f)
            torch.set_num_threads(threads)
            assert got == {"native": want, "numpy": want, "other": want,
                           "native-3": want}, (trial, n)
            seen.add(None if want is None else want[0])
    finally:
        torch.set_num_threads(threads)
    # The trials covered every kind of violation and the valid case.
    assert seen == {None, "diagonal_not_freq", *_cooc_check._DENSE_KINDS}, seen
