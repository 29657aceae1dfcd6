"""Bad input to every native entry point: a clear Python exception, never a crash."""

from __future__ import annotations

import textwrap

import numpy as np
import pytest
import scipy.sparse as sp

import fastsae
from fastsae import _native

from conftest import run_python


def codes():
    return np.array([[0, 1, 2], [3, 4, 5]], dtype=np.int64), np.array([[1.0, 2.0, 0.5], [1.0, 1.0, 1.0]], np.float32)


@pytest.mark.parametrize(
    "mutate, match",
    [
        (lambda i, v: (np.where(i == 4, 10, i), v), r"index out of range in row 1, column 1: 10 \(n_latents=6\)"),
        (lambda i, v: (np.where(i == 2, -1, i), v), r"index out of range in row 0, column 2: -1"),
        (lambda i, v: (np.where(i == 5, 3, i), v), r"duplicate active index 3 in row 1"),
        (lambda i, v: (i, np.where(v == 0.5, np.nan, v).astype(np.float32)), r"non-finite value in row 0, column 2"),
        (lambda i, v: (i, np.where(v == 2.0, np.inf, v).astype(np.float32)), r"non-finite value in row 0, column 1"),
        (lambda i, v: (i, -v), r"negative value in row 0, column 0"),
    ],
    ids=["too_large", "negative_index", "duplicate", "nan", "inf", "negative_value"],
)
def test_bad_codes_name_the_problem_and_change_nothing(mutate, match):
    i, v = codes()
    acc = fastsae.CooccurrenceAccumulator(6)
    acc.update(i, v)
    before = acc.result()
    bi, bv = mutate(i.copy(), v.copy())
    with pytest.raises(ValueError, match=match):
        acc.update(bi, bv)
    after = acc.result()
    np.testing.assert_array_equal(after.counts, before.counts)
    assert after.n_rows == before.n_rows == 2


def test_duplicate_padding_is_allowed():
    i = np.array([[1, 1, 1]], np.int32)
    v = np.array([[2.0, 0.0, 0.0]], np.float32)
    assert fastsae.cooccurrence(i, v, 3).freq.tolist() == [0, 1, 0]


def test_row_numbers_are_global_when_chunked():
    i = np.tile(np.arange(4, dtype=np.int64), (50, 1))
    v = np.ones((50, 4), np.float32)
    i[37, 2] = 99
    with pytest.raises(ValueError, match="row 37"):
        fastsae.cooccurrence(i, v, 10, chunk_size=8)


@pytest.mark.parametrize(
    "args, exc, match",
    [
        ((np.zeros((2, 3), np.float32), np.zeros((2, 3), np.float32)), TypeError, "indices must hold integers"),
        ((np.zeros((2, 3), np.int64), np.zeros((2, 3), np.int64)), TypeError, "values must hold floats"),
        ((np.zeros((2, 3), np.int64), np.zeros((2, 4), np.float32)), ValueError, "same"),
        ((np.zeros(3, np.int64), np.zeros(3, np.float32)), ValueError, "2-dimensional"),
        ((np.zeros((2, 3), np.int64), np.zeros((3, 2), np.float32).T), None, None),  # non-contiguous: copied
    ],
    ids=["float_indices", "int_values", "shape_mismatch", "one_dimensional", "non_contiguous_ok"],
)
def test_bad_dtypes_and_shapes(args, exc, match):
    acc = fastsae.CooccurrenceAccumulator(4)
    if exc is None:
        acc.update(*args)
        return
    with pytest.raises(exc, match=match):
        acc.update(*args)


def test_native_layer_rejects_what_the_wrapper_would_convert():
    acc = _native.CoocAccumulator(8, True)
    i = np.zeros((4, 3), np.int64)
    v = np.ones((4, 3), np.float32)
    with pytest.raises(ValueError, match="C-contiguous"):
        acc.update(np.asfortranarray(np.zeros((4, 3), np.int64) + np.arange(3)), v)
    with pytest.raises(ValueError, match="dtype uint16"):
        acc.update(i.astype(np.uint16), v)
    with pytest.raises(ValueError, match="dtype float16"):
        acc.update(i, v.astype(np.float16))
    with pytest.raises(ValueError, match="2-dimensional"):
        acc.update(i.ravel(), v.ravel())


