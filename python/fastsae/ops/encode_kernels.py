"""Top-k encode, Triton: the top-k of ``ReLU(x @ W_enc^T + b_enc)`` without writing the
``[B, n]`` pre-activations to global memory.

Forward, two stages:

1. ``_tile_topk_kernel``: one program per (row block, latent tile) computes the tile of
   ``x @ W_enc^T`` (fp32 accumulation; fp32 inputs use IEEE products, not TF32), adds the bias,
   applies ReLU and keeps each row's top-k *inside the tile*. Each (value, latent) pair is packed
   into one int64 key -- the value's IEEE bits (monotone for values >= 0) above the complement of
   the latent id, so ties go to the lower id -- and ``tl.topk`` selects on the keys. It writes
   ``B x n_tiles x K`` candidate keys (K = k rounded up to a power of two), never ``B x n``.
   With a dead-latent mask it also keeps the top-k_aux among dead latents, for AuxK, in the
   same pass (no host synchronisation).
2. ``_merge_topk_kernel``: one program per row folds the row's candidate lists into a running
   top-K (``tl.join`` + ``tl.topk`` on 2K keys per tile) and unpacks the first k.

Backward flows only through the k active entries: ``g = dvalues * (values > 0)``;
``dx = sum_j g[b, j] W_enc[idx[b, j]]`` (the decode gather kernel), and ``dW_enc``/``db_enc``
by the deterministic segment reduction (no atomics, no ``[B, n]`` gradient, no ``[B, k, d]``
temporary).
"""

from __future__ import annotations

import os

import torch
import triton
import triton.language as tl

from ._segment import segment_order, segment_rows
from .decode_kernels import gather_sum
from .reference import SavedCtx

_LOW = 0xFFFFFFFF


@triton.jit
def _pack(val, latent):
    # val >= 0 (after ReLU; -0.0 never occurs because of the strict > 0 test upstream).
    bits = val.to(tl.int32, bitcast=True).to(tl.int64)
    return (bits << 32) | (0xFFFFFFFF - latent.to(tl.int64))


@triton.jit
def _tile_topk_kernel(
    x_ptr, w_ptr, b_ptr, dead_ptr, cand_ptr, aux_ptr,
    B, N, D, n_tiles, stride_x, stride_w,
    K_POW2: tl.constexpr, KAUX_POW2: tl.constexpr, HAS_AUX: tl.constexpr, IEEE: tl.constexpr,
    UPCAST: tl.constexpr, BLOCK_B: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
):
    pid_b = tl.program_id(0)
    pid_n = tl.program_id(1)
    rb = pid_b * BLOCK_B + tl.arange(0, BLOCK_B)
    rn = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    mb = rb < B
    mn = rn < N
    acc = tl.zeros((BLOCK_B, BLOCK_N), dtype=tl.float32)
    for d0 in range(0, D, BLOCK_D):
        rd = d0 + tl.arange(0, BLOCK_D)
        md = rd < D
        xt = tl.load(x_ptr + rb[:, None].to(tl.int64) * stride_x + rd[None, :], mask=mb[:, None] & md[None, :], other=0.0)
        wt = tl.load(w_ptr + rn[:, None].to(tl.int64) * stride_w + rd[None, :], mask=mn[:, None] & md[None, :], other=0.0)
        if UPCAST:  # interpreter only: its tl.dot mishandles bf16/fp16 operands
            xt = xt.to(tl.float32)
            wt = wt.to(tl.float32)
        if IEEE:
            acc = tl.dot(xt, tl.trans(wt), acc, input_precision="ieee")
        else:
            acc = tl.dot(xt, tl.trans(wt), acc)
    bias = tl.load(b_ptr + rn, mask=mn, other=0.0).to(tl.float32)
    pre = acc.to(tl.float32) + bias[None, :]  # (the interpreter returns bf16 from a bf16 dot)
    val = tl.where(pre > 0, pre, 0.0)
    key = _pack(val, rn[None, :])
    key = tl.where(mn[None, :], key, -1)
    top = tl.topk(key, K_POW2)  # [BLOCK_B, K_POW2], largest first
    rk = tl.arange(0, K_POW2)
    out = cand_ptr + (rb[:, None].to(tl.int64) * n_tiles + pid_n) * K_POW2 + rk[None, :]
    tl.store(out, top, mask=mb[:, None])
    if HAS_AUX:
        dead = tl.load(dead_ptr + rn, mask=mn, other=0)
        akey = tl.where((dead != 0)[None, :] & mn[None, :], key, -1)
        atop = tl.topk(akey, KAUX_POW2)
        ra = tl.arange(0, KAUX_POW2)
        aout = aux_ptr + (rb[:, None].to(tl.int64) * n_tiles + pid_n) * KAUX_POW2 + ra[None, :]
        tl.store(aout, atop, mask=mb[:, None])


