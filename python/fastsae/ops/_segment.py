"""Deterministic, atomic-free scatter of weighted rows into latent rows (Triton).

Both sparse backward passes need ``out[l] = sum_{e : idx_e = l} w_e * R[row_e]`` over the
``B * k`` entries of a top-k code (``dW_enc`` with R = x and w = the code's gradient;
``dW_dec`` with R = the output gradient and w = the code's values). Instead of atomics (whose
float sums depend on scheduling), the entries are sorted by latent once (a stable sort, so
within a latent they stay in (example, slot) order) and one program per (latent, d-tile) sums
its segment in that fixed order (``BLOCK_E`` entries per step, each step a fixed reduction
tree): the result is bitwise reproducible. Latents no entry touches
get rows of zeros from the same kernel, so no separate zero-fill pass is needed. The decoder's
variant also applies the unit-norm gradient projection to the rows it writes.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl


@triton.jit
def _segment_tile(rows_ptr, w_ptr, order_ptr, start, end, rd, md, K, stride_rows,
                  BLOCK_E: tl.constexpr, BLOCK_D: tl.constexpr):
    """One latent's ``sum_e w_e * rows[row_e, rd]`` over its entries [start, end), and the sum
    of its weights (both fp32, in the fixed entry order)."""
    acc = tl.zeros((BLOCK_D,), dtype=tl.float32)
    sw = tl.zeros((BLOCK_E,), dtype=tl.float32)
    # BLOCK_E entries per step: a dense latent (on thousands of rows) issues BLOCK_E independent
    # row loads at a time instead of one dependent step per entry.
    for e0 in range(start, end, BLOCK_E):
        re = e0 + tl.arange(0, BLOCK_E)
        me = re < end
        flat = tl.load(order_ptr + re, mask=me, other=0)
        row = flat // K
        w = tl.load(w_ptr + flat, mask=me, other=0.0).to(tl.float32)
        r = tl.load(rows_ptr + row[:, None] * stride_rows + rd[None, :], mask=me[:, None] & md[None, :], other=0.0)
        acc += tl.sum(w[:, None] * r.to(tl.float32), axis=0)
        sw += w
    return acc, tl.sum(sw, axis=0)


@triton.jit
def _segment_rows_kernel(
    out_ptr, sumw_ptr, rows_ptr, w_ptr, order_ptr, offsets_ptr,
    D, K, stride_out, stride_rows,
    HAS_SUMW: tl.constexpr, BLOCK_E: tl.constexpr, BLOCK_D: tl.constexpr,
):
    latent = tl.program_id(0)
    dtile = tl.program_id(1)
    rd = dtile * BLOCK_D + tl.arange(0, BLOCK_D)
    md = rd < D
    start = tl.load(offsets_ptr + latent)
    end = tl.load(offsets_ptr + latent + 1)
    acc, sw = _segment_tile(rows_ptr, w_ptr, order_ptr, start, end, rd, md, K, stride_rows, BLOCK_E, BLOCK_D)
    tl.store(out_ptr + latent.to(tl.int64) * stride_out + rd, acc.to(out_ptr.dtype.element_ty), mask=md)
    if HAS_SUMW:
        if dtile == 0:
            tl.store(sumw_ptr + latent, sw.to(sumw_ptr.dtype.element_ty))


@triton.jit
def _segment_rows_projected_kernel(
    out_ptr, rows_ptr, w_ptr, order_ptr, offsets_ptr, proj_ptr,
    D, K, stride_out, stride_rows, stride_proj,
    BLOCK_E: tl.constexpr, BLOCK_D: tl.constexpr,
):
    """``out[l] = g - <g, P[l]> / |P[l]|^2 * P[l]`` with g the segment sum: the unit-norm
    gradient projection fused into the reduction. One program per latent walks the whole row
    twice: pass 1 writes g and accumulates both dot products, pass 2 subtracts the component
    along P[l] in place. Untouched latents write zeros (the projection of zero)."""
    latent = tl.program_id(0)
    start = tl.load(offsets_ptr + latent)
    end = tl.load(offsets_ptr + latent + 1)
    out_row = out_ptr + latent.to(tl.int64) * stride_out
    p_row = proj_ptr + latent.to(tl.int64) * stride_proj
    gp = tl.zeros((BLOCK_D,), dtype=tl.float32)
    pp = tl.zeros((BLOCK_D,), dtype=tl.float32)
    for d0 in range(0, D, BLOCK_D):
        rd = d0 + tl.arange(0, BLOCK_D)
        md = rd < D
        acc, _ = _segment_tile(rows_ptr, w_ptr, order_ptr, start, end, rd, md, K, stride_rows, BLOCK_E, BLOCK_D)
        tl.store(out_row + rd, acc.to(out_ptr.dtype.element_ty), mask=md)
        if end > start:
            p = tl.load(p_row + rd, mask=md, other=0.0).to(tl.float32)
            gp += acc * p
            pp += p * p
    if end > start:
        gp_s = tl.sum(gp, axis=0)
        pp_s = tl.sum(pp, axis=0)
        c = tl.where(pp_s > 0, gp_s / tl.where(pp_s > 0, pp_s, 1.0), 0.0)
        tl.debug_barrier()  # pass 1's stores are visible to every thread of the program
        for d0 in range(0, D, BLOCK_D):
            rd = d0 + tl.arange(0, BLOCK_D)
            md = rd < D
            g = tl.load(out_row + rd, mask=md, other=0.0).to(tl.float32)
            p = tl.load(p_row + rd, mask=md, other=0.0).to(tl.float32)
            tl.store(out_row + rd, (g - c * p).to(out_ptr.dtype.element_ty), mask=md)


def segment_order(indices: torch.Tensor, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(order ``[B*k]``: flat entries sorted by latent, stable; offsets ``[n + 1]``)."""
    flat = indices.reshape(-1)
    sorted_idx, order = torch.sort(flat, stable=True)
    bounds = torch.arange(n + 1, device=flat.device, dtype=sorted_idx.dtype)
    offsets = torch.searchsorted(sorted_idx, bounds)  # no host synchronisation (unlike bincount)
    return order.contiguous(), offsets.contiguous()


