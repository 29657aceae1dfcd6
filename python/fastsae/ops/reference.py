"""The torch path of the SAE operations: the CPU implementation and the tests' oracle.

Sparsity is exploited where it pays on a CPU:

* encode computes the dense ``[B, n]`` pre-activations (top-k needs them all) but its backward
  flows only through the k selected entries per row: ``dW_enc = G^T x`` and ``dx = G W_enc``
  with ``G`` the ``[B, n]`` gradient held as a sparse matrix of ``B*k`` entries, ``db_enc`` a
  scatter-add. No dense ``[B, n]`` gradient and no ``[B, k, d]`` temporary is formed.
* decode is a weighted gather of k decoder rows per example (``embedding_bag`` with per-sample
  weights), never a dense ``[B, n] @ [n, d]``; its backward writes only the touched rows of
  ``dW_dec`` and computes ``dvalues`` as a gather-dot.

Weights may have any strides (SAELens holds ``W_enc`` as ``[d, n]`` and passes ``W_enc.T``).
The row gathers (``embedding_bag``) are 100x slower on rows that are not contiguous (955 ms
against 9 ms for the encoder's ``dx`` at B=1024, k=64, n=9216, d=1536, one thread), so a weight
whose rows are strided is copied once (31 ms) where a gather reads it; the dense GEMM and the
sparse ``G^T x`` product take any strides at full speed and read the caller's tensor as it is.
Gradients flow back through the caller's view (autograd lays them out like the parameter).
"""

from __future__ import annotations

import warnings

import torch
import torch.nn.functional as F

from .._checks import check_int


def check_encode(x: torch.Tensor, W_enc: torch.Tensor, b_enc: torch.Tensor, k: int) -> None:
    if x.dim() != 2:
        raise ValueError(f"x must be [B, d], got shape {tuple(x.shape)}")
    if W_enc.dim() != 2 or W_enc.shape[1] != x.shape[1]:
        raise ValueError(f"W_enc must be [n, d] with d={x.shape[1]}, got {tuple(W_enc.shape)}")
    if b_enc.shape != (W_enc.shape[0],):
        raise ValueError(f"b_enc must be [n] with n={W_enc.shape[0]}, got {tuple(b_enc.shape)}")
    check_int(k, "k", min=1, max=W_enc.shape[0])  # at most n_latents
    if not (x.dtype == W_enc.dtype == b_enc.dtype) or not x.is_floating_point():
        raise TypeError(f"x, W_enc and b_enc must share one floating dtype, got {x.dtype}, {W_enc.dtype}, {b_enc.dtype}")


def rows_contiguous(t: torch.Tensor) -> torch.Tensor:
    """``t`` itself when its last dimension has unit stride (any row stride), else one contiguous
    copy: what the row gathers (``embedding_bag`` here, the Triton kernels) need at full speed.
    Called inside autograd Functions, or differentiably (the copy's gradient is the view's)."""
    return t if t.shape[-1] <= 1 or t.stride(-1) == 1 else t.contiguous()


def gemm_topk(x, W_enc, b_enc, k: int, dead: torch.Tensor | None = None, k_aux: int = 0):
    """The dense selection every other trainer does: the ``[B, n]`` pre-activations (one GEMM),
    then ``torch.topk``. Returns (indices, values) and, with ``dead``, also (aux_indices,
    aux_values): the top-``k_aux`` among dead latents, value 0 where fewer are positive."""
    pre = torch.addmm(b_enc, x, W_enc.t())  # [B, n]
    top, indices = pre.topk(k, dim=1)  # ReLU is monotone: top-k of ReLU(pre) = ReLU(top-k)
    values = top.clamp_min(0)
    if dead is None:
        return indices, values
    masked = pre.masked_fill_(~dead.to(torch.bool)[None, :], float("-inf"))  # pre is not needed again
    atop, aux_indices = masked.topk(k_aux, dim=1)
    aux_values = torch.where(torch.isfinite(atop), atop.clamp_min(0), torch.zeros((), dtype=atop.dtype, device=atop.device))
    return (indices, values), (aux_indices, aux_values)