@triton.jit
def _merge_topk_kernel(cand_ptr, idx_ptr, val_ptr, n_tiles, k, K_POW2: tl.constexpr):
    row = tl.program_id(0)
    rk = tl.arange(0, K_POW2)
    base = cand_ptr + row.to(tl.int64) * n_tiles * K_POW2
    best = tl.load(base + rk)
    for t in range(1, n_tiles):
        nxt = tl.load(base + t * K_POW2 + rk)
        both = tl.reshape(tl.join(best, nxt), (2 * K_POW2,))
        best = tl.topk(both, K_POW2)
    latent = 0xFFFFFFFF - (best & 0xFFFFFFFF)
    bits = (best >> 32).to(tl.int32)
    value = bits.to(tl.float32, bitcast=True)
    valid = best >= 0  # -1 marks "no candidate" (only when k exceeds the real latents)
    value = tl.where(valid, value, 0.0)
    latent = tl.where(valid, latent, 0)
    mk = rk < k
    tl.store(idx_ptr + row * k + rk, latent, mask=mk)
    tl.store(val_ptr + row * k + rk, value.to(val_ptr.dtype.element_ty), mask=mk)


def key_width(k: int) -> int:
    """Keys kept per row and tile: k rounded up to a power of two, at least 2 (tl.topk with
    k = 1 does not compile for GPUs)."""
    return max(2, triton.next_power_of_2(k))


def _blocks(B: int, n: int, d: int, k_pow2: int) -> tuple[int, int, int]:
    """Tile sizes: tl.dot needs >= 16 per side; a latent tile must hold the K kept keys."""
    BLOCK_B = 16 if B <= 16 else 64
    BLOCK_N = max(64, k_pow2) if n > 64 else max(16, triton.next_power_of_2(max(n, k_pow2)))
    BLOCK_N = max(BLOCK_N, k_pow2)
    BLOCK_D = 32 if d <= 32 else 64
    return BLOCK_B, BLOCK_N, BLOCK_D


def topk_candidates(x, W_enc, b_enc, k, dead=None, k_aux=0):
    """Launch both stages. Returns (indices [B, k] int64, values [B, k]) and, with a dead mask,
    (aux_indices [B, k_aux], aux_values [B, k_aux]) among the dead latents."""
    assert x.dim() == 2 and W_enc.dim() == 2 and x.shape[1] == W_enc.shape[1], "x [B, d], W_enc [n, d]"
    assert b_enc.shape == (W_enc.shape[0],), "b_enc [n]"
    assert x.dtype == W_enc.dtype == b_enc.dtype and x.dtype in (torch.float32, torch.bfloat16, torch.float16), \
        "x, W_enc, b_enc: one dtype among float32, bfloat16, float16"
    assert x.stride(1) == 1 and W_enc.stride(1) == 1, "rows of x and W_enc must be contiguous"
    B, d = x.shape
    n = W_enc.shape[0]
    assert 1 <= k <= n, "1 <= k <= n"
    K_POW2 = key_width(k)
    has_aux = dead is not None and k_aux > 0
    KAUX_POW2 = key_width(k_aux) if has_aux else 2
    BLOCK_B, BLOCK_N, BLOCK_D = _blocks(B, n, d, max(K_POW2, KAUX_POW2))
    n_tiles = triton.cdiv(n, BLOCK_N)
    dev = x.device
    cand = torch.empty(B, n_tiles, K_POW2, dtype=torch.int64, device=dev)
    aux = torch.empty(B, n_tiles, KAUX_POW2, dtype=torch.int64, device=dev) if has_aux else cand
    dead_t = dead.to(torch.int8).contiguous() if has_aux else cand
    grid = (triton.cdiv(B, BLOCK_B), n_tiles)
    interp = os.environ.get("TRITON_INTERPRET") == "1"
    _tile_topk_kernel[grid](x, W_enc, b_enc, dead_t, cand, aux, B, n, d, n_tiles, x.stride(0), W_enc.stride(0),
                            K_POW2=K_POW2, KAUX_POW2=KAUX_POW2, HAS_AUX=has_aux, IEEE=x.dtype == torch.float32 or interp,
                            UPCAST=interp and x.dtype != torch.float32, BLOCK_B=BLOCK_B, BLOCK_N=BLOCK_N, BLOCK_D=BLOCK_D)
    indices = torch.empty(B, k, dtype=torch.int64, device=dev)
    values = torch.empty(B, k, dtype=x.dtype, device=dev)
    _merge_topk_kernel[(B,)](cand, indices, values, n_tiles, k, K_POW2=K_POW2)
    if not has_aux:
        return indices, values
    aux_idx = torch.empty(B, k_aux, dtype=torch.int64, device=dev)
    aux_val = torch.empty(B, k_aux, dtype=x.dtype, device=dev)
    _merge_topk_kernel[(B,)](aux, aux_idx, aux_val, n_tiles, k_aux, K_POW2=KAUX_POW2)
    return (indices, values), (aux_idx, aux_val)


