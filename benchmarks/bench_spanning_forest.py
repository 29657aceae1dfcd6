"""Maximum spanning forest at n = 12,288 on a tau-thresholded normalised co-occurrence matrix:
fastsae (native Kruskal; Prim for comparison) vs scipy.sparse.csgraph.minimum_spanning_tree
(on negated weights) vs networkx.maximum_spanning_tree, same run, same graph.

    python benchmarks/bench_spanning_forest.py            # n=12288
    python benchmarks/bench_spanning_forest.py --n 3072 --compare-prim

The graph: codes with planted feature families (fastsae.synthetic) -> C -> C_ij / (n_i + 1)
(the paper's normalisation, asymmetric) -> zero below tau=0.1 -> symmetrised by max.
"""

from __future__ import annotations

import argparse
import gc

import networkx as nx
import numpy as np
import scipy.sparse as sp
from scipy.sparse.csgraph import minimum_spanning_tree

import fastsae
from fastsae.cooc import normalize_frequency, threshold
from fastsae.synthetic import planted_hierarchy_codes

from _common import machine, save_result, timed


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=12_288)
    ap.add_argument("--rows", type=int, default=200_000)
    ap.add_argument("--k", type=int, default=64)
    ap.add_argument("--tau", type=float, default=0.1)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--compare-prim", action="store_true", help="also time the dense Prim variant")
    ap.add_argument("--skip-networkx", action="store_true")
    args = ap.parse_args()
    n = args.n
    print(f"machine: {machine()}")

    codes = planted_hierarchy_codes(args.rows, n, args.k, n_families=n // 64, children_per_family=8, seed=0)
    cooc = fastsae.cooccurrence(codes.indices, codes.values, n)
    del codes
    W = threshold(normalize_frequency(cooc), args.tau)  # dense [n, n], asymmetric
    del cooc
    gc.collect()
    W_csr = sp.csr_matrix(W)  # asymmetric, as the normalisation leaves it
    S_csr = sp.csr_matrix(np.maximum(W, W.T))
    n_edges = S_csr.nnz // 2
    print(f"graph: n={n:,}, {n_edges:,} undirected edges after tau={args.tau} (density {n_edges / (n * (n - 1) / 2):.4f})")

    t_dense, f = timed(lambda: fastsae.maximum_spanning_forest(W), args.repeat)
    t_csr, f_csr = timed(lambda: fastsae.maximum_spanning_forest(W_csr), args.repeat)
    neg = -W_csr  # scipy treats the matrix as undirected: min over both directions of -W = max rule
    t_scipy, mst = timed(lambda: minimum_spanning_tree(neg), args.repeat)
    scipy_total = -mst.sum()
    print(f"fastsae (dense, asymmetric input) {t_dense * 1e3:9.1f} ms   forest weight {f.edge_weights.sum():.6f}, {len(f.edges):,} edges")
    print(f"fastsae (CSR input, asymmetric)   {t_csr * 1e3:9.1f} ms")
    print(f"scipy csgraph MST (same CSR, -W)  {t_scipy * 1e3:9.1f} ms   forest weight {scipy_total:.6f}")
    result = {
        "n": n, "edges": int(n_edges), "tau": args.tau, "fastsae_dense_s": t_dense, "fastsae_csr_s": t_csr,
        "scipy_s": t_scipy, "speedup_vs_scipy_csr": t_scipy / t_csr, "speedup_vs_scipy_dense": t_scipy / t_dense,
        "same_total_weight_scipy": bool(np.isclose(scipy_total, f.edge_weights.sum(), rtol=1e-9)),
    }
    assert np.array_equal(f.edges, f_csr.edges)
    if args.compare_prim:
        t_prim, fp = timed(lambda: fastsae.maximum_spanning_forest(W, algorithm="prim"), args.repeat)
        assert np.array_equal(fp.edges, f.edges)
        print(f"fastsae Prim (dense)              {t_prim * 1e3:9.1f} ms")
        result["fastsae_prim_s"] = t_prim
    if not args.skip_networkx:
        def build():
            g = nx.Graph()
            g.add_nodes_from(range(n))
            u = sp.triu(S_csr, 1, format="coo")
            g.add_weighted_edges_from(zip(u.row.tolist(), u.col.tolist(), u.data.tolist()))
            return g
        t_build, g = timed(build)
        t_nx, t = timed(lambda: nx.maximum_spanning_tree(g))
        nx_total = sum(d["weight"] for *_, d in t.edges(data=True))
        print(f"networkx maximum_spanning_tree    {t_nx * 1e3:9.1f} ms   (+ {t_build * 1e3:.0f} ms to build the Graph) forest weight {nx_total:.6f}")
        result.update(networkx_s=t_nx, networkx_build_s=t_build, speedup_vs_networkx=t_nx / t_csr,
                      same_total_weight_networkx=bool(np.isclose(nx_total, f.edge_weights.sum(), rtol=1e-9)))
        print(f"speed-up: {t_scipy / t_csr:.1f}x vs scipy (both from CSR), {t_scipy / t_dense:.1f}x with fastsae on the dense matrix; "
              f"{t_nx / t_csr:.0f}x vs networkx (its Graph build not counted)")
    path = save_result(f"spanning_forest_n{n}", result)
    print(f"saved {path}")


if __name__ == "__main__":
    main()
