"""Cooccurrence.load of a dense result: the content check, native vs the numpy baseline.

    python benchmarks/bench_cooc_load.py                      # n=9216 (1.36 GB file), 200k rows, k=32
    python benchmarks/bench_cooc_load.py --n 2048 --rows 50000

Builds a valid dense result with the real accumulator from Zipf(1) codes (cached in
benchmarks/.cache), saves it, then times (best of --repeat): reading the file alone
(read_npz: the zip members with their CRC, what np.load does), Cooccurrence.load with the
numpy content check forced (the baseline), and Cooccurrence.load with the native check. The
ratio is numpy-check load over native-check load; check_s is load minus reading.
"""

from __future__ import annotations

import argparse
import os
import tempfile

import torch

import fastsae
from fastsae import _cooc_check
from fastsae.cooc import Cooccurrence

from _common import save_result, timed, zipf_memmap


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=9216)
    ap.add_argument("--rows", type=int, default=200_000)
    ap.add_argument("--k", type=int, default=32)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--dir", default=tempfile.gettempdir(), help="where the result file is written")
    ap.add_argument("--no-save", action="store_true", help="do not write benchmarks/results/cooc_load_n{n}_N{rows}_k{k}.json")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)  # fastsae's OpenMP runtime is torch's

    path = os.path.join(args.dir, f"fastsae_bench_cooc_n{args.n}_N{args.rows}_k{args.k}.npz")
    if not os.path.exists(path):
        I, V = zipf_memmap(args.rows, args.n, args.k, 1.0)
        res = fastsae.CooccurrenceAccumulator(args.n, dense=True)
        for a in range(0, args.rows, 50_000):
            res.update(I[a:a + 50_000], V[a:a + 50_000])
        res.result().save(path)
        del res
    size = os.path.getsize(path)

    t_read, _ = timed(lambda: _cooc_check.read_npz(path), args.repeat)
    _cooc_check._USE_NATIVE = False
    t_numpy, _ = timed(lambda: Cooccurrence.load(path), args.repeat)
    _cooc_check._USE_NATIVE = True
    t_native, _ = timed(lambda: Cooccurrence.load(path), args.repeat)

    out = {
        "n": args.n, "rows": args.rows, "k": args.k, "threads": args.threads, "file_bytes": size,
        "read_s": round(t_read, 3),
        "load_numpy_check_s": round(t_numpy, 3), "load_native_check_s": round(t_native, 3),
        "numpy_check_s": round(t_numpy - t_read, 3), "native_check_s": round(t_native - t_read, 3),
        "ratio_vs_numpy_check": round(t_numpy / t_native, 2),
    }
    for key, val in out.items():
        print(f"{key:>22}: {val}")
    if not args.no_save:
        print("saved", save_result(f"cooc_load_n{args.n}_N{args.rows}_k{args.k}", out))


if __name__ == "__main__":
    main()