class TopKEncode(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, W_enc, b_enc, k):
        indices, values = gemm_topk(x, W_enc, b_enc, k)
        ctx.save_for_backward(x, W_enc, indices, values)
        ctx.mark_non_differentiable(indices)
        return indices, values

    @staticmethod
    def backward(ctx, _grad_indices, grad_values):
        x, W_enc, indices, values = ctx.saved_tensors
        B, k = indices.shape
        n = W_enc.shape[0]
        g = torch.where(values > 0, grad_values, torch.zeros((), dtype=grad_values.dtype))  # ReLU'
        dx = dW = db = None
        if ctx.needs_input_grad[0]:
            # dx[b] = sum_j g[b, j] * W_enc[idx[b, j]]: a weighted gather of k rows (on a copy
            # when the caller's rows are strided, e.g. SAELens's W_enc.T: 40 ms against 955 ms).
            dx = F.embedding_bag(indices, rows_contiguous(W_enc), per_sample_weights=g, mode="sum")
        if ctx.needs_input_grad[1] or ctx.needs_input_grad[2]:
            flat_idx = indices.reshape(-1)
            flat_g = g.reshape(-1)
            if ctx.needs_input_grad[1]:
                if W_enc.stride(0) == 1 and W_enc.stride(1) >= W_enc.shape[0] and _csr_ok(x):
                    # The caller holds W_enc^T ([d, n], SAELens): dW^T = x^T G written in that
                    # layout, so autograd hands it to the parameter without a transposing copy
                    # (87 ms against 59 + 48 ms at the shape, one thread).
                    dW = _dense_t_sparse(indices, g, x, n).t()
                else:
                    dW = _sparse_t_matmul(flat_idx, flat_g, x, n, k)  # [n, d]: only active rows non-zero
            if ctx.needs_input_grad[2]:
                db = torch.zeros(n, dtype=g.dtype, device=g.device).index_add_(0, flat_idx, flat_g)
        return dx, dW, db, None


def _csr_ok(x: torch.Tensor) -> bool:
    return x.dtype in (torch.float32, torch.float64) and x.device.type == "cpu"


def _dense_t_sparse(indices: torch.Tensor, g: torch.Tensor, x: torch.Tensor, n: int) -> torch.Tensor:
    """``x^T G`` (``[d, n]``, contiguous) for the ``[B, n]`` CSR matrix G with row b holding
    ``g[b]`` at ``indices[b]`` (columns sorted within each row, as CSR expects)."""
    B, k = indices.shape
    cols, order = indices.sort(dim=1)
    crow = torch.arange(0, B * k + 1, k, device=x.device)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "sparse CSR support is in beta"
        G = torch.sparse_csr_tensor(crow, cols.reshape(-1), g.gather(1, order).reshape(-1), (B, n),
                                    check_invariants=False)
        return x.t() @ G


def _sparse_t_matmul(flat_idx: torch.Tensor, flat_g: torch.Tensor, x: torch.Tensor, n: int, k: int) -> torch.Tensor:
    """``G^T x`` for the ``[B, n]`` matrix G with ``B*k`` entries (row b: ``flat_g`` at ``flat_idx``).

    As a CSR matrix sorted by latent (MKL's sparse-dense product on the CPU): 33 ms against 60 ms
    for the COO product at B=1024, k=64, n=9216, d=1536 (2-core EPYC VM). COO for dtypes the
    CSR kernel lacks (bf16/fp16)."""
    B = x.shape[0]
    rows = torch.arange(B, device=x.device).repeat_interleave(k)
    if _csr_ok(x):
        order = torch.argsort(flat_idx, stable=True)
        crow = torch.zeros(n + 1, dtype=torch.int64, device=x.device)
        crow[1:] = torch.bincount(flat_idx, minlength=n).cumsum(0)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "sparse CSR support is in beta"
            G = torch.sparse_csr_tensor(crow, rows[order], flat_g[order], (n, B), check_invariants=False)
            return G @ x
    G = torch.sparse_coo_tensor(torch.stack([flat_idx, rows]), flat_g, (n, B), check_invariants=False)
    return torch.sparse.mm(G, x)


def topk_encode(x: torch.Tensor, W_enc: torch.Tensor, b_enc: torch.Tensor, k: int):
    """(indices ``[B, k]`` int64, values ``[B, k]``): the top-k of ``ReLU(x @ W_enc.T + b_enc)``."""
    check_encode(x, W_enc, b_enc, k)
    return TopKEncode.apply(x, W_enc, b_enc, k)


def check_decode(indices: torch.Tensor, values: torch.Tensor, W_dec: torch.Tensor, b_dec: torch.Tensor | None) -> None:
    if indices.dim() != 2 or values.shape != indices.shape:
        raise ValueError(f"indices and values must both be [B, k], got {tuple(indices.shape)} and {tuple(values.shape)}")
    if indices.dtype not in (torch.int64, torch.int32):
        raise TypeError(f"indices must be int64 or int32, got {indices.dtype}")
    if W_dec.dim() != 2:
        raise ValueError(f"W_dec must be [n, d], got {tuple(W_dec.shape)}")
    if values.dtype != W_dec.dtype:
        raise TypeError(f"values and W_dec must share a dtype, got {values.dtype} and {W_dec.dtype}")
    if b_dec is not None and b_dec.shape != (W_dec.shape[1],):
        raise ValueError(f"b_dec must be [d] with d={W_dec.shape[1]}, got {tuple(b_dec.shape)}")
    if indices.numel() and not _in_range(indices, W_dec.shape[0]):
        raise IndexError(f"indices must lie in [0, n_latents={W_dec.shape[0]})")


def _in_range(indices: torch.Tensor, n: int) -> bool:
    lo, hi = torch.aminmax(indices)
    lo, hi = torch.stack([lo, hi]).tolist()  # one device->host copy (a GPU sync), not two
    return lo >= 0 and hi < n


