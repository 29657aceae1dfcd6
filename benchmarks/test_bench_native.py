"""pytest-benchmark suite (quick): fastsae vs scipy on the same inputs, grouped for comparison.

    .venv/bin/python -m pytest benchmarks --benchmark-only          # or: make bench

The full-size runs with peak memory and ratios are the scripts next to this file.
"""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
from scipy.sparse.csgraph import minimum_spanning_tree

import fastsae
from fastsae.cooc import normalize_frequency, threshold
from fastsae.synthetic import planted_hierarchy_codes, zipf_codes

N, K, NLAT = 100_000, 64, 4096


@pytest.fixture(scope="module")
def codes():
    return zipf_codes(N, NLAT, K, alpha=1.0, seed=1)


@pytest.mark.benchmark(group="cooccurrence N=100k k=64 n=4096")
def test_cooc_fastsae_dense(benchmark, codes):
    res = benchmark(fastsae.cooccurrence, *codes, NLAT)
    assert res.n_rows == N


@pytest.mark.benchmark(group="cooccurrence N=100k k=64 n=4096")
def test_cooc_fastsae_sparse(benchmark, codes):
    res = benchmark(fastsae.cooccurrence, *codes, NLAT, dense=False)
    assert res.n_rows == N


@pytest.mark.benchmark(group="cooccurrence N=100k k=64 n=4096")
def test_cooc_scipy(benchmark, codes):
    idx, val = codes

    def run():
        indptr = np.arange(0, N * K + 1, K)
        A = sp.csr_matrix((np.ones(N * K, np.int64), idx.ravel(), indptr), shape=(N, NLAT))
        B = sp.csr_matrix((val.ravel().astype(np.float64), idx.ravel(), indptr), shape=(N, NLAT))
        return A.T @ A, B.T @ B

    C, _ = benchmark.pedantic(run, rounds=1, iterations=1)
    assert C.shape == (NLAT, NLAT)


@pytest.fixture(scope="module")
def graph():
    n = 3072
    c = planted_hierarchy_codes(100_000, n, 64, n_families=48, children_per_family=8)
    return sp.csr_matrix(threshold(normalize_frequency(fastsae.cooccurrence(c.indices, c.values, n)), 0.1))


@pytest.mark.benchmark(group="spanning forest n=3072")
def test_msf_fastsae(benchmark, graph):
    f = benchmark(fastsae.maximum_spanning_forest, graph)
    assert len(f.edges) > 0


@pytest.mark.benchmark(group="spanning forest n=3072")
def test_msf_scipy(benchmark, graph):
    neg = -graph
    t = benchmark(minimum_spanning_tree, neg)
    assert t.nnz > 0
