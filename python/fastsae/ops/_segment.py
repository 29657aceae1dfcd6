"""Deterministic, atomic-free scatter of weighted rows into latent rows (Triton).

Both sparse backward passes need ``out[l] = sum_{e : idx_e = l} w_e * R[row_e]`` over the
``B * k`` entries of a top-k code (``dW_enc`` with R = x and w = the code's gradient;
``dW_dec`` with R = the output gradient and w = the code's values). Instead of atomics (whose
float sums depend on scheduling), the entries are sorted by latent once (a stable sort, so
within a latent they stay in (example, slot) order) and one program per (latent, d-tile) sums
its segment in that fixed order (``BLOCK_E`` entries per step, each step a fixed reduction
tree): the result is bitwise reproducible. Latents no entry touches
get rows of zeros from the same kernel, so no separate zero-fill pass is needed.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl


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
    tl.store(out_ptr + latent.to(tl.int64) * stride_out + rd, acc.to(out_ptr.dtype.element_ty), mask=md)
    if HAS_SUMW:
        if dtile == 0:
            tl.store(sumw_ptr + latent, tl.sum(sw, axis=0).to(sumw_ptr.dtype.element_ty))


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
                 out_dtype: torch.dtype, with_sums: bool = False, order_offsets=None):
    """``out [n, d]`` with ``out[l] = sum_{idx[b, j] = l} weights[b, j] * rows[b]``; and, with
    ``with_sums``, ``sums [n]`` = the per-latent sum of the weights (``db_enc``)."""
    B, k = indices.shape
    assert weights.shape == (B, k) and rows.dim() == 2 and rows.shape[0] == B, "shapes: indices/weights [B, k], rows [B, d]"
    assert rows.is_contiguous() and weights.is_contiguous(), "rows and weights must be contiguous"
    d = rows.shape[1]
    order, offsets = order_offsets if order_offsets is not None else segment_order(indices, n)
    out = torch.empty(n, d, dtype=out_dtype, device=rows.device)
    sums = torch.empty(n, dtype=out_dtype, device=rows.device) if with_sums else out
    BLOCK_D = block_d(d)
    grid = (n, triton.cdiv(d, BLOCK_D))
    _segment_rows_kernel[grid](out, sums, rows, weights, order, offsets, d, k, out.stride(0), rows.stride(0),
                               HAS_SUMW=with_sums, BLOCK_E=BLOCK_E, BLOCK_D=BLOCK_D)
    return (out, sums) if with_sums else out
