"""Feature families end to end from top-k codes: fastsae (native C and D, native spanning forest,
family search) vs a saerch-style pipeline (dense numpy A^T A in row chunks + networkx
maximum_spanning_tree + the same family search on its tree), same codes, same run. Also reports
precision/recall of both family methods against the planted truth.

    python benchmarks/bench_families.py                      # N=272,000, n=9,216, k=64
    python benchmarks/bench_families.py --rows 50000 --skip-baseline
"""

from __future__ import annotations

import argparse
import time

import networkx as nx
import numpy as np

import fastsae
from fastsae.analysis import feature_families
from fastsae.cooc import Cooccurrence, normalize_frequency, threshold
from fastsae.synthetic import planted_hierarchy_codes

from _common import machine, save_result


def saerch_style(indices, values, n, tau, chunk=8192):
    """The baseline: dense 0/1 and value matrices per row chunk, C += A^T A, D += B^T B (numpy
    BLAS), then C / (n_i + 1), threshold, networkx maximum spanning tree."""
    C = np.zeros((n, n), dtype=np.float64)
    D = np.zeros((n, n), dtype=np.float64)
    rows = np.arange(chunk)
    for a in range(0, indices.shape[0], chunk):
        idx, val = indices[a : a + chunk], values[a : a + chunk].astype(np.float64)
        r = rows[: idx.shape[0]]
        A = np.zeros((idx.shape[0], n), dtype=np.float32)
        B = np.zeros((idx.shape[0], n), dtype=np.float64)
        A[r[:, None], idx] = (val > 0)
        B[r[:, None], idx] = val
        C += A.T.astype(np.float64) @ A
        D += B.T @ B
    freq = np.diag(C).copy()
    W = C / (freq[:, None] + 1.0)
    W[W < tau] = 0.0
    np.fill_diagonal(W, 0.0)
    S = np.maximum(W, W.T)
    iu, ju = np.nonzero(np.triu(S, 1))
    g = nx.Graph()
    g.add_nodes_from(range(n))
    g.add_weighted_edges_from(zip(iu.tolist(), ju.tolist(), S[iu, ju].tolist()))
    tree = nx.maximum_spanning_tree(g)
    return C, D, freq, tree


def score(fams, planted):
    correct = sum(1 for f in fams if f.parent in planted and 2 * len(set(f.children) & planted[f.parent]) >= len(f.children))
    recalled = sum(1 for p, cs in planted.items() if any(f.parent == p and 2 * len(set(f.children) & cs) >= len(cs) for f in fams))
    return {"found": len(fams), "precision": correct / max(len(fams), 1), "recall": recalled / len(planted)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=272_000)
    ap.add_argument("--latents", type=int, default=9216)
    ap.add_argument("--k", type=int, default=64)
    ap.add_argument("--families", type=int, default=20)
    ap.add_argument("--tau", type=float, default=0.1)
    ap.add_argument("--skip-baseline", action="store_true")
    args = ap.parse_args()
    print(f"machine: {machine()}")
    data = planted_hierarchy_codes(args.rows, args.latents, args.k, n_families=args.families, children_per_family=6, seed=0)
    planted = {int(p): set(map(int, cs)) for p, cs in zip(data.parents, data.children)}
    n = args.latents

    t0 = time.perf_counter()
    cooc = fastsae.cooccurrence(data.indices, data.values, n)
    fams = feature_families(cooc, tau=args.tau, iterations=0)
    t_fast = time.perf_counter() - t0
    print(f"fastsae (C, D, forest, families; 1 pass): {t_fast:.2f} s, {len(fams)} families")
    result = {"N": args.rows, "n": n, "k": args.k, "fastsae_s": t_fast}
    for method in ("paper", "precise"):
        t = time.perf_counter()
        f = feature_families(cooc, tau=args.tau, method=method)
        s = score(f, planted)
        s["seconds"] = time.perf_counter() - t
        print(f"  method={method:8s} found {s['found']:4d}  precision {s['precision']:.2f}  recall {s['recall']:.2f}  "
              f"({s['seconds']:.2f} s, all passes)")
        result[f"quality_{method}"] = s
    if not args.skip_baseline:
        t0 = time.perf_counter()
        C, D, freq, tree = saerch_style(data.indices, data.values, n, args.tau)
        t_base = time.perf_counter() - t0
        # The same single-pass family search on the baseline's tree, for a like-for-like total.
        base = Cooccurrence(counts=C.astype(np.int64), act_sim=D, freq=freq.astype(np.int64), n_rows=args.rows)
        t1 = time.perf_counter()
        feature_families(base, tau=args.tau, iterations=0)
        t_base += time.perf_counter() - t1
        print(f"saerch-style (dense numpy A^T A + networkx): {t_base:.2f} s")
        print(f"speed-up: {t_base / t_fast:.1f}x")
        result.update(baseline_s=t_base, speedup=t_base / t_fast)
    path = save_result(f"families_N{args.rows}_n{n}_k{args.k}", result)
    print(f"saved {path}")


if __name__ == "__main__":
    main()