@pytest.mark.parametrize("n", [0, -3])
def test_bad_n_latents(n):
    with pytest.raises(ValueError, match="n_latents must be positive"):
        fastsae.CooccurrenceAccumulator(n)
    with pytest.raises(ValueError, match="n_latents must be positive"):
        _native.CoocAccumulator(n, True)
    with pytest.raises(TypeError):
        fastsae.CooccurrenceAccumulator(2.5)


def test_merge_mismatch():
    with pytest.raises(ValueError, match="n_latents"):
        fastsae.CooccurrenceAccumulator(4).merge(fastsae.CooccurrenceAccumulator(5))
    with pytest.raises(ValueError, match="differ"):
        _native.CoocAccumulator(4, True).merge(_native.CoocAccumulator(4, False))


def test_dense_too_large_suggests_sparse():
    with pytest.raises(MemoryError, match="dense=False"):
        fastsae.CooccurrenceAccumulator(2_000_000)


@pytest.mark.parametrize(
    "w, match",
    [
        (np.array([[0, np.nan], [1, 0]]), "NaN or infinite value at \\(0, 1\\)"),
        (np.array([[0, 1], [np.inf, 0]]), "NaN or infinite"),
        (np.zeros((2, 3)), "square"),
        (np.zeros(3), "square"),
        (sp.csr_matrix(np.array([[0, np.nan], [0, 0]])), "NaN or infinite"),
    ],
    ids=["nan", "inf", "rectangular", "vector", "sparse_nan"],
)
def test_spanning_forest_bad_input(w, match):
    with pytest.raises(ValueError, match=match):
        fastsae.maximum_spanning_forest(w)


def test_spanning_forest_bad_options_and_native_checks():
    with pytest.raises(ValueError, match="symmetrize"):
        fastsae.maximum_spanning_forest(np.eye(3), symmetrize="sum")
    with pytest.raises(ValueError, match="algorithm"):
        fastsae.maximum_spanning_forest(np.eye(3), algorithm="boruvka")
    with pytest.raises(ValueError, match="prim"):
        fastsae.maximum_spanning_forest(sp.eye(3), algorithm="prim")
    with pytest.raises(TypeError, match="real numbers"):
        fastsae.maximum_spanning_forest(np.eye(3, dtype=complex))
    indptr = np.array([0, 2, 2, 2], np.int64)
    w = np.array([1.0, 2.0])
    with pytest.raises(ValueError, match="outside"):
        _native.msf_csr(3, indptr, np.array([1, 5], np.int32), w, "max")
    with pytest.raises(ValueError, match="unsorted or duplicate"):
        _native.msf_csr(3, indptr, np.array([1, 1], np.int32), w, "max")
    with pytest.raises(ValueError, match="unsorted or duplicate"):
        _native.msf_csr(3, indptr, np.array([2, 1], np.int32), w, "min")
    with pytest.raises(ValueError, match="non-decreasing"):
        _native.msf_csr(3, np.array([0, 2, 1, 2], np.int64), np.array([1, 2], np.int32), w, "max")
    with pytest.raises(ValueError, match="non-decreasing"):  # a row pointing past the data
        _native.msf_csr(3, np.array([0, 1000, 1, 2], np.int64), np.array([1, 2], np.int32), w, "max")
    with pytest.raises(ValueError, match="start at 0"):
        _native.msf_csr(3, np.array([0, 1, 1, 1], np.int64), np.array([1, 2], np.int32), w, "max")
    with pytest.raises(ValueError, match="one length"):
        _native.msf_csr(3, indptr, np.array([1], np.int32), w, "max")
    with pytest.raises(ValueError, match="n \\+ 1"):
        _native.msf_csr(4, indptr, np.array([1, 2], np.int32), w, "max")
    with pytest.raises(ValueError, match="expected int32"):
        _native.msf_csr(3, indptr, np.array([1, 2], np.int64), w, "max")


