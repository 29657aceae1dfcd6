"""Top-k encode, Triton: the top-k of ``ReLU(x @ W_enc^T + b_enc)`` without writing the
``[B, n]`` pre-activations to global memory.

Forward, two stages:

1. ``_stream_topk_kernel``: the latents are cut into ``n_ranges`` contiguous ranges (enough
   ranges to fill the GPU: about 4 programs per SM). One program per (row block, range) walks
   its range tile by tile: a ``[BLOCK_B, BLOCK_N]`` tile of ``x @ W_enc^T`` (fp32 accumulation;
   fp32 inputs use IEEE products unless ``torch.set_float32_matmul_precision`` allows TF32, as
   torch's own matmul does), bias, ReLU, then the tile's top-K per row
   (``tl.topk``, K = k rounded up to a power of two) folded into a running top-K held in
   registers by one bitonic merge (``max(best, flip(tile_top))`` is bitonic and holds the top-K
   of both lists; ``tl.bitonic_merge`` sorts it in log2(K) compare-exchange rounds, against
   about log2(2K)^2/2 for a fresh ``tl.topk`` of the 2K keys). Each (value, latent) pair is one
   integer key, so selection moves a single register per entry: the value's IEEE bits (monotone
   for values >= 0) above the complement of the latent id, so ties go to the lower id. Keys are
   int64 (fp32 value, global id) for fp32 inputs and int32 (the value rounded to the input's
   16-bit dtype, 16-bit id within the range) for bf16/fp16, which halves the registers and the
   compare-exchange work of the selection; bf16/fp16 codes carry the rounded value anyway, so the
   selected set is that of top-k over the dtype's own pre-activations. Each program writes its K
   best as int64 keys: ``B x n_ranges x K`` candidates in all, never ``B x n``. With a dead-latent
   mask the same pass keeps a second running top-k_aux among dead latents, for AuxK, with no host
   synchronisation.
2. ``_merge_topk_kernel``: folds each row's ``n_ranges`` sorted lists with the same bitonic
   merge and unpacks the first k.

The forward has a second implementation, :func:`fastsae.ops.reference.gemm_topk` (one cuBLAS
GEMM writing ``[B, n]``, then ``torch.topk``), for selections too wide for registers (more than
:data:`MAX_FUSED_KEYS` kept keys) and as a guard: with ``FASTSAE_ENCODE=auto`` (default) the
first call for each problem size on a GPU times both forwards on its own inputs and keeps the
faster, so the fused kernel is used where it wins; ``fused`` or ``gemm`` forces one. Both give
the same selection (up to ties) and share the sparse backward below.

Backward flows only through the k active entries: ``g = dvalues * (values > 0)``;
``dx = sum_j g[b, j] W_enc[idx[b, j]]`` (the decode gather kernel), and ``dW_enc``/``db_enc``
by the deterministic segment reduction (no atomics, no ``[B, n]`` gradient, no ``[B, k, d]``
temporary).

The kernels read rows with unit stride: the autograd Functions take any strided ``x``/``W_enc``
(e.g. SAELens's ``W_enc.T``) and make one contiguous copy per call of what is not (a
memory-bound copy of ``[n, d]``, far cheaper than gathering rows with a stride of ``n``), kept
for the backward; the gradients flow back through the caller's view. Every kernel call goes
through :func:`fastsae.ops._selfcheck.guarded` (the first-call check against the torch path,
keyed by :func:`forward_config`/:func:`backward_config`).
"""

from __future__ import annotations

import functools
import os
from typing import NamedTuple

import torch
import triton
import triton.language as tl

from ._selfcheck import check_encode_backward, check_encode_forward, guarded
from ._segment import block_d, segment_order, segment_rows
from .decode_kernels import block_k, gather_sum
from .reference import SavedCtx, gemm_topk, rows_contiguous
from .reference import TopKEncode as ReferenceTopKEncode

MAX_RANGE_16BIT = 1 << 16  # latents per range with int32 keys: the id within the range has 16 bits


@triton.jit
def _fold(best, top):
    # best, top: [R, K] keys sorted largest first -> the top K of both, sorted largest first.
    return tl.bitonic_merge(tl.maximum(best, tl.flip(top, 1)), descending=True)


