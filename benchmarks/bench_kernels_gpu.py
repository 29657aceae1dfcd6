"""GPU benchmark of the fused Triton ops (skips cleanly without a CUDA GPU).

For d in {1536, 4096}, n in {9216, 65536, 131072}, k in {32, 64, 128}, bf16, B = 4096:
forward, backward, forward+backward and the full training step (the recipe's update: decoder
gradient projection, fused into fastsae's decode backward and a dense pass for the baselines,
gradient clipping, Adam, decoder renormalisation) of

* fastsae (Triton top-k encode + sparse decode),
* (a) a dense torch top-k SAE (dense [B, n] codes, dense decode),
* (b) torch.topk over the dense pre-activations + embedding_bag decode,

median of ``triton.testing.do_bench``, peak memory of each, and the dense encoder GEMM alone
(the floor for forward+backward). Results with the GPU's name go to benchmarks/results/.

    python benchmarks/bench_kernels_gpu.py [--quick] [--budget-s S] [--markdown table.md]

The results file is rewritten after every configuration, so a run stopped at a time limit keeps
what it measured; ``--budget-s`` starts no new configuration after S seconds.
"""

from __future__ import annotations

import argparse
import itertools
import sys
import time

import torch
import torch.nn.functional as F


@torch.no_grad()
def check_against_torch(x, W_enc, b_enc, W_dec, b_dec, k: int) -> None:
    """fastsae's encode + decode against torch on the benchmark's own inputs: the selected values
    equal ``torch.topk``'s up to two bf16 ulps (accumulation orders differ, and ties may pick
    other ids), and the decode equals ``embedding_bag`` on the same code."""
    from fastsae import ops

    code = ops.topk_encode(x, W_enc, b_enc, k)
    top_ref = torch.relu(x.float() @ W_enc.float().t() + b_enc.float()).topk(k, dim=1).values
    ulp = 2.0**-7 * top_ref.abs().clamp_min(1e-3)
    bad = (code.values.float() - top_ref).abs() > 2 * ulp
    assert not bad.any(), f"encode values differ from torch.topk in {int(bad.sum())} places"
    y = ops.sparse_decode(code.indices, code.values, W_dec, b_dec).float()
    y_ref = F.embedding_bag(code.indices, W_dec.float(), per_sample_weights=code.values.float(), mode="sum") + b_dec.float()
    err = ((y - y_ref).abs().max() / y_ref.abs().max().clamp_min(1e-6)).item()
    assert err < 2e-2, f"decode differs from embedding_bag: relative error {err:.3g}"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="one configuration only")
    ap.add_argument("--batch", type=int, default=4096)
    ap.add_argument("--budget-s", type=float, default=None, help="start no configuration after this many seconds")
    ap.add_argument("--markdown", default=None, help="also write the results as a Markdown table to this file")
    args = ap.parse_args()
    if not torch.cuda.is_available():
        print("no CUDA GPU: skipping the Triton kernel benchmark (run it on a GPU machine)")
        return 0
    import os

    import triton.testing

    from _common import save_result
    from fastsae import ops
    from fastsae.ops import encode_kernels

    os.environ["FASTSAE_BACKEND"] = "triton"
    dev, dtype, B = "cuda", torch.bfloat16, args.batch
    grid = [(1536, 9216, 64)] if args.quick else list(itertools.product((1536, 4096), (9216, 65536, 131072), (32, 64, 128)))
    gpu = torch.cuda.get_device_name()
    rows = []
    t0 = time.perf_counter()
    for d, n, k in grid:
        if args.budget_s is not None and time.perf_counter() - t0 > args.budget_s:
            print(f"time budget of {args.budget_s:.0f} s spent: {len(rows)} of {len(grid)} configurations measured")
            break
        torch.manual_seed(0)
        x = torch.randn(B, d, device=dev, dtype=dtype)
        W_enc = (torch.randn(n, d, device=dev, dtype=dtype) / d**0.5).requires_grad_()
        b_enc = torch.zeros(n, device=dev, dtype=dtype, requires_grad=True)
        W_dec = F.normalize(torch.randn(n, d, device=dev, dtype=torch.float32), dim=1).to(dtype).requires_grad_()
        b_dec = torch.zeros(d, device=dev, dtype=dtype, requires_grad=True)
        params = [W_enc, b_enc, W_dec, b_dec]

        def fastsae_fwd(project_grad=False):
            code = ops.topk_encode(x, W_enc, b_enc, k)
            return ops.sparse_decode(code.indices, code.values, W_dec, b_dec, project_grad=project_grad)

        def dense_fwd():
            pre = torch.relu(x @ W_enc.t() + b_enc)
            top, idx = pre.topk(k, dim=1)
            return torch.zeros_like(pre).scatter(1, idx, top) @ W_dec + b_dec

        def topk_bag_fwd():
            pre = torch.relu(x @ W_enc.t() + b_enc)
            top, idx = pre.topk(k, dim=1)
            return F.embedding_bag(idx, W_dec, per_sample_weights=top, mode="sum") + b_dec

        def gemm():
            return x @ W_enc.t()

        check_against_torch(x, W_enc, b_enc, W_dec, b_dec, k)  # a fast wrong kernel must not reach the table

        # The encode's two forwards, each forced, and the one FASTSAE_ENCODE=auto keeps (the
        # "fastsae" rows below run that one).
        encode_ms = {}
        for how in ("fused", "gemm"):
            os.environ["FASTSAE_ENCODE"] = how
            encode_ms[how] = triton.testing.do_bench(lambda: ops.topk_encode(x, W_enc, b_enc, k), return_mode="median")
        os.environ["FASTSAE_ENCODE"] = "auto"
        with torch.no_grad():
            chosen = encode_kernels.forward_choice(x, W_enc, b_enc, k)
        variants = {"fastsae": fastsae_fwd, "dense": dense_fwd, "topk+embedding_bag": topk_bag_fwd}
        plan = encode_kernels.plan(B, n, d, k, 0, dtype, torch.cuda.get_device_properties(0).multi_processor_count)
        rec = {"gpu": gpu, "d": d, "n": n, "k": k, "B": B, "dtype": "bf16", "encode_plan": plan._asdict(),
               "encoder_gemm_ms": triton.testing.do_bench(gemm, return_mode="median"),
               "encode_fused_ms": encode_ms["fused"], "encode_gemm_topk_ms": encode_ms["gemm"],
               "encode_forward_auto": chosen}
        for name, fwd in variants.items():
            g = torch.randn(B, d, device=dev, dtype=dtype)
            opt = torch.optim.Adam(params, lr=1e-4)

            def fwd_bwd(fwd=fwd, g=g):
                for p in params:
                    p.grad = None
                fwd().backward(g)

            fused = name == "fastsae"  # its decode backward projects dW_dec on the touched rows

            @torch.no_grad()
            def update(opt=opt, fused=fused):
                # The recipe's update (fastsae.trainer.optimizer_step): project the decoder
                # gradient (a dense pass unless the decode fused it), clip, Adam, renormalise.
                if not fused:
                    W_dec.grad.addcmul_(torch.linalg.vecdot(W_dec.grad, W_dec).unsqueeze(1), W_dec, value=-1)
                torch.nn.utils.clip_grad_norm_(params, 1.0)
                opt.step()
                W_dec.div_(W_dec.norm(dim=1, keepdim=True))

            def step(fwd=fwd, g=g, fused=fused, update=update):
                for p in params:
                    p.grad = None
                (fwd(project_grad=True) if fused else fwd()).backward(g)
                update()

            out = fwd()
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            base = torch.cuda.memory_allocated()
            fwd_bwd()
            torch.cuda.synchronize()
            rec[f"{name}_peak_mb"] = (torch.cuda.max_memory_allocated() - base) / 2**20
            rec[f"{name}_fwd_ms"] = triton.testing.do_bench(fwd, return_mode="median")
            rec[f"{name}_bwd_ms"] = triton.testing.do_bench(lambda out=out, g=g: torch.autograd.grad(
                out, params, g, retain_graph=True), return_mode="median")
            rec[f"{name}_fwd_bwd_ms"] = triton.testing.do_bench(fwd_bwd, return_mode="median")
            rec[f"{name}_step_ms"] = triton.testing.do_bench(step, return_mode="median")
        best = min(rec["dense_fwd_bwd_ms"], rec["topk+embedding_bag_fwd_bwd_ms"])
        rec["speedup_fwd_bwd_vs_best_baseline"] = best / rec["fastsae_fwd_bwd_ms"]
        rec["fwd_bwd_over_gemm"] = rec["fastsae_fwd_bwd_ms"] / rec["encoder_gemm_ms"]
        print(f"d={d} n={n} k={k}: encode forward fused {encode_ms['fused']:.2f} ms, gemm+topk "
              f"{encode_ms['gemm']:.2f} ms (auto keeps {chosen}); fastsae fwd+bwd {rec['fastsae_fwd_bwd_ms']:.2f} ms, "
              f"{rec['speedup_fwd_bwd_vs_best_baseline']:.2f}x the best baseline, "
              f"{rec['fwd_bwd_over_gemm']:.2f}x the encoder GEMM; peak {rec['fastsae_peak_mb']:.0f} MB "
              f"(dense {rec['dense_peak_mb']:.0f}, topk+bag {rec['topk+embedding_bag_peak_mb']:.0f})", flush=True)
        rows.append(rec)
        save_result(f"kernels_gpu_{gpu.replace(' ', '_')}", {"results": rows})
        if args.markdown:
            with open(args.markdown, "w") as f:
                f.write(markdown_table(rows))
        del W_enc, b_enc, W_dec, b_dec, params, x
        torch.cuda.empty_cache()
    return 0


