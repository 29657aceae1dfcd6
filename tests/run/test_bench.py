"""``fastsae bench cooc`` (fastsae.run.bench): its figures against independent computations."""

from __future__ import annotations

import json

import networkx as nx
import numpy as np

import fastsae
from fastsae.groundtruth.codes import planted_hierarchy_codes
from fastsae.run.bench import bench_cooc
from fastsae.run.cli import main

from conftest import scipy_reference


def test_bench_cooc_reports_what_it_measured(tmp_path, capsys):
    rows, n, k, tau = 3000, 120, 6, 0.1
    res = bench_cooc(rows, n, k, n_families=4, children_per_family=3, tau=tau, seed=3, out=str(tmp_path))
    s = res.summary
    data = planted_hierarchy_codes(rows, n, k, n_families=4, children_per_family=3, seed=3)
    C, D, freq = scipy_reference(data.indices, data.values, n)
    np.testing.assert_array_equal(res.cooc.counts, C)
    np.testing.assert_allclose(res.cooc.act_sim, D, rtol=1e-12)
    active = (data.values > 0).sum(axis=1)
    assert s["pair_updates"] == int((active * (active - 1) // 2).sum())
    # the forest of the thresholded C_ij / (n_i + 1), symmetrised by max, as networkx sees it
    W = C / (freq[:, None] + 1.0)
    np.fill_diagonal(W, 0)
    W = np.where(W >= tau, W, 0)
    W = np.maximum(W, W.T)
    G = nx.from_numpy_array(W)
    forest = nx.maximum_spanning_tree(G)
    assert s["forest_edges"] == forest.number_of_edges()
    planted = {(int(p), int(c)) for p, cs in zip(data.parents, data.children) for c in cs}
    directed = {(u, v) if freq[u] >= freq[v] else (v, u) for u, v in forest.edges()}
    assert s["planted_parent_child_edges"] == len(planted) == 12
    assert s["planted_edges_in_forest"] == len(planted & directed)
    assert json.loads((tmp_path / "summary.json").read_text()) == s
    np.testing.assert_array_equal(fastsae.Cooccurrence.load(tmp_path / "cooc.npz").counts, C)
    assert main(["bench", "cooc", "--rows", "2000", "--latents", "80", "--k", "5", "--families", "3"]) == 0
    assert "planted parent->child edges in the forest" in capsys.readouterr().out
