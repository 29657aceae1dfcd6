"""One full training step (forward, backward, Adam step with the decoder-gradient projection and
renormalisation) on the CPU, fp32, d=1536, n=9216, k=64, B=1024: fastsae (sparse decode and
sparse backward, fastsae.ops) vs a dense torch top-k SAE with the same math, same run. A third
row is the drop-in use of fastsae.ops inside another project's module: SAELens's layout, with
W_enc a [d, n] parameter passed to ``ops.topk_encode`` as ``W_enc.T`` (a non-contiguous view),
against the same baseline.

    python benchmarks/bench_train_step.py [--d 1536 --n 9216 --k 64 --batch 1024 --steps 5]
"""

from __future__ import annotations

import argparse

import torch

import fastsae
from fastsae import ops
from fastsae.ops.reference import dense_topk_sae_reference
from fastsae.trainer import make_optimizer, optimizer_step

from _common import machine, save_result, timed


class DropInSAE(torch.nn.Module):
    """A SAELens-style module (W_enc [d, n], W_dec [n, d], b_enc, b_dec) calling fastsae.ops: the
    encoder weight reaches ``topk_encode`` as the transposed view ``W_enc.T``. It has what
    ``make_optimizer``/``optimizer_step`` use (parameters, W_dec, normalize_decoder_)."""

    def __init__(self, sae: fastsae.TopKSAE):
        super().__init__()
        self.k = sae.k
        self.W_enc = torch.nn.Parameter(sae.W_enc.detach().t().contiguous())  # [d, n], as SAELens holds it
        self.b_enc = torch.nn.Parameter(sae.b_enc.detach().clone())
        self.W_dec = torch.nn.Parameter(sae.W_dec.detach().clone())
        self.b_dec = torch.nn.Parameter(sae.b_pre.detach().clone())

    def normalize_decoder_(self) -> None:
        fastsae.TopKSAE.normalize_decoder_(self)  # the same renormalisation (it reads only W_dec)

    def loss(self, x):
        code = ops.topk_encode(x - self.b_dec, self.W_enc.T, self.b_enc, self.k)
        recon = ops.sparse_decode(code.indices, code.values, self.W_dec, self.b_dec)
        return (recon - x).pow(2).sum(1).mean()


def step_fn(sae, opt, x, dense: bool):
    def run():
        if isinstance(sae, DropInSAE):
            loss = sae.loss(x)
        elif dense:
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
    for name, dense in (("fastsae", False), ("dense torch", True), ("drop-in W_enc.T", False)):
        sae = fastsae.TopKSAE(args.d, args.n, args.k)
        if name.startswith("drop-in"):
            sae = DropInSAE(sae)
        opt = make_optimizer(sae, fastsae.TrainConfig(n_latents=args.n, k=args.k))  # the trainer's Adam, both sides
        run = step_fn(sae, opt, x, dense)
        run()  # warm-up (allocations, Adam state)
        t, _ = timed(run, args.steps)
        results[name] = t
        print(f"{name:16s}: {t * 1e3:8.1f} ms per step")
    ratio = results["dense torch"] / results["fastsae"]
    dropin = results["dense torch"] / results["drop-in W_enc.T"]
    print(f"speed-up: {ratio:.2f}x (fastsae), {dropin:.2f}x (drop-in, W_enc [d, n] passed as .T)")
    save_result(f"train_step_d{args.d}_n{args.n}_k{args.k}_B{args.batch}",
                {"d": args.d, "n": args.n, "k": args.k, "batch": args.batch, "fastsae_s": results["fastsae"],
                 "dense_s": results["dense torch"], "speedup": ratio,
                 "dropin_transposed_s": results["drop-in W_enc.T"], "dropin_transposed_speedup": dropin,
                 "torch_threads": torch.get_num_threads()})


if __name__ == "__main__":
    main()