def block_d(d: int) -> int:
    return min(128, max(16, triton.next_power_of_2(d)))


BLOCK_E = 16
"""Entries summed per step of the segment loop ([BLOCK_E, BLOCK_D] = 16 x 128 loads in flight)."""


def segment_rows(indices: torch.Tensor, weights: torch.Tensor, rows: torch.Tensor, n: int, *,
                 out_dtype: torch.dtype, with_sums: bool = False, order_offsets=None,
                 project: torch.Tensor | None = None):
    """``out [n, d]`` with ``out[l] = sum_{idx[b, j] = l} weights[b, j] * rows[b]``; and, with
    ``with_sums``, ``sums [n]`` = the per-latent sum of the weights (``db_enc``). With
    ``project`` (``[n, d]``, e.g. W_dec) each row of ``out`` loses its component along
    ``project[l]`` (the unit-norm gradient projection, touched rows only)."""
    B, k = indices.shape
    assert weights.shape == (B, k) and rows.dim() == 2 and rows.shape[0] == B, "shapes: indices/weights [B, k], rows [B, d]"
    assert rows.is_contiguous() and weights.is_contiguous(), "rows and weights must be contiguous"
    d = rows.shape[1]
    order, offsets = order_offsets if order_offsets is not None else segment_order(indices, n)
    out = torch.empty(n, d, dtype=out_dtype, device=rows.device)
    if project is not None:
        assert project.shape == (n, d) and project.stride(1) == 1, "project must be [n, d] with unit stride"
        assert not with_sums, "project and with_sums are not combined"
        _segment_rows_projected_kernel[(n,)](out, rows, weights, order, offsets, project, d, k, out.stride(0),
                                             rows.stride(0), project.stride(0), BLOCK_E=BLOCK_E, BLOCK_D=block_d(d))
        return out
    sums = torch.empty(n, dtype=out_dtype, device=rows.device) if with_sums else out
    BLOCK_D = block_d(d)
    grid = (n, triton.cdiv(d, BLOCK_D))
    _segment_rows_kernel[grid](out, sums, rows, weights, order, offsets, d, k, out.stride(0), rows.stride(0),
                               HAS_SUMW=with_sums, BLOCK_E=BLOCK_E, BLOCK_D=BLOCK_D)
    return (out, sums) if with_sums else out
