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


# ---------------------------------------------------------------------------------------------
# Structurally broken scipy matrices: refused with the array and the first bad position, before
# scipy (whose C++ routines trust indptr/indices) or the native core reads them.


def _csr3():
    # [[0, 1, 2], [1, 0, 3], [2, 3, 0]]
    return sp.csr_matrix(np.array([[0, 1, 2], [1, 0, 3], [2, 3, 0]], dtype=np.float64))


def _set(m, **attrs):
    for k, v in attrs.items():
        if k in ("row", "col"):
            coords = list(m.coords)
            coords[0 if k == "row" else 1] = v
            m.coords = tuple(coords)
        else:
            setattr(m, k, v)
    return m


BROKEN = {
    "indptr_not_monotone": (lambda: _set(_csr3(), indptr=np.array([0, 2, 1, 6])), ValueError,
                            r"weights\.indptr is not non-decreasing at position 2 \(2 > 1\)"),
    "indptr_negative": (lambda: _set(_csr3(), indptr=np.array([0, -5, 4, 6])), ValueError,
                        r"weights\.indptr is not non-decreasing at position 1 \(0 > -5\)"),
    "indptr_huge": (lambda: _set(_csr3(), indptr=np.array([0, 2, 4, 2**40])), ValueError,
                    r"weights\.indptr ends at 1099511627776 but weights\.indices holds 6 entries"),
    "indptr_not_from_zero": (lambda: _set(_csr3(), indptr=np.array([1, 2, 4, 6])), ValueError,
                             r"weights\.indptr must start at 0, got 1"),
    "indptr_short": (lambda: _set(_csr3(), indptr=np.array([0, 2, 6])), ValueError,
                     r"weights\.indptr has 3 entries, expected 4"),
    "indptr_float": (lambda: _set(_csr3(), indptr=np.array([0.0, 2, 4, 6])), TypeError,
                     r"weights\.indptr must hold integers, got dtype float64"),
    "indices_out_of_range": (lambda: _set(_csr3(), indices=np.array([1, 2, 0, 7, 0, 1], np.int32)), ValueError,
                             r"weights\.indices\[3\] = 7 is outside \[0, 3\) \(in row 1\)"),
    "indices_negative": (lambda: _set(_csr3(), indices=np.array([1, -2, 0, 2, 0, 1], np.int32)), ValueError,
                         r"weights\.indices\[1\] = -2 is outside \[0, 3\) \(in row 0\)"),
    "indices_beyond_int32": (lambda: _set(_csr3(), indices=np.array([1, 2, 0, 2, 0, 2**40])), ValueError,
                             r"weights\.indices\[5\] = 1099511627776 is outside \[0, 3\) \(in row 2\)"),
    "indices_float": (lambda: _set(_csr3(), indices=np.array([1.0, 2, 0, 2, 0, 1])), TypeError,
                      r"weights\.indices must hold integers, got dtype float64"),
    "indices_uint64_huge": (lambda: _set(_csr3(), indices=np.array([1, 2, 0, 2, 0, 2**64 - 1], np.uint64)),
                            ValueError, r"weights\.indices\[5\] = 18446744073709551615 is beyond int64"),
    "data_short": (lambda: _set(_csr3(), data=np.ones(4)), ValueError,
                   r"weights\.data has shape \(4,\), expected 6 entries"),
    "data_complex": (lambda: _set(_csr3(), data=np.ones(6, np.complex128)), TypeError,
                     r"weights\.data must hold real numbers, got dtype complex128"),
    "indices_2d": (lambda: _set(_csr3(), indices=np.zeros((2, 3), np.int32)), ValueError,
                   r"weights\.indices must be 1-dimensional"),
    "csc_indptr": (lambda: _set(_csr3().tocsc(), indptr=np.array([0, 2, 1, 6])), ValueError,
                   r"weights\.indptr is not non-decreasing at position 2"),
    "csc_indices": (lambda: _set(_csr3().tocsc(), indices=np.array([1, 2, 0, 9, 0, 1], np.int32)), ValueError,
                    r"weights\.indices\[3\] = 9 is outside \[0, 3\) \(in column 1\)"),
    "coo_row_out_of_range": (lambda: _set(_csr3().tocoo(), row=np.array([0, 0, 1, 1, 2, 5], np.int32)), ValueError,
                             r"weights\.row\[5\] = 5 is outside \[0, 3\)"),
    "coo_col_negative": (lambda: _set(_csr3().tocoo(), col=np.array([1, 2, 0, -1, 0, 1], np.int32)), ValueError,
                         r"weights\.col\[3\] = -1 is outside \[0, 3\)"),
    "coo_length_mismatch": (lambda: _set(_csr3().tocoo(), row=np.array([0, 0, 1], np.int32)), ValueError,
                            r"weights\.row has 3 entries but weights\.col has 6"),
    "coo_float_coords": (lambda: _set(_csr3().tocoo(), col=np.array([1.0, 2, 0, 2, 0, 1])), TypeError,
                         r"weights\.col must hold integers"),
    "bsr_indices": (lambda: _set(sp.bsr_matrix(np.eye(4), blocksize=(2, 2)), indices=np.array([0, 3], np.int32)),
                    ValueError, r"weights\.indices\[1\] = 3 is outside \[0, 2\) \(in block row 1\)"),
    "dia_offset": (lambda: _set(sp.dia_matrix(np.eye(3)), offsets=np.array([2**62])), ValueError,
                   r"weights\.offsets\[0\] = 4611686018427387904 is outside \(-3, 3\)"),
    "lil_row_lengths": (lambda: _set(sp.lil_matrix(np.eye(3)), rows=np.array([[0, 1], [1], [2]] + [None], dtype=object)[:3]),
                        ValueError, r"weights\.rows\[0\] and weights\.data\[0\] must be lists of one length"),
    "lil_column": (lambda: _lil_bad_column(), ValueError, r"weights\.rows\[1\]\[0\] = 99 is outside \[0, 3\)"),
    "dok_key": (lambda: _dok_bad_key(), ValueError, r"weights\.row\[\d\] = 7 is outside \[0, 3\)"),
    "rectangular": (lambda: sp.csr_matrix(np.ones((2, 3))), ValueError, r"weights must be square, got shape \(2, 3\)"),
}


