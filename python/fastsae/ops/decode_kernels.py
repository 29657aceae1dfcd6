"""Sparse decode, Triton: ``x_hat[b] = sum_j values[b, j] * W_dec[indices[b, j]] + b_dec``.

* forward: one program per (example, d-tile) gathers its k decoder rows, fp32 accumulation;
* backward: ``dvalues[b, j] = <grad[b], W_dec[indices[b, j]]>`` (gather-dot), ``dW_dec`` by the
  deterministic segment reduction of :mod:`._segment` (touched rows only, no atomics), with the
  unit-norm gradient projection fused for those rows when asked; ``db_dec = grad.sum(0)``.

Kernels -> launchers (shape checks, allocation) -> autograd Function -> public function. The
Function takes any strided ``W_dec``/``b_dec`` and copies once per call what does not have unit
stride along rows (gathering rows with a stride of ``n`` would read a sector per element); every
kernel call goes through :func:`fastsae.ops._selfcheck.guarded`.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ._selfcheck import check_decode_backward, check_decode_forward, guarded
from .reference import decode_backward as reference_decode_backward
from .reference import decode_rows as reference_decode_rows
from .reference import rows_contiguous
from ._segment import block_d, segment_rows


@triton.jit
def _gather_sum_kernel(
    out_ptr, idx_ptr, val_ptr, w_ptr, bias_ptr,
    D, K, stride_w, stride_out,
    HAS_BIAS: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_K: tl.constexpr,
):
    b = tl.program_id(0)
    rd = tl.program_id(1) * BLOCK_D + tl.arange(0, BLOCK_D)
    md = rd < D
    acc = tl.zeros((BLOCK_D,), dtype=tl.float32)
    for j0 in range(0, K, BLOCK_K):
        rk = j0 + tl.arange(0, BLOCK_K)
        mk = rk < K
        idx = tl.load(idx_ptr + b * K + rk, mask=mk, other=0).to(tl.int64)
        v = tl.load(val_ptr + b * K + rk, mask=mk, other=0.0).to(tl.float32)
        rows = tl.load(w_ptr + idx[:, None] * stride_w + rd[None, :], mask=mk[:, None] & md[None, :], other=0.0)
        acc += tl.sum(v[:, None] * rows.to(tl.float32), axis=0)
    if HAS_BIAS:
        acc += tl.load(bias_ptr + rd, mask=md, other=0.0).to(tl.float32)
    tl.store(out_ptr + b.to(tl.int64) * stride_out + rd, acc.to(out_ptr.dtype.element_ty), mask=md)


@triton.jit
def _gather_dot_kernel(
    out_ptr, idx_ptr, g_ptr, w_ptr,
    D, K, stride_g, stride_w,
    BLOCK_D: tl.constexpr, BLOCK_K: tl.constexpr,
):
    b = tl.program_id(0)
    rk = tl.program_id(1) * BLOCK_K + tl.arange(0, BLOCK_K)
    mk = rk < K
    idx = tl.load(idx_ptr + b * K + rk, mask=mk, other=0).to(tl.int64)
    acc = tl.zeros((BLOCK_K,), dtype=tl.float32)
    for d0 in range(0, D, BLOCK_D):
        rd = d0 + tl.arange(0, BLOCK_D)
        md = rd < D
        g = tl.load(g_ptr + b * stride_g + rd, mask=md, other=0.0).to(tl.float32)
        rows = tl.load(w_ptr + idx[:, None] * stride_w + rd[None, :], mask=mk[:, None] & md[None, :], other=0.0)
        acc += tl.sum(rows.to(tl.float32) * g[None, :], axis=1)
    tl.store(out_ptr + b * K + rk, acc.to(out_ptr.dtype.element_ty), mask=mk)


def block_k(k: int) -> int:
    return min(64, max(16, triton.next_power_of_2(k)))


def _check(indices, values, W):
    assert indices.dim() == 2 and values.shape == indices.shape, "indices and values must both be [B, k]"
    assert W.dim() == 2, "W must be [n, d]"
    assert indices.is_contiguous() and values.is_contiguous() and W.stride(1) == 1, "contiguous inputs required"
    assert indices.device == values.device == W.device, "all inputs on one device"


def gather_sum(indices: torch.Tensor, values: torch.Tensor, W: torch.Tensor, bias: torch.Tensor | None = None,
               out_dtype: torch.dtype | None = None) -> torch.Tensor:
    """``[B, d]``: ``sum_j values[b, j] * W[indices[b, j]] (+ bias)``."""
    _check(indices, values, W)
    assert bias is None or bias.is_contiguous(), "bias must be contiguous"
    B, k = indices.shape
    d = W.shape[1]
    out = torch.empty(B, d, dtype=out_dtype or W.dtype, device=W.device)
    if B == 0:
        return out
    BLOCK_D, BLOCK_K = block_d(d), block_k(k)
    grid = (B, triton.cdiv(d, BLOCK_D))
    _gather_sum_kernel[grid](out, indices, values, W, bias if bias is not None else W, d, k, W.stride(0),
                             out.stride(0), HAS_BIAS=bias is not None, BLOCK_D=BLOCK_D, BLOCK_K=BLOCK_K)
    return out


def gather_dot(indices: torch.Tensor, g: torch.Tensor, W: torch.Tensor, out_dtype: torch.dtype) -> torch.Tensor:
    """``[B, k]``: ``<g[b], W[indices[b, j]]>``."""
    B, k = indices.shape
    assert g.shape == (B, W.shape[1]) and g.is_contiguous(), "g must be a contiguous [B, d]"
    out = torch.empty(B, k, dtype=out_dtype, device=W.device)
    if B == 0:
        return out
    BLOCK_D, BLOCK_K = block_d(W.shape[1]), block_k(k)
    _gather_dot_kernel[(B, triton.cdiv(k, BLOCK_K))](out, indices, g, W, W.shape[1], k, g.stride(0), W.stride(0),
                                                     BLOCK_D=BLOCK_D, BLOCK_K=BLOCK_K)
    return out


def _config(phase, indices, values, W, extra=""):
    return (f"sparse_decode {phase}, {str(values.dtype).removeprefix('torch.')}, "
            f"{str(indices.dtype).removeprefix('torch.')} ids, {values.device}, BLOCK_D={block_d(W.shape[1])} "
            f"BLOCK_K={block_k(indices.shape[1])}{extra}")


def decode_backward(indices, values, grad, W_dec, n: int, project: bool, need_dvalues: bool, need_dW: bool):
    """(dvalues, dW_dec) for the output gradient ``grad`` ([B, d], contiguous); None where not needed."""
    dvalues = dW = None
    if need_dvalues:
        dvalues = gather_dot(indices, grad, W_dec, values.dtype)
    if need_dW:
        dW = segment_rows(indices, values, grad, n, out_dtype=W_dec.dtype, project=W_dec if project else None)
    return dvalues, dW


class SparseDecode(torch.autograd.Function):
    @staticmethod
    def forward(ctx, indices, values, W_dec, b_dec, project_grad):
        W = rows_contiguous(W_dec)
        b = b_dec.contiguous() if b_dec is not None else None
        ctx.save_for_backward(indices, values, W)
        ctx.has_bias, ctx.project_grad = b_dec is not None, project_grad
        return guarded(
            _config("forward", indices, values, W, f" bias={b is not None}"), values.device,
            lambda: gather_sum(indices, values, W, b),
            lambda out: check_decode_forward(indices, values, W, b, out),
            lambda: reference_decode_rows(indices, values, W, b))

    @staticmethod
    def backward(ctx, grad):
        indices, values, W_dec = ctx.saved_tensors
        grad = grad.contiguous()
        needs = (ctx.needs_input_grad[1], ctx.needs_input_grad[2])
        project = ctx.project_grad
        dvalues, dW = guarded(
            _config("backward", indices, values, W_dec, f" project={project} dvalues={needs[0]} dW={needs[1]}"),
            values.device,
            lambda: decode_backward(indices, values, grad, W_dec, W_dec.shape[0], project, *needs),
            lambda out: check_decode_backward(decode_backward, indices, values, grad, W_dec, project, needs,
                                                         out),
            lambda: reference_decode_backward(indices, values, grad, W_dec, project, *needs))
        db = grad.sum(0) if ctx.has_bias and ctx.needs_input_grad[3] else None
        return None, dvalues, dW, db, None


def sparse_decode(indices: torch.Tensor, values: torch.Tensor, W_dec: torch.Tensor, b_dec: torch.Tensor | None = None,
                  *, project_grad: bool = False):
    """Triton sparse decode; same contract as :func:`fastsae.ops.reference.sparse_decode`."""
    return SparseDecode.apply(indices.contiguous(), values.contiguous(), W_dec, b_dec, bool(project_grad))