@triton.jit
def _bits16(val, VAL_DTYPE: tl.constexpr):
    # The bits of val (>= 0, fp32) rounded to nearest-even in the 16-bit dtype, as int32 < 0x8000.
    if VAL_DTYPE == tl.bfloat16:
        # By hand: the interpreter truncates fp32 -> bf16 casts (rtne or not), the GPU rounds.
        b = val.to(tl.int32, bitcast=True)
        bits = (b + 0x7FFF + ((b >> 16) & 1)) >> 16
    else:
        bits = val.to(VAL_DTYPE).to(tl.int16, bitcast=True).to(tl.int32)
    return bits


@triton.jit
def _keys(val, rn, mask, range_start, KEY32: tl.constexpr, VAL_DTYPE: tl.constexpr):
    # val >= 0 (after ReLU; -0.0 never occurs because of the strict > 0 test upstream).
    if KEY32:
        key = (_bits16(val, VAL_DTYPE) << 16) | (0xFFFF - (rn - range_start))
    else:
        bits = val.to(tl.int32, bitcast=True).to(tl.int64)
        key = (bits << 32) | (0xFFFFFFFF - rn.to(tl.int64))
    return tl.where(mask, key, -1)  # -1: below every real key


@triton.jit
def _to_global(best, range_start, KEY32: tl.constexpr, VAL_DTYPE: tl.constexpr):
    # Range keys -> int64 (fp32 value bits, global id) keys; -1 ("no candidate") stays -1.
    if KEY32:
        val = (best >> 16).to(tl.int16).to(VAL_DTYPE, bitcast=True).to(tl.float32)
        latent = range_start + (0xFFFF - (best & 0xFFFF))
        key = (val.to(tl.int32, bitcast=True).to(tl.int64) << 32) | (0xFFFFFFFF - latent.to(tl.int64))
        out = tl.where(best >= 0, key, -1)
    else:
        out = best
    return out


@triton.jit
def _stream_topk_kernel(
    x_ptr, w_ptr, b_ptr, dead_ptr, cand_ptr, aux_ptr,
    B, N, D, n_tiles, tiles_per_range, n_ranges, stride_x, stride_w,
    K_POW2: tl.constexpr, KAUX_POW2: tl.constexpr, HAS_AUX: tl.constexpr, KEY32: tl.constexpr,
    VAL_DTYPE: tl.constexpr, IEEE: tl.constexpr, UPCAST: tl.constexpr,
    BLOCK_B: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
):
    pid_b = tl.program_id(0)
    pid_r = tl.program_id(1)
    rb = pid_b * BLOCK_B + tl.arange(0, BLOCK_B)
    mb = rb < B
    first = pid_r * tiles_per_range
    last = tl.minimum(first + tiles_per_range, n_tiles)
    range_start = first * BLOCK_N
    key_ty: tl.constexpr = tl.int32 if KEY32 else tl.int64
    best = tl.full((BLOCK_B, K_POW2), -1, key_ty)
    abest = tl.full((BLOCK_B, KAUX_POW2), -1, key_ty)
    for t in range(first, last):
        rn = t * BLOCK_N + tl.arange(0, BLOCK_N)
        mn = rn < N
        acc = tl.zeros((BLOCK_B, BLOCK_N), dtype=tl.float32)
        for d0 in range(0, D, BLOCK_D):
            rd = d0 + tl.arange(0, BLOCK_D)
            md = rd < D
            xt = tl.load(x_ptr + rb[:, None].to(tl.int64) * stride_x + rd[None, :],
                         mask=mb[:, None] & md[None, :], other=0.0)
            wt = tl.load(w_ptr + rn[:, None].to(tl.int64) * stride_w + rd[None, :],
                         mask=mn[:, None] & md[None, :], other=0.0)
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
        key = _keys(val, rn[None, :], mn[None, :], range_start, KEY32, VAL_DTYPE)
        best = _fold(best, tl.topk(key, K_POW2))
        if HAS_AUX:
            dead = tl.load(dead_ptr + rn, mask=mn, other=0)
            akey = tl.where((dead != 0)[None, :], key, -1)
            abest = _fold(abest, tl.topk(akey, KAUX_POW2))
    rk = tl.arange(0, K_POW2)
    out = cand_ptr + (rb[:, None].to(tl.int64) * n_ranges + pid_r) * K_POW2 + rk[None, :]
    tl.store(out, _to_global(best, range_start, KEY32, VAL_DTYPE), mask=mb[:, None])
    if HAS_AUX:
        ra = tl.arange(0, KAUX_POW2)
        aout = aux_ptr + (rb[:, None].to(tl.int64) * n_ranges + pid_r) * KAUX_POW2 + ra[None, :]
        tl.store(aout, _to_global(abest, range_start, KEY32, VAL_DTYPE), mask=mb[:, None])


