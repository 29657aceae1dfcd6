"""The Triton kernels against the float64 torch reference (outputs and every gradient), run with
FASTSAE_BACKEND=triton: under the interpreter on CPU (TRITON_INTERPRET=1, set in conftest), on
the GPU when there is one. And ahead-of-time compilation for sm_80/sm_90, fp32 and bf16, with
the block configurations the launchers choose, so a kernel only the interpreter accepts fails."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest
import torch

triton = pytest.importorskip("triton")

from fastsae import ops  # noqa: E402
from fastsae.ops import _segment, decode_kernels, encode_kernels  # noqa: E402
from fastsae.ops.reference import dense_topk_sae_reference  # noqa: E402

from test_ops import separated_inputs  # noqa: E402

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"

SHAPES = {
    "B5_d48_n200_k7": (5, 48, 200, 7),
    "B3_d17_n33_k1": (3, 17, 33, 1),
    "B7_d40_n97_k13": (7, 40, 97, 13),
    "B4_d32_n64_k64": (4, 32, 64, 64),
    "B18_d24_n150_k5": (18, 24, 150, 5),
}
DTYPES = {"fp32": (torch.float32, 1e-4), "bf16": (torch.bfloat16, 4e-2)}


@pytest.fixture(autouse=True)
def force_triton(monkeypatch):
    monkeypatch.setenv("FASTSAE_BACKEND", "triton")


def to(t, dtype):
    return t.to(dtype).to(DEVICE)


@pytest.mark.parametrize("shape", SHAPES.values(), ids=SHAPES.keys())
@pytest.mark.parametrize("dtype, tol", DTYPES.values(), ids=DTYPES.keys())
def test_encode_decode_outputs_and_gradients(shape, dtype, tol):
    B, d, n, k = shape
    x, We, be, Wd, bd = separated_inputs(B, d, n, k, seed=B * 31 + n)
    ours = [to(t, dtype).requires_grad_() for t in (x, We, be, Wd, bd)]
    ref = [t.to(dtype).double().requires_grad_() for t in (x, We, be, Wd, bd)]
    assert ops.backend(ours[0].device, dtype) == "triton"
    code = ops.topk_encode(ours[0], ours[1], ours[2], k)
    y = ops.sparse_decode(code.indices, code.values, ours[3], ours[4])
    y_ref, idx_ref, top_ref = dense_topk_sae_reference(*ref, k)
    if dtype == torch.float32:  # bf16 rounding can reorder near-equal pre-activations
        assert torch.equal(code.indices.cpu().sort(1).values, idx_ref.sort(1).values)
        torch.testing.assert_close(code.values.double().cpu(), top_ref.clamp_min(0), rtol=tol, atol=tol)
    assert code.indices.dtype == torch.int64 and code.values.dtype == dtype
    scale = y_ref.abs().max().item()
    assert (y.double().cpu() - y_ref).abs().max().item() <= tol * max(scale, 1.0) * 10
    g = torch.randn(B, d, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    ours_g = torch.autograd.grad(y, ours, to(g, dtype))
    ref_g = torch.autograd.grad(y_ref, ref, g)
    for name, a, b in zip(["x", "W_enc", "b_enc", "W_dec", "b_dec"], ours_g, ref_g):
        err = (a.double().cpu() - b).abs().max().item()
        assert err <= tol * max(b.abs().max().item(), 1.0) * 10, f"grad {name}: {err}"


@pytest.mark.parametrize("dtype, tol", DTYPES.values(), ids=DTYPES.keys())
def test_decode_gradient_of_values(dtype, tol):
    B, d, n, k = 6, 40, 90, 9
    g0 = torch.Generator().manual_seed(5)
    idx = torch.stack([torch.randperm(n, generator=g0)[:k] for _ in range(B)])
    vals = torch.rand(B, k, generator=g0, dtype=torch.float64)
    W = torch.randn(n, d, generator=g0, dtype=torch.float64)
    v_ours, W_ours = to(vals, dtype).requires_grad_(), to(W, dtype).requires_grad_()
    v_ref, W_ref = vals.to(dtype).double().requires_grad_(), W.to(dtype).double().requires_grad_()
    y = ops.sparse_decode(idx.to(DEVICE), v_ours, W_ours)
    dense = torch.zeros(B, n, dtype=torch.float64).scatter(1, idx, v_ref)
    y_ref = dense @ W_ref
    g = torch.randn(B, d, dtype=torch.float64, generator=g0)
    for a, b in zip(torch.autograd.grad(y, (v_ours, W_ours), to(g, dtype)), torch.autograd.grad(y_ref, (v_ref, W_ref), g)):
        assert (a.double().cpu() - b).abs().max().item() <= tol * max(b.abs().max().item(), 1.0) * 10


def test_aux_topk_among_dead_latents_in_the_same_pass():
    B, d, n, k, k_aux = 6, 32, 80, 4, 8
    x, We, be, _, _ = separated_inputs(B, d, n, k, seed=21)
    dead = torch.zeros(n, dtype=torch.bool)
    dead[::3] = True
    args = [to(t, torch.float32).requires_grad_() for t in (x, We, be)]
    code, aux = ops.topk_encode_aux(*args, k, dead.to(DEVICE), k_aux)
    import os

    os.environ["FASTSAE_BACKEND"] = "reference"
    try:
        ref_args = [t.double().requires_grad_() for t in (x, We, be)]
        code_r, aux_r = ops.topk_encode_aux(*ref_args, k, dead, k_aux)
    finally:
        os.environ["FASTSAE_BACKEND"] = "triton"
    assert torch.equal(code.indices.cpu().sort(1).values, code_r.indices.sort(1).values)
    pos = aux_r.values > 0
    assert torch.all(dead[aux.indices.cpu()[aux.values.cpu() > 0]])
    assert torch.equal((aux.values.cpu() > 0), pos)
    assert torch.equal(torch.where(pos, aux.indices.cpu(), -1).sort(1).values, torch.where(pos, aux_r.indices, -1).sort(1).values)
    def loss(c, a):  # independent of slot order
        return c.values.double().cpu().pow(2).sum() + a.values.double().cpu().pow(3).sum()

    ours = torch.autograd.grad(loss(code, aux), args)
    refs = torch.autograd.grad(loss(code_r, aux_r), ref_args)
    for a, b in zip(ours, refs):
        torch.testing.assert_close(a.double().cpu(), b, rtol=1e-4, atol=1e-4)


def test_segment_reduction_is_deterministic_and_zero_fills_untouched_rows():
    B, d, n, k = 9, 20, 40, 3
    g0 = torch.Generator().manual_seed(1)
    idx = torch.stack([torch.randperm(n, generator=g0)[:k] for _ in range(B)]).to(DEVICE)
    w = torch.randn(B, k, generator=g0).to(DEVICE)
    rows = torch.randn(B, d, generator=g0).to(DEVICE)
    out1, s1 = _segment.segment_rows(idx, w, rows, n, out_dtype=torch.float32, with_sums=True)
    out2, s2 = _segment.segment_rows(idx, w, rows, n, out_dtype=torch.float32, with_sums=True)
    assert torch.equal(out1, out2) and torch.equal(s1, s2)
    ref = torch.zeros(n, d, dtype=torch.float64).index_add_(0, idx.cpu().reshape(-1),
                                                          (w.cpu().double()[:, :, None] * rows.cpu().double()[:, None, :]).reshape(-1, d))
    torch.testing.assert_close(out1.double().cpu(), ref, rtol=1e-5, atol=1e-5)
    untouched = torch.ones(n, dtype=torch.bool)
    untouched[idx.cpu().reshape(-1)] = False
    assert torch.all(out1.cpu()[untouched] == 0) and torch.all(s1.cpu()[untouched] == 0)


def test_launchers_check_shapes():
    x = torch.randn(4, 8)
    with pytest.raises(AssertionError, match="W_enc"):
        encode_kernels.topk_candidates(x, torch.randn(10, 7), torch.randn(10), 2)
    with pytest.raises(AssertionError, match="one dtype"):
        encode_kernels.topk_candidates(x.double(), torch.randn(10, 8).double(), torch.randn(10).double(), 2)
    with pytest.raises(AssertionError, match="contiguous"):
        encode_kernels.topk_candidates(torch.randn(8, 4).t(), torch.randn(10, 8), torch.randn(10), 2)
    with pytest.raises(AssertionError, match="both be"):
        decode_kernels.gather_sum(torch.zeros(2, 3, dtype=torch.int64), torch.zeros(2, 4), torch.randn(5, 3))


# ------------------------------------------------------------------------------------------------
# Ahead-of-time compilation for real GPUs (works without one). It runs in a fresh interpreter
# without TRITON_INTERPRET: under the interpreter the kernels are not compilable JIT functions.

AOT = textwrap.dedent(
    """
    import sys
    import torch, triton
    from triton.backends.compiler import GPUTarget
    from fastsae.ops import _segment, decode_kernels, encode_kernels

    TY = {torch.float32: "fp32", torch.bfloat16: "bf16"}
    count = 0

    def compile_kernel(fn, signature, constexprs, target):
        global count
        sig = dict(signature)
        sig.update({name: "constexpr" for name in constexprs})
        k = triton.compile(triton.compiler.ASTSource(fn=fn, signature=sig, constexprs=constexprs), target=target)
        assert k.asm["ptx"] and k.asm["cubin"], fn
        count += 1

    # Problem sizes -> the launchers' own block choices (each distinct configuration once).
    ENCODE = [(5, 200, 48, 7, 14), (4096, 9216, 1536, 64, 128), (4096, 65536, 4096, 128, 0), (3, 33, 17, 1, 2)]
    DECODE = [(48, 7), (1536, 64), (4096, 128)]
    for target in [GPUTarget("cuda", int(sys.argv[1]), 32)]:
        for dtype, t in TY.items():
            seen = set()
            for B, n, d, k, k_aux in ENCODE:
                for aux in sorted({0, k_aux}):
                    kp = encode_kernels.key_width(k)
                    kap = encode_kernels.key_width(aux) if aux else 2
                    BB, BN, BD = encode_kernels._blocks(B, n, d, max(kp, kap))
                    cfg = (kp, kap, aux > 0, BB, BN, BD)
                    if cfg in seen:
                        continue
                    seen.add(cfg)
                    compile_kernel(encode_kernels._tile_topk_kernel,
                                   {"x_ptr": f"*{t}", "w_ptr": f"*{t}", "b_ptr": f"*{t}", "dead_ptr": "*i8",
                                    "cand_ptr": "*i64", "aux_ptr": "*i64", "B": "i32", "N": "i32", "D": "i32",
                                    "n_tiles": "i32", "stride_x": "i32", "stride_w": "i32"},
                                   {"K_POW2": kp, "KAUX_POW2": kap, "HAS_AUX": aux > 0, "IEEE": dtype == torch.float32,
                                    "UPCAST": False, "BLOCK_B": BB, "BLOCK_N": BN, "BLOCK_D": BD}, target)
                    for width in sorted({kp, kap}):
                        if (width, "merge") in seen:
                            continue
                        seen.add((width, "merge"))
                        compile_kernel(encode_kernels._merge_topk_kernel,
                                       {"cand_ptr": "*i64", "idx_ptr": "*i64", "val_ptr": f"*{t}", "n_tiles": "i32",
                                        "k": "i32"}, {"K_POW2": width}, target)
            for d, k in DECODE:
                BD, BK = _segment.block_d(d), decode_kernels.block_k(k)
                compile_kernel(decode_kernels._gather_sum_kernel,
                               {"out_ptr": f"*{t}", "idx_ptr": "*i64", "val_ptr": f"*{t}", "w_ptr": f"*{t}",
                                "bias_ptr": f"*{t}", "D": "i32", "K": "i32", "stride_w": "i32", "stride_out": "i32"},
                               {"HAS_BIAS": True, "BLOCK_D": BD, "BLOCK_K": BK}, target)
                compile_kernel(decode_kernels._gather_dot_kernel,
                               {"out_ptr": f"*{t}", "idx_ptr": "*i64", "g_ptr": f"*{t}", "w_ptr": f"*{t}", "D": "i32",
                                "K": "i32", "stride_g": "i32", "stride_w": "i32"}, {"BLOCK_D": BD, "BLOCK_K": BK}, target)
                for sums in (False, True):
                    compile_kernel(_segment._segment_rows_kernel,
                                   {"out_ptr": f"*{t}", "sumw_ptr": f"*{t}", "rows_ptr": f"*{t}", "w_ptr": f"*{t}",
                                    "order_ptr": "*i64", "offsets_ptr": "*i64", "D": "i32", "K": "i32",
                                    "stride_out": "i32", "stride_rows": "i32"}, {"HAS_SUMW": sums, "BLOCK_D": BD}, target)
    print("compiled", count)
    """
)


def test_aot_compile_every_kernel_for_sm80_and_sm90(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["TRITON_CACHE_DIR"] = str(tmp_path)  # really compile, not a cache hit from an earlier run
    procs = {arch: subprocess.Popen([sys.executable, "-c", AOT, arch], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                    text=True, env=env) for arch in ("80", "90")}  # one per core
    for arch, p in procs.items():
        stdout, stderr = p.communicate(timeout=900)
        assert p.returncode == 0, f"sm_{arch}: {stderr[-4000:]}"
        # every kernel, both dtypes, each distinct block configuration the launchers choose
        assert int(stdout.split()[-1]) >= 20, stdout
