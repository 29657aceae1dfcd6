"""One full training step (forward, backward, Adam step with the decoder-gradient projection and
renormalisation) on the CPU, fp32, d=1536, n=9216, k=64, B=1024: fastsae (sparse decode and
sparse backward, fastsae.ops) vs a dense torch top-k SAE with the same math, same run.

    python benchmarks/bench_train_step.py [--d 1536 --n 9216 --k 64 --batch 1024 --steps 5]
"""

from __future__ import annotations

import argparse

import torch

import fastsae
from fastsae.ops.reference import dense_topk_sae_reference
from fastsae.trainer import make_optimizer, optimizer_step

from _common import machine, save_result, timed


def step_fn(sae, opt, x, dense: bool):
    def run():
        if dense:
            recon, _, _ = dense_topk_sae_reference(x - sae.b_pre, sae.W_enc, sae.b_enc, sae.W_dec, sae.b_pre, sae.k)
            loss = (recon - x).pow(2).sum(1).mean()
        else:
            loss = sae(x, standardized=True).mse
        opt.zero_grad(set_to_none=True)
        loss.backward()
        optimizer_step(sae, opt, 1.0)  # the trainer's own update, on both sides
        return loss.item()

    return run


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--d", type=int, default=1536)
    ap.add_argument("--n", type=int, default=9216)
    ap.add_argument("--k", type=int, default=64)
    ap.add_argument("--batch", type=int, default=1024)
    ap.add_argument("--steps", type=int, default=5, help="timed steps per variant (best is reported)")
    args = ap.parse_args()
    torch.manual_seed(0)
    x = torch.randn(args.batch, args.d)
    print(f"machine: {machine()}; torch threads: {torch.get_num_threads()}")
    results = {}
    for name, dense in (("fastsae", False), ("dense torch", True)):
        sae = fastsae.TopKSAE(args.d, args.n, args.k)
        opt = make_optimizer(sae, fastsae.TrainConfig(n_latents=args.n, k=args.k))  # the trainer's Adam, both sides
        run = step_fn(sae, opt, x, dense)
        run()  # warm-up (allocations, Adam state)
        t, _ = timed(run, args.steps)
        results[name] = t
        print(f"{name:12s}: {t * 1e3:8.1f} ms per step")
    ratio = results["dense torch"] / results["fastsae"]
    print(f"speed-up: {ratio:.2f}x")
    save_result(f"train_step_d{args.d}_n{args.n}_k{args.k}_B{args.batch}",
                {"d": args.d, "n": args.n, "k": args.k, "batch": args.batch, "fastsae_s": results["fastsae"],
                 "dense_s": results["dense torch"], "speedup": ratio, "torch_threads": torch.get_num_threads()})


if __name__ == "__main__":
    main()