@triton.jit
def _merge_topk_kernel(cand_ptr, idx_ptr, val_ptr, B, n_lists, k, K_POW2: tl.constexpr, ROWS: tl.constexpr):
    rr = tl.program_id(0) * ROWS + tl.arange(0, ROWS)
    mr = rr < B
    rk = tl.arange(0, K_POW2)
    base = cand_ptr + rr[:, None].to(tl.int64) * n_lists * K_POW2 + rk[None, :]
    best = tl.load(base, mask=mr[:, None], other=-1)
    for t in range(1, n_lists):
        best = _fold(best, tl.load(base + t * K_POW2, mask=mr[:, None], other=-1))
    latent = 0xFFFFFFFF - (best & 0xFFFFFFFF)
    value = (best >> 32).to(tl.int32).to(tl.float32, bitcast=True)
    valid = best >= 0  # -1 marks "no candidate" (only when k exceeds the real latents)
    value = tl.where(valid, value, 0.0)
    latent = tl.where(valid, latent, 0)
    m = mr[:, None] & (rk < k)[None, :]
    off = rr[:, None].to(tl.int64) * k + rk[None, :]
    tl.store(idx_ptr + off, latent, mask=m)
    tl.store(val_ptr + off, value.to(val_ptr.dtype.element_ty), mask=m)


def key_width(k: int) -> int:
    """Keys kept per row: k rounded up to a power of two, at least 2 (tl.topk with k = 1 does
    not compile for GPUs)."""
    return max(2, triton.next_power_of_2(k))


class EncodePlan(NamedTuple):
    """Everything the launcher decides for one call (the AOT test compiles exactly these)."""

    K_POW2: int
    """Keys kept per row (k rounded up to a power of two)."""
    KAUX_POW2: int
    """Keys kept per row among dead latents (2 when there is no AuxK)."""
    KEY32: bool
    """int32 keys (16-bit inputs) rather than int64."""
    BLOCK_B: int
    """Rows per program."""
    BLOCK_N: int
    """Latents per tile."""
    BLOCK_D: int
    """Reduction step of the tile GEMM."""
    n_tiles: int
    """Latent tiles in all: ``cdiv(n, BLOCK_N)``."""
    tiles_per_range: int
    """Tiles walked by one program."""
    n_ranges: int
    """Latent ranges (programs per row block): candidates per row are ``n_ranges * K_POW2``."""
    num_warps: int
    """Warps per program of the streaming kernel."""
    num_stages: int
    """Software-pipelining depth of the tile GEMM's reduction loop."""


@functools.lru_cache(maxsize=None)
def _sm_count(device: torch.device) -> int:
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).multi_processor_count
    return 4  # interpreter: a few ranges, so the tests exercise the range merge