def _lil_bad_column():
    m = sp.lil_matrix(np.eye(3))
    m.rows[1] = [99]
    return m


def _dok_bad_key():
    m = sp.dok_matrix(np.eye(3))
    dict.__setitem__(m, (7, 0), 1.0)  # bypasses dok's own bounds check
    return m


@pytest.mark.parametrize("case", BROKEN.values(), ids=BROKEN.keys())
def test_broken_sparse_structure_is_refused_by_the_spanning_forest(case):
    make, exc, match = case
    w = make()
    before = {k: getattr(w, k).copy() for k in ("indptr", "indices", "data") if isinstance(getattr(w, k, None), np.ndarray)}
    with pytest.raises(exc, match=match):
        fastsae.maximum_spanning_forest(w)
    for k, v in before.items():  # the caller's arrays are never touched
        np.testing.assert_array_equal(getattr(w, k), v)


@pytest.mark.parametrize("name", ["indptr_not_monotone", "indptr_huge", "indices_out_of_range", "coo_row_out_of_range",
                                  "dok_key", "lil_column"])
def test_broken_sparse_structure_is_refused_everywhere(name):
    from fastsae.analysis import feature_families, geometry

    make, exc, match = BROKEN[name]
    generic = match.replace(r"weights", "{0}")
    freq = np.ones(3, np.int64)

    def make_int():  # integer counts, set on the raw attribute (no scipy call on a broken matrix)
        m = make()
        if isinstance(getattr(m, "data", None), np.ndarray) and m.data.dtype != object:
            m.data = m.data.astype(np.int64)
        elif m.format == "dok":
            m = _set(m)
            m.dtype = np.dtype(np.int64)
        return m

    for fn, label in [
        (lambda m: fastsae.threshold(m, 0.5), "matrix"),
        (lambda m: geometry.order_graph(m), "adjacency"),
        (lambda m: geometry.bandwidth(m), "adjacency"),
        (lambda m: fastsae.Cooccurrence(counts=make_int(), act_sim=_csr3(), freq=freq, n_rows=3), "counts"),
        (lambda m: fastsae.Cooccurrence(counts=_csr3().astype(np.int64), act_sim=m, freq=freq, n_rows=3), "act_sim"),
    ]:
        with pytest.raises(exc, match=generic.format(label)):
            fn(make())
    # A result whose (mutable) fields are damaged after construction: every reader re-checks.
    res = fastsae.cooccurrence(np.array([[0, 1], [1, 2]]), np.ones((2, 2)), 3, dense=False)
    res.counts = make_int()
    for fn in (fastsae.normalize_frequency, fastsae.jaccard, fastsae.npmi, fastsae.act_sim_cosine,
               feature_families, fastsae.CooccurrenceAccumulator(3, dense=False).merge):
        with pytest.raises(exc, match=generic.format("counts")):
            fn(res)


