"""C + D over top-k codes: fastsae (native) vs scipy.sparse (A^T A and B^T B), same run.

    python benchmarks/bench_cooccurrence.py                 # N=1M, k=64, n=9216, Zipf(1)
    python benchmarks/bench_cooccurrence.py --rows 200000   # quicker

Reports wall time, the ratio against scipy, nanoseconds per pair-update per core
(N * k(k-1)/2 pair-updates), and fastsae's peak memory over the size of its outputs
(C int64 + D float64 = 16 n^2 bytes). Codes are generated once into a memmap cache
(benchmarks/.cache) and streamed from disk, as with real data.
"""

from __future__ import annotations

import argparse
import gc

import numpy as np
import scipy.sparse as sp

import fastsae
from fastsae import _native

from _common import machine, peak_rss_bytes, reset_peak_rss, rss_bytes, save_result, timed, zipf_memmap


def scipy_cooccurrence(I, V, n):
    """The baseline: CSR codes, then A^T A (counts) and B^T B (activation products)."""
    N, k = I.shape
    t_build, (A, B) = timed(lambda: _scipy_matrices(I, V, n))
    t_c, C = timed(lambda: (A.T @ A).tocsr())
    t_d, D = timed(lambda: (B.T @ B).tocsr())
    return {"build_s": t_build, "counts_s": t_c, "act_sim_s": t_d}, C, D


def _scipy_matrices(I, V, n):
    N, k = I.shape
    idx = np.asarray(I).ravel()
    val = np.asarray(V, dtype=np.float64).ravel()
    indptr = np.arange(0, N * k + 1, k, dtype=np.int64)
    A = sp.csr_matrix((np.ones(N * k, dtype=np.int64), idx, indptr), shape=(N, n))
    B = sp.csr_matrix((val, idx.copy(), indptr.copy()), shape=(N, n))
    return A, B


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--k", type=int, default=64)
    ap.add_argument("--latents", type=int, default=9216)
    ap.add_argument("--alpha", type=float, default=1.0, help="Zipf exponent of latent frequencies")
    ap.add_argument("--chunk-entries", type=int, default=None, help="rows*k per chunk (default: fastsae's)")
    ap.add_argument("--repeat", type=int, default=2, help="fastsae runs (best is reported)")
    ap.add_argument("--skip-scipy", action="store_true")
    ap.add_argument("--sparse", action="store_true", help="also time dense=False")
    args = ap.parse_args()

    I, V = zipf_memmap(args.rows, args.latents, args.k, args.alpha)
    N, k, n = args.rows, args.k, args.latents
    pairs = N * k * (k - 1) // 2
    threads = _native.max_threads()
    chunk = None if args.chunk_entries is None else max(1, args.chunk_entries // k)
    out_bytes = 16 * n * n
    print(f"machine: {machine()}; fastsae threads: {threads}")
    print(f"codes: N={N:,} k={k} n={n:,} Zipf({args.alpha}); pair-updates {pairs:,}; outputs {out_bytes / 2**30:.2f} GiB")

    # fastsae: best of --repeat runs; peak memory = VmHWM over the RSS just before each run.
    times, peaks, res = [], [], None
    for _ in range(args.repeat):
        res = None
        gc.collect()
        base = rss_bytes()
        reset_peak_rss()
        t, res = timed(lambda: fastsae.cooccurrence(I, V, n, chunk_size=chunk, progress=False))
        peaks.append(peak_rss_bytes() - base)
        times.append(t)
    t_fast, peak = min(times), max(peaks)
    ns_pair_core = t_fast * threads / pairs * 1e9
    print(f"fastsae dense : {t_fast:8.2f} s   {ns_pair_core:.2f} ns/pair-update/core   "
          f"peak memory {peak / 2**30:.2f} GiB = {peak / out_bytes:.2f}x outputs")
    result = {
        "N": N, "k": k, "n": n, "alpha": args.alpha, "threads": threads, "pair_updates": pairs,
        "fastsae_s": t_fast, "ns_per_pair_update_per_core": ns_pair_core,
        "peak_memory_bytes": peak, "outputs_bytes": out_bytes, "peak_over_outputs": peak / out_bytes,
    }
    if args.sparse:
        t_sp, rs = timed(lambda: fastsae.cooccurrence(I, V, n, dense=False, progress=False))
        print(f"fastsae sparse: {t_sp:8.2f} s   ({rs.counts.nnz:,} stored entries)")
        result["fastsae_sparse_s"] = t_sp
        del rs
    if not args.skip_scipy:
        times, C, D = scipy_cooccurrence(I, V, n)
        products = times["counts_s"] + times["act_sim_s"]
        total = products + times["build_s"]
        print(f"scipy.sparse  : {total:8.2f} s   (CSR build {times['build_s']:.2f} s, A^T A {times['counts_s']:.2f} s, "
              f"B^T B {times['act_sim_s']:.2f} s)")
        print(f"speed-up      : {products / t_fast:.1f}x vs scipy's two products alone, {total / t_fast:.1f}x vs scipy end to end")
        # Same numbers? (exact counts; D to 1e-12 relative)
        same_c = np.array_equal(C.toarray(), res.counts)
        Dd = D.toarray()
        same_d = np.allclose(Dd, res.act_sim, rtol=1e-12, atol=0)
        print(f"check         : counts identical: {same_c}; act_sim within 1e-12: {same_d}")
        result.update(scipy=times, scipy_products_s=products, scipy_total_s=total,
                      speedup_vs_products=products / t_fast, speedup_vs_total=total / t_fast,
                      counts_identical=bool(same_c), act_sim_close=bool(same_d))
    path = save_result(f"cooccurrence_N{N}_k{k}_n{n}", result)
    print(f"saved {path}")


if __name__ == "__main__":
    main()