def plan(B: int, n: int, d: int, k: int, k_aux: int, dtype: torch.dtype, sm_count: int, *,
         block_b: int | None = None, block_n: int | None = None, n_ranges: int | None = None) -> EncodePlan:
    """The launch configuration for ``x [B, d]``, ``W_enc [n, d]``, top-k (and top-k_aux).

    Tiles: tl.dot needs >= 16 per side and a tile must hold the K kept keys. The tile sizes are
    set by the registers the running top-k lists need, T = K + K_aux kept keys per row (Triton's
    own ptxas run for sm_90a and sm_80, 8 warps; 4 warps spilled 64-2248 bytes, 16 warps spilled
    on sm_80): T <= 64: 64 x 64; T <= 96: 32 x 64 (64 x 64 spilled 36 bytes on sm_80);
    T <= 192: 16 x 128 (32 x 128 spilled 16-516 bytes); BLOCK_D = 64, but 32 for fp32, whose
    IEEE dot keeps its operand tiles in registers (BLOCK_D = 64 spilled 16-176 bytes). With these
    no bf16/fp16 plan spills on sm_90; fp32 and sm_80 plans spill at most a few dozen bytes (ptxas
    allocation is irregular there: 0-96 bytes); the AOT test checks both (0, and <= 128).
    Beyond T = 192 (e.g. k = 128 with k_aux = 256, or the paper's k_aux = 512) every tried tile
    spilled 0.9-11 KB, and :func:`fused` sends those to the GEMM + torch.topk path instead.
    ``block_b``, ``block_n`` and ``n_ranges`` override the choice (tests).
    """
    K_POW2 = key_width(k)
    KAUX_POW2 = key_width(k_aux) if k_aux > 0 else 2
    kmax = max(K_POW2, KAUX_POW2)
    kept = K_POW2 + (KAUX_POW2 if k_aux > 0 else 0)
    BLOCK_B = block_b or (16 if B <= 16 or kept > 96 else 32 if kept > 64 else 64)
    BLOCK_N = block_n or (max(64, kmax) if n > 64 else max(16, triton.next_power_of_2(max(n, kmax))))
    if BLOCK_N < kmax:
        raise ValueError(f"BLOCK_N={BLOCK_N} must hold the {kmax} kept keys")
    BLOCK_D = 32 if d <= 32 or dtype == torch.float32 else 64  # fp32's IEEE dot holds its operands in registers
    n_tiles = triton.cdiv(n, BLOCK_N)
    row_blocks = triton.cdiv(B, BLOCK_B)
    key32 = dtype != torch.float32
    if n_ranges is None:
        n_ranges = max(1, min(n_tiles, triton.cdiv(4 * sm_count, row_blocks)))
        if key32:  # the id within a range has 16 bits
            n_ranges = max(n_ranges, triton.cdiv(n, MAX_RANGE_16BIT))
    tiles_per_range = triton.cdiv(n_tiles, n_ranges)
    n_ranges = triton.cdiv(n_tiles, tiles_per_range)  # no empty range
    assert not key32 or tiles_per_range * BLOCK_N <= MAX_RANGE_16BIT, "a range holds at most 65536 latents"
    return EncodePlan(K_POW2, KAUX_POW2, key32, BLOCK_B, BLOCK_N, BLOCK_D, n_tiles, tiles_per_range, n_ranges,
                      num_warps=8, num_stages=3)


MAX_FUSED_KEYS = 192
"""Most kept keys per row (k and k_aux, each rounded up to a power of two) the fused encode takes."""


def fused(k: int, k_aux: int = 0) -> bool:
    """Whether the fused kernel takes top-k (and top-k_aux): at most :data:`MAX_FUSED_KEYS` kept
    keys per row (so k <= 128 alone, k <= 64 with k_aux <= 128)."""
    return key_width(k) + (key_width(k_aux) if k_aux > 0 else 0) <= MAX_FUSED_KEYS


_TL = {torch.float32: tl.float32, torch.bfloat16: tl.bfloat16, torch.float16: tl.float16}


def topk_candidates(x, W_enc, b_enc, k, dead=None, k_aux=0, **overrides):
    """Launch both stages. Returns (indices [B, k] int64, values [B, k]) and, with a dead mask,
    (aux_indices [B, k_aux], aux_values [B, k_aux]) among the dead latents. ``overrides`` go to
    :func:`plan` (tests)."""
    assert x.dim() == 2 and W_enc.dim() == 2 and x.shape[1] == W_enc.shape[1], "x [B, d], W_enc [n, d]"
    assert b_enc.shape == (W_enc.shape[0],), "b_enc [n]"
    assert x.dtype == W_enc.dtype == b_enc.dtype and x.dtype in _TL, \
        "x, W_enc, b_enc: one dtype among float32, bfloat16, float16"
    assert x.stride(1) == 1 and W_enc.stride(1) == 1, "rows of x and W_enc must be contiguous"
    assert b_enc.is_contiguous(), "b_enc must be contiguous"
    B, d = x.shape
    n = W_enc.shape[0]
    assert 1 <= k <= n, "1 <= k <= n"
    has_aux = dead is not None and k_aux > 0
    dev = x.device
    p = plan(B, n, d, k, k_aux if has_aux else 0, x.dtype, _sm_count(dev), **overrides)
    cand = torch.empty(B, p.n_ranges, p.K_POW2, dtype=torch.int64, device=dev)
    aux = torch.empty(B, p.n_ranges, p.KAUX_POW2, dtype=torch.int64, device=dev) if has_aux else cand
    dead_t = dead.to(device=dev, dtype=torch.int8).contiguous() if has_aux else cand
    interp = os.environ.get("TRITON_INTERPRET") == "1"
    if B > 0:
        _stream_topk_kernel[(triton.cdiv(B, p.BLOCK_B), p.n_ranges)](
            x, W_enc, b_enc, dead_t, cand, aux, B, n, d, p.n_tiles, p.tiles_per_range, p.n_ranges,
            x.stride(0), W_enc.stride(0), K_POW2=p.K_POW2, KAUX_POW2=p.KAUX_POW2, HAS_AUX=has_aux,
            KEY32=p.KEY32, VAL_DTYPE=_TL[x.dtype], IEEE=interp or (x.dtype == torch.float32 and ieee_fp32()),
            UPCAST=interp and x.dtype != torch.float32, BLOCK_B=p.BLOCK_B, BLOCK_N=p.BLOCK_N, BLOCK_D=p.BLOCK_D,
            num_warps=p.num_warps, num_stages=p.num_stages)
    out = []
    for buf, kk, width in [(cand, k, p.K_POW2)] + ([(aux, k_aux, p.KAUX_POW2)] if has_aux else []):
        idx = torch.empty(B, kk, dtype=torch.int64, device=dev)
        val = torch.empty(B, kk, dtype=x.dtype, device=dev)
        if B > 0:
            rows = merge_rows(width)
            _merge_topk_kernel[(triton.cdiv(B, rows),)](buf, idx, val, B, p.n_ranges, kk, K_POW2=width, ROWS=rows)
        out.append((idx, val))
    return out[0] if not has_aux else (out[0], out[1])


