"""Maximum spanning forest against networkx.maximum_spanning_tree."""

from __future__ import annotations

import networkx as nx
import numpy as np
import pytest
import scipy.sparse as sp
import torch

import fastsae


def random_graph(rng, n, density, *, distinct=True, symmetric=True, n_values=None):
    if distinct:
        w = rng.permutation(n * n).reshape(n, n).astype(np.float64) / (n * n) + 0.01
    else:  # heavy ties: few distinct weights
        w = rng.integers(1, (n_values or 3) + 1, size=(n, n)).astype(np.float64)
    w[rng.random((n, n)) > density] = 0.0
    np.fill_diagonal(w, 0.0)
    if symmetric:
        w = np.triu(w, 1)
        w = w + w.T
    return w


def nx_forest(w):
    """Edge set and total weight of networkx's maximum spanning forest on max(W, W^T)."""
    s = np.maximum(w, w.T)
    g = nx.Graph()
    g.add_nodes_from(range(w.shape[0]))
    iu, ju = np.nonzero(np.triu(s, 1))
    g.add_weighted_edges_from(zip(iu.tolist(), ju.tolist(), s[iu, ju].tolist()))
    t = nx.maximum_spanning_tree(g)
    edges = {(min(a, b), max(a, b)) for a, b in t.edges()}
    return edges, sum(d["weight"] for _, _, d in t.edges(data=True)), nx.number_connected_components(g)


def edge_set(forest):
    return {tuple(e) for e in forest.edges.tolist()}


GRAPHS = {
    "n2": (2, 1.0),
    "n7_dense": (7, 1.0),
    "n50_sparse": (50, 0.08),
    "n97_half": (97, 0.5),
    "n301_sparse": (301, 0.02),
}


FORMS = [(f, "auto") for f in ("dense64", "dense32", "csr", "coo_shuffled", "torch")] + [
    (f, "prim") for f in ("dense64", "dense32", "torch")  # Prim takes dense input only
]


@pytest.mark.parametrize("n, density", GRAPHS.values(), ids=GRAPHS.keys())
@pytest.mark.parametrize("form, algorithm", FORMS, ids=[f"{f}-{a}" for f, a in FORMS])
def test_distinct_weights_same_edges_as_networkx(rng, n, density, form, algorithm):
    w = random_graph(rng, n, density)
    if form == "dense32":
        w = w.astype(np.float32).astype(np.float64)  # exact in float32, so networkx sees the same weights
    ref_edges, ref_total, n_comp = nx_forest(w)
    if form == "dense64":
        arg = w
    elif form == "dense32":
        arg = w.astype(np.float32)
    elif form == "csr":
        arg = sp.csr_matrix(w)
    elif form == "torch":
        arg = torch.from_numpy(w)
    else:
        c = sp.coo_matrix(w)
        p = rng.permutation(c.nnz)
        arg = sp.coo_matrix((c.data[p], (c.row[p], c.col[p])), shape=c.shape)
    f = fastsae.maximum_spanning_forest(arg, algorithm=algorithm)
    assert f.edges.dtype == np.int64 and f.edge_weights.dtype == np.float64
    assert f.edges.shape == (n - n_comp, 2)
    assert edge_set(f) == ref_edges
    assert np.all(f.edges[:, 0] < f.edges[:, 1])
    np.testing.assert_allclose(f.edge_weights.sum(), ref_total, rtol=1e-12)
    np.testing.assert_array_equal(f.edge_weights, np.maximum(w, w.T)[f.edges[:, 0], f.edges[:, 1]])
    assert np.all(np.diff(f.edge_weights) <= 0)  # in the documented edge order