class TopKEncode(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, W_enc, b_enc, k):
        indices, values = topk_candidates(x, W_enc, b_enc, k)
        ctx.save_for_backward(x, W_enc, indices, values)
        ctx.mark_non_differentiable(indices)
        return indices, values

    @staticmethod
    def backward(ctx, _grad_indices, grad_values):
        x, W_enc, indices, values = ctx.saved_tensors
        g = torch.where(values > 0, grad_values, torch.zeros((), dtype=grad_values.dtype, device=grad_values.device))
        g = g.contiguous()
        dx = dW = db = None
        if ctx.needs_input_grad[0]:
            dx = gather_sum(indices, g, W_enc, out_dtype=x.dtype)
        if ctx.needs_input_grad[1] or ctx.needs_input_grad[2]:
            dW, db = segment_rows(indices, g, x.contiguous(), W_enc.shape[0], out_dtype=W_enc.dtype, with_sums=True,
                                  order_offsets=segment_order(indices, W_enc.shape[0]))
        return dx, dW if ctx.needs_input_grad[1] else None, db if ctx.needs_input_grad[2] else None, None


def topk_encode(x: torch.Tensor, W_enc: torch.Tensor, b_enc: torch.Tensor, k: int):
    """Triton top-k encode; same contract as :func:`fastsae.ops.reference.topk_encode`."""
    return TopKEncode.apply(x, W_enc, b_enc, k)


class TopKEncodeAux(torch.autograd.Function):
    """Main code and AuxK code from one pass; backward over both sets of entries at once."""

    @staticmethod
    def forward(ctx, x, W_enc, b_enc, k, dead, k_aux):
        (indices, values), (aux_indices, aux_values) = topk_candidates(x, W_enc, b_enc, k, dead=dead, k_aux=k_aux)
        ctx.save_for_backward(x, W_enc, torch.cat([indices, aux_indices], 1), torch.cat([values, aux_values], 1))
        ctx.mark_non_differentiable(indices, aux_indices)
        return indices, values, aux_indices, aux_values

    @staticmethod
    def backward(ctx, _gi, grad_values, _gai, grad_aux):
        x, W_enc, indices, values = ctx.saved_tensors
        inner = SavedCtx(ctx.needs_input_grad[:3], (x, W_enc, indices, values))
        dx, dW, db, _ = TopKEncode.backward(inner, None, torch.cat([grad_values, grad_aux], 1))
        return dx, dW, db, None, None, None


def topk_encode_aux(x, W_enc, b_enc, k: int, dead: torch.Tensor, k_aux: int):
    """Triton: (indices, values, aux_indices, aux_values); aux among latents with ``dead`` set."""
    return TopKEncodeAux.apply(x, W_enc, b_enc, k, dead, k_aux)