def ieee_fp32() -> bool:
    """fp32 GEMM tiles in IEEE precision, unless the user allowed TF32 for float32 matmuls
    (``torch.set_float32_matmul_precision("high")``): the same switch torch's own matmul, the
    reference path, obeys. IEEE products run without tensor cores."""
    return torch.get_float32_matmul_precision() == "highest"


def merge_rows(width: int) -> int:
    """Rows per merge program: about 1024 keys in flight."""
    return max(1, 1024 // width)


FORWARDS = ("auto", "fused", "gemm")
_CHOSEN: dict[tuple, str] = {}


def forward_choice(x, W_enc, b_enc, k: int, dead=None, k_aux: int = 0) -> str:
    """Which forward selects the code for these inputs: ``"fused"`` (the streaming kernel) or
    ``"gemm"`` (:func:`~fastsae.ops.reference.gemm_topk`). ``FASTSAE_ENCODE`` forces one; under
    ``auto`` a GPU times both once per problem size (B and k_aux rounded up to powers of two, n,
    d, k, dtype, fp32 precision) and keeps the faster; elsewhere (the interpreter) the kernel."""
    choice = os.environ.get("FASTSAE_ENCODE", "auto").lower()
    if choice not in FORWARDS:
        raise ValueError(f"FASTSAE_ENCODE must be one of {FORWARDS}, got {choice!r}")
    if not fused(max(k, 1), k_aux if dead is not None else 0):
        return "gemm"
    if choice != "auto":
        return choice
    if x.device.type != "cuda":
        return "fused"
    # k_aux by its register width: AuxK's k_aux follows the dead count step by step
    key = (x.device.index, triton.next_power_of_2(max(x.shape[0], 1)), W_enc.shape[0], x.shape[1], k,
           key_width(k_aux) if dead is not None and k_aux > 0 else 0, x.dtype, ieee_fp32())
    if key not in _CHOSEN:
        _CHOSEN[key] = _fastest({"fused": lambda: _select("fused", x, W_enc, b_enc, k, dead, k_aux),
                                 "gemm": lambda: _select("gemm", x, W_enc, b_enc, k, dead, k_aux)})
    return _CHOSEN[key]


def _fastest(runs: dict, timer=None) -> str:
    """The name of the fastest of ``runs`` (name -> callable), by ``timer(fn)`` in ms."""
    timer = timer or _time_ms
    times = {name: timer(fn) for name, fn in runs.items()}
    return min(times, key=times.get)


def _time_ms(fn, reps: int = 3) -> float:
    fn()  # warm-up: compilation, allocations
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(reps):
        fn()
    end.record()
    end.synchronize()
    return start.elapsed_time(end) / reps


def forward_config(x, W_enc, k: int, dead=None, k_aux: int = 0) -> str:
    """The self-check's name for the fused forward's compiled configuration on these inputs."""
    has_aux = dead is not None and k_aux > 0
    B, d = x.shape
    p = plan(B, W_enc.shape[0], d, k, k_aux if has_aux else 0, x.dtype, _sm_count(x.device))
    return (f"topk_encode forward, fused kernel, {str(x.dtype).removeprefix('torch.')}, {x.device}, "
            f"K_POW2={p.K_POW2} KAUX_POW2={p.KAUX_POW2 if has_aux else 0} KEY32={p.KEY32} BLOCK_B={p.BLOCK_B} "
            f"BLOCK_N={p.BLOCK_N} BLOCK_D={p.BLOCK_D} num_warps={p.num_warps} num_stages={p.num_stages} "
            f"IEEE={not _tf32(x)}")


def _tf32(x) -> bool:
    return x.dtype == torch.float32 and not ieee_fp32() and os.environ.get("TRITON_INTERPRET") != "1"


def _select(how: str, x, W_enc, b_enc, k: int, dead=None, k_aux: int = 0):
    if how == "fused":
        return guarded(
            forward_config(x, W_enc, k, dead, k_aux), x.device,
            lambda: topk_candidates(x, W_enc, b_enc, k, dead=dead, k_aux=k_aux),
            lambda out: check_encode_forward(x, W_enc, b_enc, k, dead, k_aux, out, tf32=_tf32(x)),
            lambda: gemm_topk(x, W_enc, b_enc, k, dead, k_aux))
    return gemm_topk(x, W_enc, b_enc, k, dead, k_aux)


def backward_config(x, W_enc, k: int, needs) -> str:
    """The self-check's name for the backward kernels' configuration (``needs``: dx, dW/db)."""
    d = x.shape[1]
    return (f"topk_encode backward, {str(x.dtype).removeprefix('torch.')}, {x.device}, BLOCK_D={block_d(d)} "
            f"BLOCK_K={block_k(k)} dx={bool(needs[0])} dW={bool(needs[1])}")


def encode_backward(indices, g, x, W_enc, n: int, need_dx: bool, need_dW: bool):
    """(dx, dW_enc, db_enc) for the masked code gradient ``g`` ([B, k], contiguous): a gather
    for dx, the segment reduction for both others (None where not needed)."""
    dx = dW = db = None
    if need_dx:
        dx = gather_sum(indices, g, W_enc, out_dtype=x.dtype)
    if need_dW:
        dW, db = segment_rows(indices, g, x, n, out_dtype=W_enc.dtype, with_sums=True,
                              order_offsets=segment_order(indices, n))
    return dx, dW, db


class TopKEncode(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, W_enc, b_enc, k):
        x, W_enc, b_enc = rows_contiguous(x), rows_contiguous(W_enc), b_enc.contiguous()
        indices, values = _select(forward_choice(x, W_enc, b_enc, k), x, W_enc, b_enc, k)
        ctx.save_for_backward(x, W_enc, indices, values)
        ctx.mark_non_differentiable(indices)
        return indices, values

    @staticmethod
    def backward(ctx, _grad_indices, grad_values):
        x, W_enc, indices, values = ctx.saved_tensors
        g = torch.where(values > 0, grad_values, torch.zeros((), dtype=grad_values.dtype, device=grad_values.device))
        g = g.contiguous()
        x = x.contiguous()  # (the segment reduction reads whole rows of x)
        need = ctx.needs_input_grad[:3]
        needs = (need[0], need[1] or need[2])
        dx, dW, db = guarded(
            backward_config(x, W_enc, indices.shape[1], needs), x.device,
            lambda: encode_backward(indices, g, x, W_enc, W_enc.shape[0], *needs),
            lambda out: check_encode_backward(encode_backward, indices, g, x, W_enc, needs, out),
            lambda: ReferenceTopKEncode.backward(SavedCtx(need, (x, W_enc, indices, values)), None, grad_values)[:3])
        return dx if need[0] else None, dW if need[1] else None, db if need[2] else None, None


def topk_encode(x: torch.Tensor, W_enc: torch.Tensor, b_enc: torch.Tensor, k: int):
    """Triton top-k encode; same contract as :func:`fastsae.ops.reference.topk_encode`."""
    return TopKEncode.apply(x, W_enc, b_enc, k)


class TopKEncodeAux(torch.autograd.Function):
    """Main code and AuxK code from one pass; backward over both sets of entries at once."""

    @staticmethod
    def forward(ctx, x, W_enc, b_enc, k, dead, k_aux):
        x, W_enc, b_enc = rows_contiguous(x), rows_contiguous(W_enc), b_enc.contiguous()
        how = forward_choice(x, W_enc, b_enc, k, dead, k_aux)
        (indices, values), (aux_indices, aux_values) = _select(how, x, W_enc, b_enc, k, dead, k_aux)
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