@pytest.mark.parametrize("n_values", [1, 2, 4])
def test_ties_optimal_and_deterministic(rng, n_values):
    n = 60
    w = random_graph(rng, n, 0.3, distinct=False, n_values=n_values)
    _, ref_total, _ = nx_forest(w)
    f = fastsae.maximum_spanning_forest(w)
    assert f.edge_weights.sum() == pytest.approx(ref_total)
    # The documented tie rule picks one forest: every algorithm and input order gives it.
    c = sp.coo_matrix(w)
    for _ in range(3):
        p = rng.permutation(c.nnz)
        shuffled = sp.coo_matrix((c.data[p], (c.row[p], c.col[p])), shape=c.shape)
        g = fastsae.maximum_spanning_forest(shuffled)
        np.testing.assert_array_equal(g.edges, f.edges)
        np.testing.assert_array_equal(g.edge_weights, f.edge_weights)
    prim = fastsae.maximum_spanning_forest(w, algorithm="prim")
    np.testing.assert_array_equal(prim.edges, f.edges)
    # Reference for the tie rule: Kruskal over edges sorted by (-w, u, v), written out here.
    iu, ju = np.nonzero(np.triu(w, 1))
    order = np.lexsort((ju, iu, -w[iu, ju]))
    parent = list(range(n))

    def find(x):
        while parent[x] != x:
            x = parent[x]
        return x

    expected = []
    for e in order:
        a, b = find(iu[e]), find(ju[e])
        if a != b:
            parent[a] = b
            expected.append((iu[e], ju[e]))
    assert [tuple(e) for e in f.edges.tolist()] == expected


def test_disconnected_and_trivial():
    w = np.zeros((6, 6))
    w[0, 1] = w[1, 0] = 2.0
    w[3, 4] = w[4, 3] = 1.0
    w[4, 5] = w[5, 4] = 3.0
    f = fastsae.maximum_spanning_forest(w)
    assert edge_set(f) == {(0, 1), (3, 4), (4, 5)}
    for n in (0, 1):
        for arg in (np.zeros((n, n)), sp.csr_matrix((n, n))):
            f = fastsae.maximum_spanning_forest(arg)
            assert f.edges.shape == (0, 2) and f.edge_weights.shape == (0,)
    assert fastsae.maximum_spanning_forest(np.zeros((4, 4))).edges.shape == (0, 2)


@pytest.mark.parametrize("rule", ["max", "min", "mean"])
def test_asymmetric_input_symmetrised_order_independently(rng, rule):
    n = 40
    w = random_graph(rng, n, 0.4, symmetric=False)
    sym = {"max": np.maximum(w, w.T), "min": np.minimum(w, w.T), "mean": (w + w.T) / 2}[rule]
    ref = fastsae.maximum_spanning_forest(sym)
    for arg in (w, sp.csr_matrix(w), sp.csr_matrix(w.T).T):
        f = fastsae.maximum_spanning_forest(arg, symmetrize=rule)
        np.testing.assert_array_equal(f.edges, ref.edges)
        np.testing.assert_allclose(f.edge_weights, ref.edge_weights, rtol=1e-15)
    # Relabelling the nodes relabels the forest (no dependence on feature order).
    p = rng.permutation(n)
    g = fastsae.maximum_spanning_forest(w[np.ix_(p, p)], symmetrize=rule)
    mapped = {tuple(sorted((int(p[a]), int(p[b])))) for a, b in g.edges.tolist()}
    weights = sym[np.triu_indices(n, 1)]
    weights = weights[weights != 0]
    if len(np.unique(weights)) == len(weights):  # unique forest: labels cannot matter
        assert mapped == edge_set(ref)
    np.testing.assert_allclose(g.edge_weights.sum(), ref.edge_weights.sum(), rtol=1e-12)


def test_negative_weights_are_edges():
    w = np.array([[0, -1.0, 0], [-1.0, 0, -2.0], [0, -2.0, 0]])
    f = fastsae.maximum_spanning_forest(w)
    assert edge_set(f) == {(0, 1), (1, 2)}
    np.testing.assert_array_equal(f.edge_weights, [-1.0, -2.0])


def test_self_loops_ignored_and_duplicates_summed():
    rows = np.array([0, 0, 1, 1, 2])
    cols = np.array([0, 1, 2, 2, 2])
    data = np.array([9.0, 1.0, 0.5, 0.25, 7.0])
    w = sp.coo_matrix((data, (rows, cols)), shape=(3, 3))  # (1, 2) twice: scipy sums to 0.75
    f = fastsae.maximum_spanning_forest(w)
    assert edge_set(f) == {(0, 1), (1, 2)}
    np.testing.assert_allclose(sorted(f.edge_weights), [0.75, 1.0])


def test_package_ships_type_stubs_for_the_extension():
    from importlib.resources import files

    stub = files("fastsae") / "_native.pyi"
    text = stub.read_text()
    for name in ("class CoocAccumulator", "def msf_dense", "def msf_csr", "def max_threads"):
        assert name in text
    assert (files("fastsae") / "py.typed").is_file()