FUZZ = textwrap.dedent(
    """
    import numpy as np
    from hypothesis import HealthCheck, given, settings, strategies as st
    from hypothesis.extra import numpy as hnp
    import scipy.sparse as sp
    import fastsae
    from fastsae import _native

    DTYPES = st.sampled_from([np.int8, np.int32, np.int64, np.uint16, np.uint64, np.float16, np.float32,
                              np.float64, np.bool_, np.complex64])
    OK = (ValueError, TypeError, MemoryError, OverflowError, IndexError)
    import collections, functools
    CALLS = collections.Counter()

    def counted(fn):  # cases actually run per entry point (hypothesis may stop early)
        @functools.wraps(fn)
        def inner(*a, **k):
            CALLS[fn.__name__] += 1
            return fn(*a, **k)
        return inner
    SETTINGS = settings(max_examples=MAX, deadline=None, database=None,
                        suppress_health_check=list(HealthCheck))

    def arrays(min_dims=0, max_dims=3):
        shapes = hnp.array_shapes(min_dims=min_dims, max_dims=max_dims, min_side=0, max_side=6)
        return DTYPES.flatmap(lambda dt: hnp.arrays(dt, shapes, elements=hnp.from_dtype(np.dtype(dt), allow_nan=True, allow_infinity=True)))

    @st.composite
    def maybe_strided(draw, strat):
        a = draw(strat)
        if a.ndim >= 1 and a.shape[0] > 1 and draw(st.booleans()):
            a = a[::2]
        if a.ndim == 2 and draw(st.booleans()):
            a = a.T
        return a

    @SETTINGS
    @given(n=st.integers(-5, 40), dense=st.booleans(), i=maybe_strided(arrays()), v=maybe_strided(arrays()))
    @counted
    def fuzz_accumulator(n, dense, i, v):
        for fn in (lambda: _native.CoocAccumulator(n, dense).update(i, v),
                   lambda: fastsae.CooccurrenceAccumulator(n, dense=dense).update(i, v),
                   lambda: fastsae.cooccurrence(i, v, n, dense=dense, chunk_size=2)):
            try:
                fn()
            except OK:
                pass

    @SETTINGS
    @given(n=st.integers(1, 12), dense=st.booleans(), c=maybe_strided(arrays()), s=maybe_strided(arrays()),
           f=maybe_strided(arrays()), rows=st.integers(-3, 10))
    @counted
    def fuzz_totals(n, dense, c, s, f, rows):
        acc = _native.CoocAccumulator(n, dense)
        for fn in (lambda: acc.add_dense_totals(c, s, f, rows),
                   lambda: acc.add_sparse_totals(c.ravel(), s.ravel(), c.ravel(), s.ravel(), f, rows)):
            try:
                fn()
            except OK:
                pass

    @SETTINGS
    @given(w=maybe_strided(arrays()), rule=st.sampled_from(["max", "min", "mean", "bad"]),
           algo=st.sampled_from(["auto", "kruskal", "prim", "x"]), n=st.integers(-2, 8),
           p=maybe_strided(arrays(1, 1)), c=maybe_strided(arrays(1, 1)))
    @counted
    def fuzz_forest(w, rule, algo, n, p, c):
        import scipy.sparse as sp
        for fn in (lambda: _native.msf_dense(w, rule, algo),
                   lambda: fastsae.maximum_spanning_forest(w, symmetrize=rule, algorithm=algo),
                   lambda: fastsae.maximum_spanning_forest(sp.csr_matrix(w), symmetrize=rule),
                   lambda: _native.msf_csr(n, p, c, w.ravel() if w.ndim else w, rule),
                   lambda: _native.msf_csr(n, p.astype(np.int64), c.astype(np.int32), w.ravel().astype(np.float64), rule)):
            try:
                fn()
            except OK:
                pass

    # Structurally malformed sparse matrices: a valid matrix whose raw attributes are then
    # replaced by arbitrary arrays (any length, dtype, values; shapes up to 2**40).
    INTS = st.sampled_from([np.int8, np.int32, np.int64, np.uint32, np.uint64, np.float64, np.bool_])
    VALS = st.sampled_from([np.float64, np.float32, np.int64, np.int32, np.bool_, np.complex64, np.uint8])

    def raw(dt, lo=-4, hi=12):
        big = st.sampled_from([2**31 - 1, 2**31, 2**32, 2**40, 2**62, -2**31 - 1])
        return st.lists(st.one_of(st.integers(lo, hi), big), max_size=9).map(
            lambda v: np.array(v, dtype=object).astype(dt) if np.dtype(dt).kind != "b" else np.array(v, dtype=np.int64).astype(dt))

    @st.composite
    def bad_sparse(draw):
        fmt = draw(st.sampled_from(["csr", "csc", "coo", "bsr", "dia", "lil", "dok"]))
        r = draw(st.sampled_from([0, 1, 2, 3, 5, 2**31, 2**40]))
        c = r if draw(st.booleans()) else draw(st.sampled_from([0, 1, 3, 4]))
        small = (min(r, 6), min(c, 6))
        dense = draw(hnp.arrays(np.float64, small, elements=st.sampled_from([0.0, 0.5, 1.0, 2.0, -1.0, np.nan])))
        m = getattr(sp, fmt + "_matrix")(dense)
        if (r, c) != small:
            m._shape = (r, c)
        def safe_raw(dt):
            try:
                return draw(raw(dt))
            except (OverflowError, ValueError, TypeError):
                return np.zeros(1, dtype=np.int64)
        for attr in {"csr": ["indptr", "indices", "data"], "csc": ["indptr", "indices", "data"],
                     "coo": ["row", "col", "data"], "bsr": ["indptr", "indices"], "dia": ["offsets"],
                     "lil": [], "dok": []}[fmt]:
            if draw(st.booleans()):
                dt = draw(VALS if attr == "data" else INTS)
                arr = safe_raw(dt)
                try:
                    if fmt == "coo" and attr in ("row", "col"):
                        coords = list(m.coords); coords[0 if attr == "row" else 1] = arr; m.coords = tuple(coords)
                    else:
                        setattr(m, attr, arr)
                except (ValueError, TypeError, AttributeError):
                    pass
        if fmt == "lil" and small[0] and draw(st.booleans()):
            m.rows[0] = draw(st.lists(st.integers(-3, 2**33), max_size=4)); 
        if fmt == "dok" and draw(st.booleans()):
            dict.__setitem__(m, (draw(st.integers(-3, 2**33)), draw(st.integers(-3, 2**33))), 1.0)
        return m

    def attempt(*fns):
        for fn in fns:
            try:
                fn()
            except OK:
                pass

    @SETTINGS
    @given(m=bad_sparse(), m2=bad_sparse(), rule=st.sampled_from(["max", "min", "mean"]))
    @counted
    def fuzz_sparse(m, m2, rule):
        from fastsae import cooc as C
        from fastsae.analysis import family_stats, feature_families, geometry
        n = m.shape[0] if m.shape[0] < 10 else 3
        freq = np.full(n, 1, np.int64)
        def result(counts, act_sim):
            return C.Cooccurrence(counts=counts, act_sim=act_sim, freq=freq, n_rows=2)
        def normalise_all(counts, act_sim):
            res = result(counts, act_sim)
            for meth in ("frequency", "min", "jaccard", "npmi", "cosine"):
                attempt(lambda: C.normalize(res, meth))
            attempt(lambda: feature_families(res), lambda: feature_families(res, method="precise"),
                    lambda: family_stats(res, []), lambda: fastsae.CooccurrenceAccumulator(max(n, 1), dense=False).merge(res),
                    lambda: fastsae.CooccurrenceAccumulator(max(n, 1)).merge(res))
        attempt(lambda: fastsae.maximum_spanning_forest(m, symmetrize=rule),
                lambda: C.threshold(m, 0.5),
                lambda: geometry.order_graph(m), lambda: geometry.order_graph(m, "spectral"),
                lambda: geometry.bandwidth(m),
                lambda: normalise_all(m, m2), lambda: normalise_all(m, m))

    @SETTINGS
    @given(i=maybe_strided(arrays()), v=maybe_strided(arrays()), w=maybe_strided(arrays()), n=st.integers(-2, 12))
    @counted
    def fuzz_public(i, v, w, n):
        from fastsae.analysis import geometry
        import scipy.sparse as sp
        attempt(lambda: fastsae.distributed_cooccurrence(i, v, n, dense=False),
                lambda: fastsae.distributed_cooccurrence(i, v, n, shard_rows=True),
                lambda: geometry.encoder_decoder_alignment(w, v),
                lambda: geometry.similarity_graph(w, 0.5),
                lambda: geometry.decoder_ordering(w),
                lambda: geometry.log_feature_density(i, n),
                lambda: geometry.order_graph(w), lambda: geometry.bandwidth(w),
                lambda: fastsae.threshold(w, 0.5))

    @SETTINGS
    @given(cut=st.floats(0, 1), flips=st.lists(st.tuples(st.floats(0, 1), st.integers(0, 7)), max_size=3),
           sparse=st.booleans())
    @counted
    def fuzz_load(cut, flips, sparse):
        import os, tempfile
        blob = VALID[sparse]
        b = bytearray(blob[: max(1, int(len(blob) * (1 - cut / 4)))] if cut > 0.5 else blob)
        for pos, bit in flips:
            b[int(pos * (len(b) - 1))] ^= 1 << bit
        fd, path = tempfile.mkstemp(suffix=".npz")
        with os.fdopen(fd, "wb") as f:
            f.write(b)
        try:
            r = fastsae.Cooccurrence.load(path)
            ref = fastsae.Cooccurrence.load(VALID_PATH[sparse])
            dense = lambda a: a.toarray() if hasattr(a, "toarray") else a
            # Accepted only when nothing that matters changed (zip timestamps are not checked).
            assert np.array_equal(dense(r.counts), dense(ref.counts)) and np.array_equal(dense(r.act_sim), dense(ref.act_sim))
            assert np.array_equal(r.freq, ref.freq) and r.n_rows == ref.n_rows
        except ValueError as e:
            assert path in str(e), e
        finally:
            os.unlink(path)

    import tempfile, os
    _rng = np.random.default_rng(0)
    _i = np.stack([_rng.permutation(9)[:3] for _ in range(20)]); _v = _rng.random((20, 3)) + 0.1
    VALID, VALID_PATH = {}, {}
    for _sp in (False, True):
        VALID_PATH[_sp] = os.path.join(tempfile.mkdtemp(), "valid.npz")
        fastsae.cooccurrence(_i, _v, 9, dense=not _sp).save(VALID_PATH[_sp])
        VALID[_sp] = open(VALID_PATH[_sp], "rb").read()

    import sys, time
    ENTRY = os.environ.get("FUZZ_ENTRY", "").split() or ["fuzz_accumulator", "fuzz_totals", "fuzz_forest", "fuzz_sparse", "fuzz_public", "fuzz_load"]
    for name in ENTRY:
        t0 = time.time()
        globals()[name]()
        print(f"{name}: {CALLS[name]} cases in {time.time() - t0:.1f} s", flush=True)
    print("survived")
    """
)


def test_fuzz_native_entry_points_never_crash():
    """Hundreds of malformed inputs per entry point, in a subprocess: a segfault fails the test
    (tools/asan_fuzz.sh runs >= 10,000 per entry point under AddressSanitizer)."""
    out = run_python(FUZZ.replace("MAX", "200"), timeout=600)
    assert out.returncode == 0, f"exit {out.returncode}\n{out.stdout[-2000:]}\n{out.stderr[-4000:]}"
    assert "survived" in out.stdout