def sparse_decode(indices: torch.Tensor, values: torch.Tensor, W_dec: torch.Tensor, b_dec: torch.Tensor | None = None,
                  *, project_grad: bool = False):
    """``[B, d]``: ``sum_j values[:, j] * W_dec[indices[:, j]] (+ b_dec)``. With ``project_grad``
    the gradient of each ``W_dec`` row loses its component along that row."""
    check_decode(indices, values, W_dec, b_dec)
    W = rows_contiguous(W_dec)  # differentiable copy when rows are strided: the gather needs them contiguous
    return decode_rows(indices, values, ProjectRowGrad.apply(W) if project_grad else W, b_dec)


def decode_rows(indices, values, W, b=None):
    """The decode itself, unchecked (the Triton path's fallback after a failed self-check)."""
    out = F.embedding_bag(indices.long(), W, per_sample_weights=values, mode="sum")
    return out if b is None else out + b


def decode_backward(indices, values, grad, W_dec, project: bool, need_dvalues: bool, need_dW: bool):
    """(dvalues, dW_dec) of :func:`sparse_decode` for the output gradient ``grad``, None where
    not needed (the Triton path's backward after a failed self-check)."""
    wanted = [t for t, need in ((values, need_dvalues), (W_dec, need_dW)) if need]
    with torch.enable_grad():
        v = values.detach().requires_grad_(need_dvalues)
        W = W_dec.detach().requires_grad_(need_dW)
        y = decode_rows(indices, v, ProjectRowGrad.apply(W) if project else W)
        grads = iter(torch.autograd.grad(y, [t for t, need in ((v, need_dvalues), (W, need_dW)) if need], grad)
                     if wanted else ())
    return (next(grads) if need_dvalues else None), (next(grads) if need_dW else None)


def project_rows(g: torch.Tensor, W: torch.Tensor) -> torch.Tensor:
    """``g[l] - <g[l], W[l]> / |W[l]|^2 * W[l]`` for every row l (rows of zeros: ``g`` unchanged)."""
    dot = torch.linalg.vecdot(g, W)
    sq = torch.linalg.vecdot(W, W)
    return g - torch.where(sq > 0, dot / torch.where(sq > 0, sq, 1), 0).unsqueeze(1) * W


class ProjectRowGrad(torch.autograd.Function):
    """Identity on ``W [n, d]`` whose backward removes each row's gradient component along the
    row: the paper's projection for unit-norm decoder rows (appendix A.1), on the gradient
    that flows through this use of ``W`` only."""

    @staticmethod
    def forward(ctx, W):
        ctx.save_for_backward(W)
        return W.view_as(W)

    @staticmethod
    def backward(ctx, g):
        (W,) = ctx.saved_tensors
        return project_rows(g, W)


class TopKEncodeAux(torch.autograd.Function):
    """Main top-k and the top-k_aux among dead latents from one pre-activation matrix."""

    @staticmethod
    def forward(ctx, x, W_enc, b_enc, k, dead, k_aux):
        (indices, values), (aux_indices, aux_values) = gemm_topk(x, W_enc, b_enc, k, dead, k_aux)
        ctx.save_for_backward(x, W_enc, torch.cat([indices, aux_indices], 1), torch.cat([values, aux_values], 1))
        ctx.mark_non_differentiable(indices, aux_indices)
        return indices, values, aux_indices, aux_values

    @staticmethod
    def backward(ctx, _gi, grad_values, _gai, grad_aux):
        x, W_enc, indices, values = ctx.saved_tensors
        grads = TopKEncode.backward(SavedCtx(ctx.needs_input_grad[:3], (x, W_enc, indices, values)),
                                    None, torch.cat([grad_values, grad_aux], 1))
        return (*grads[:3], None, None, None)


class SavedCtx:
    """What a TopKEncode backward reads from its ctx, so the AuxK Functions (here and in
    encode_kernels) can run it once over the main and the aux entries together."""

    def __init__(self, needs, saved):
        self.needs_input_grad = tuple(needs) + (False,)
        self.saved_tensors = saved


def topk_encode_aux(x, W_enc, b_enc, k: int, dead: torch.Tensor, k_aux: int):
    check_encode(x, W_enc, b_enc, k)
    return TopKEncodeAux.apply(x, W_enc, b_enc, k, dead, k_aux)


def dense_topk_sae_reference(x, W_enc, b_enc, W_dec, b_dec, k, indices=None):
    """Dense formulation (tests and benchmark baseline): [B, n] codes, dense decode. With
    ``indices`` ([B, k]) those latents are the code instead of the top-k (to score a selection
    that is a valid top-k up to ties)."""
    pre = torch.relu(x @ W_enc.t() + b_enc)
    if indices is None:
        top, idx = pre.topk(k, dim=1)
    else:
        idx = indices
        top = pre.gather(1, idx)
    h = torch.zeros_like(pre).scatter(1, idx, top)
    return h @ W_dec + b_dec, idx, top
