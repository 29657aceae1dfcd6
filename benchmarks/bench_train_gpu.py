"""Training throughput of ``fastsae.train`` on a CUDA GPU (skips cleanly without one).

The whole trainer (data loading from a host array, encode, decode, AuxK, the recipe's update,
statistics), fp32 against bf16 mixed precision (``compute_dtype="bfloat16"``), and the same
steps on the torch path (``FASTSAE_BACKEND=reference``: dense GEMM + ``torch.topk``), in one run.
Reports examples per second after a warm-up record, from the trainer's own metrics.

    python benchmarks/bench_train_gpu.py [--d 1536 --n 65536 --k 64 --batch 4096 --steps 60]
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np
import torch


def run(X, args, compute_dtype, backend) -> float:
    import fastsae

    os.environ["FASTSAE_BACKEND"] = backend
    cfg = fastsae.TrainConfig(n_latents=args.n, k=args.k, batch_size=args.batch, lr=1e-4, max_steps=args.steps,
                              log_every=args.steps // 3, checkpoint_every=10**9, eval_fraction=0.01,
                              median_sample=4096, dead_window=args.batch * 4, progress=False, device=args.device,
                              compute_dtype=compute_dtype)
    res = fastsae.train(X, cfg)
    rates = [h["examples_per_s"] for h in res.history[1:]]  # the first record holds compilation
    return float(np.median(rates))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--d", type=int, default=1536)
    ap.add_argument("--n", type=int, default=65536)
    ap.add_argument("--k", type=int, default=64)
    ap.add_argument("--batch", type=int, default=4096)
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--rows", type=int, default=200_000)
    ap.add_argument("--device", default="cuda", help="cuda; cpu only to dry-run this script")
    args = ap.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        print("no CUDA GPU: skipping the training-throughput benchmark")
        return 0
    from _common import save_result

    rng = np.random.default_rng(0)
    X = rng.standard_normal((args.rows, args.d), dtype=np.float32)
    gpu = torch.cuda.get_device_name() if args.device == "cuda" else "cpu (dry run)"
    rec = {"gpu": gpu, "d": args.d, "n": args.n, "k": args.k, "batch": args.batch, "steps": args.steps}
    for name, cd, backend in (("fastsae_fp32", None, "auto"), ("fastsae_bf16", "bfloat16", "auto"),
                              ("torch_path_fp32", None, "reference"), ("torch_path_bf16", "bfloat16", "reference")):
        try:
            rec[f"{name}_examples_per_s"] = run(X, args, cd, backend)
            print(f"{name:16s}: {rec[f'{name}_examples_per_s']:12,.0f} examples/s", flush=True)
        except Exception as e:  # noqa: BLE001 - a baseline that cannot run is reported, not fatal
            rec[f"{name}_error"] = f"{type(e).__name__}: {e}"[:500]
            print(f"{name:16s}: failed ({rec[f'{name}_error']})", flush=True)
        if args.device == "cuda":
            torch.cuda.empty_cache()
    for ours, base in (("fastsae_bf16", "torch_path_bf16"), ("fastsae_bf16", "fastsae_fp32")):
        a, b = rec.get(f"{ours}_examples_per_s"), rec.get(f"{base}_examples_per_s")
        if a and b:
            rec[f"{ours}_over_{base}"] = a / b
            print(f"{ours} vs {base}: {a / b:.2f}x")
    if args.device == "cuda":  # a CPU dry run records nothing
        save_result(f"train_gpu_{gpu.replace(' ', '_')}_d{args.d}_n{args.n}_k{args.k}", rec)
    return 0


if __name__ == "__main__":
    sys.exit(main())