def test_duplicates_are_summed_without_touching_the_input():
    nx = pytest.importorskip("networkx")
    rows = np.array([0, 0, 1, 2, 2, 3])
    cols = np.array([1, 1, 2, 3, 3, 0])
    vals = np.array([1.0, 2.5, 0.5, 1.0, 1.0, 0.25])
    w = sp.csr_matrix((4, 4))
    w.indptr, w.indices, w.data = np.array([0, 2, 3, 5, 6]), cols.astype(np.int32), vals.copy()
    w.has_canonical_format = False
    forest = fastsae.maximum_spanning_forest(w)
    g = nx.Graph()
    for (u, v), x in {(0, 1): 3.5, (1, 2): 0.5, (2, 3): 2.0, (0, 3): 0.25}.items():
        g.add_edge(u, v, weight=x)
    ref = sorted(tuple(sorted(e)) for e in nx.maximum_spanning_tree(g).edges())
    assert sorted(map(tuple, forest.edges.tolist())) == ref
    np.testing.assert_array_equal(w.data, vals)  # summed in a copy
    np.testing.assert_array_equal(w.indices, cols)


def test_huge_order_with_few_entries_and_empty_matrices():
    nx = pytest.importorskip("networkx")
    # 2**40 nodes in COO: only the touched nodes are materialised; ids beyond int32 come back.
    ids = np.array([5, 2**33, 2**40 - 1, 7, 2**31])
    r = ids[[0, 1, 2, 3, 0, 4]]
    c = ids[[1, 2, 3, 0, 2, 1]]
    x = np.array([1.0, 2.0, 3.0, 0.5, 4.0, 1.5])
    w = sp.coo_matrix((x, (r, c)), shape=(2**40, 2**40))
    got = fastsae.maximum_spanning_forest(w)
    g = nx.Graph()
    g.add_weighted_edges_from(zip(r.tolist(), c.tolist(), x.tolist()))
    ref = nx.maximum_spanning_tree(g)
    assert sorted(map(tuple, got.edges.tolist())) == sorted(tuple(sorted(e)) for e in ref.edges())
    assert got.edges.dtype == np.int64 and got.edge_weights.sum() == pytest.approx(ref.size(weight="weight"))
    dia = sp.dia_matrix((np.array([[0.0, 2.0, 0.5]]), np.array([1])), shape=(3, 3))
    expect = fastsae.maximum_spanning_forest(dia.toarray())
    dia._shape = (2**40, 2**40)  # scipy would convert through an indptr of 2**40 entries
    got = fastsae.maximum_spanning_forest(dia)
    np.testing.assert_array_equal(got.edges, expect.edges)
    np.testing.assert_array_equal(got.edge_weights, expect.edge_weights)
    for m in (sp.csr_matrix((0, 0)), sp.coo_matrix((0, 0)), sp.csr_matrix((5, 5)), sp.coo_matrix((2**31, 2**31))):
        f = fastsae.maximum_spanning_forest(m)
        assert f.edges.shape == (0, 2) and f.edge_weights.shape == (0,)


def test_native_errors_are_never_bare_cxx_messages():
    with pytest.raises(MemoryError, match="out of memory allocating the dense co-occurrence buffers for n_latents=2147483647"):
        _native.CoocAccumulator(2**31 - 1, True)
    with pytest.raises(ValueError, match=r"n must be in \[0, 2\*\*31 - 1\]"):
        _native.msf_csr(2**62, np.zeros(3, np.int64), np.zeros(0, np.int32), np.zeros(0), "max")


@pytest.mark.parametrize("dense", [True, False], ids=["dense", "sparse"])
def test_accumulator_refuses_tables_the_machine_cannot_hold(monkeypatch, dense):
    """The native accumulator zeroes its tables, so an allocation beyond the machine's memory
    would be killed by the OOM killer instead of failing: the wrapper checks first."""
    import fastsae.cooc.accumulate as cooc_module  # where the accumulator looks it up

    monkeypatch.setattr(cooc_module, "_available_memory", lambda: 2**30)  # 1 GiB free
    n = 2**13 + 1 if dense else 2**24  # dense: 16 n^2 just above 1 GiB; sparse: 88 n = 1.4 GiB
    kind = "dense" if dense else "sparse"
    with pytest.raises(MemoryError, match=rf"{kind} co-occurrence for n_latents={n} needs 1\.\d GiB"):
        fastsae.CooccurrenceAccumulator(n, dense=dense)
    small = 2**12 if dense else 2**20  # well within 1 GiB: built
    assert fastsae.CooccurrenceAccumulator(small, dense=dense).n_latents == small