def markdown_table(rows: list[dict]) -> str:
    """The README's table: per configuration, fastsae's forward+backward and training step
    against the best baseline, its ratio to the encoder GEMM alone, and peak memory."""
    head = ("| GPU | d | n | k | encode fwd ms (fused / gemm+topk, auto) | fastsae fwd+bwd ms | best baseline ms | "
            "speed-up | / encoder GEMM | step ms (fastsae / dense / topk+bag) | peak MB (fastsae / dense / topk+bag) |\n"
            "|---|---|---|---|---|---|---|---|---|---|---|\n")
    lines = []
    for r in rows:
        best = min(r["dense_fwd_bwd_ms"], r["topk+embedding_bag_fwd_bwd_ms"])
        lines.append(
            f"| {r['gpu']} | {r['d']} | {r['n']} | {r['k']} | {r['encode_fused_ms']:.2f} / "
            f"{r['encode_gemm_topk_ms']:.2f}, {r['encode_forward_auto']} | {r['fastsae_fwd_bwd_ms']:.2f} | {best:.2f} | "
            f"{r['speedup_fwd_bwd_vs_best_baseline']:.2f}× | {r['fwd_bwd_over_gemm']:.2f}× | "
            f"{r['fastsae_step_ms']:.2f} / {r['dense_step_ms']:.2f} / {r['topk+embedding_bag_step_ms']:.2f} | "
            f"{r['fastsae_peak_mb']:.0f} / {r['dense_peak_mb']:.0f} / {r['topk+embedding_bag_peak_mb']:.0f} |")
    return head + "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
