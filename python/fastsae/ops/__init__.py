"""The two SAE operations, usable on their own by any top-k SAE (no trainer import needed).

* :func:`topk_encode` ``(x [B, d], W_enc [n, d], b_enc [n], k) -> SparseCode([B, k], [B, k])``:
  the top-k of ``ReLU(x @ W_enc.T + b_enc)``; differentiable in ``x``, ``W_enc`` and ``b_enc``,
  with gradients flowing only through the k active entries of each row.
* :func:`sparse_decode` ``(indices [B, k], values [B, k], W_dec [n, d], b_dec [d]) -> [B, d]``:
  ``sum_j values[:, j] * W_dec[indices[:, j]] + b_dec``; differentiable in ``values``,
  ``W_dec`` and ``b_dec``, touching only the k decoder rows of each example.

The implementation is chosen here, in one place (:func:`backend`): the fused Triton kernels
(:mod:`.encode_kernels`, :mod:`.decode_kernels`) for CUDA tensors, :mod:`fastsae.ops.reference`
(the torch path, also the tests' oracle) otherwise. ``FASTSAE_BACKEND=reference`` forces the
torch path, ``FASTSAE_BACKEND=triton`` the kernels. The fused encode keeps its running top-k in
registers, so it takes k <= 128 (k <= 64 with k_aux <= 128); wider selections select with a
dense GEMM + ``torch.topk`` and keep the Triton backward (see :mod:`.encode_kernels`, which also
times both forwards once per size on a GPU and keeps the faster; ``FASTSAE_ENCODE`` forces one).

**Any strides.** Every tensor argument may be any strided view: SAELens holds ``W_enc`` as
``[d, n]`` and passes ``W_enc.T``; a padded or sliced ``x``/``W_dec``/bias works the same way.
Gradients flow back through the caller's view, so they land in the caller's parameter in its
own shape and layout (``W.grad`` of a ``[d, n]`` parameter is ``[d, n]``). Both paths keep full
speed: what the row gathers need with unit stride is copied once per call (the torch path only
where a gather reads it: the encoder's ``dx`` and the decode; the Triton path for every kernel,
kept for the backward), and the torch path writes the encoder gradient of a transposed weight
directly in the parameter's layout. At d=1536, n=9216, k=64, B=1024, one CPU thread (2-core
EPYC VM), the encode backward with ``W_enc.T`` went from 1211 ms to 181 ms (contiguous weight:
76 ms) and a decode forward+backward with ``W_dec.T`` from 2434 ms to 314 ms (contiguous: 160 ms).

**The GPU path checks itself** (:mod:`._selfcheck`). The first call of each kernel
configuration (op, forward or backward, device, dtype, the launcher's plan) compares a few rows
of the same problem with a float64 torch reference (outputs; for the backward, the slice's
gradients; top-k selections by the reference value of the chosen set, so ties at bf16
resolution may go either way). A compile or launch error, or a mismatch, warns once
(:class:`KernelSelfCheckWarning`, naming the configuration and how to report it), the call
returns the torch path's result, and that configuration uses the torch path from then on.
``FASTSAE_SELFCHECK=0`` turns the check off, ``=1`` on; by default it is on for CUDA tensors
and off under the CPU interpreter (the tests compare the kernels with float64 directly).
:func:`selfcheck_status` lists the configurations checked and their result,
:func:`selfcheck_reset` forgets them.
"""

from __future__ import annotations

import os
from typing import NamedTuple

import torch

from .._checks import check_int
from . import reference
from ._selfcheck import KernelSelfCheckWarning
from ._selfcheck import reset as selfcheck_reset
from ._selfcheck import status as selfcheck_status


class SparseCode(NamedTuple):
    """Top-k codes of a batch."""

    indices: torch.Tensor
    """``[B, k]`` int64 latent ids, ordered by activation, largest first."""
    values: torch.Tensor
    """``[B, k]`` activations (>= 0; 0 where fewer than k latents are positive)."""


BACKENDS = ("auto", "reference", "triton")
TRITON_DTYPES = (torch.float32, torch.bfloat16, torch.float16)


def _triton_available() -> bool:
    try:
        import triton  # noqa: F401
    except ImportError:
        return False
    return True


def backend(device: torch.device | None = None, dtype: torch.dtype | None = None) -> str:
    """The implementation :func:`topk_encode`/:func:`sparse_decode` use for these tensors.

    ``auto`` (default): the Triton kernels for CUDA tensors of a supported dtype, the torch
    path otherwise. ``FASTSAE_BACKEND=reference`` or ``=triton`` forces one; Triton on CPU
    tensors runs under the interpreter only (``TRITON_INTERPRET=1``), as the tests do.
    """
    choice = os.environ.get("FASTSAE_BACKEND", "auto").lower()
    if choice not in BACKENDS:
        raise ValueError(f"FASTSAE_BACKEND must be one of {BACKENDS}, got {choice!r}")
    if choice == "reference":
        return "reference"
    on_gpu = device is not None and torch.device(device).type == "cuda"
    if choice == "auto":
        ok = on_gpu and (dtype is None or dtype in TRITON_DTYPES) and _triton_available()
        return "triton" if ok else "reference"
    if not _triton_available():
        raise RuntimeError("FASTSAE_BACKEND=triton but triton is not installed")
    if dtype is not None and dtype not in TRITON_DTYPES:
        raise TypeError(f"the Triton kernels take float32, bfloat16 or float16 tensors, got {dtype}")
    if not on_gpu and os.environ.get("TRITON_INTERPRET") != "1":
        raise RuntimeError("FASTSAE_BACKEND=triton on CPU tensors needs TRITON_INTERPRET=1 (set before import)")
    return "triton"


def topk_encode(x: torch.Tensor, W_enc: torch.Tensor, b_enc: torch.Tensor, k: int) -> SparseCode:
    """Top-k of ``ReLU(x @ W_enc.T + b_enc)`` as a :class:`SparseCode` (``x`` is ``[B, d]``)."""
    if backend(x.device, x.dtype) == "triton":
        reference.check_encode(x, W_enc, b_enc, k)
        from . import encode_kernels

        return SparseCode(*encode_kernels.topk_encode(x, W_enc, b_enc, k))
    return SparseCode(*reference.topk_encode(x, W_enc, b_enc, k))


def topk_encode_aux(x: torch.Tensor, W_enc: torch.Tensor, b_enc: torch.Tensor, k: int, dead: torch.Tensor,
                    k_aux: int) -> tuple[SparseCode, SparseCode]:
    """The top-k code and, in the same pass, the top-``k_aux`` among latents where ``dead``
    (``[n]`` bool) is set (for AuxK). Aux ids are global latent ids; rows have value 0 where
    fewer than ``k_aux`` dead latents are positive. Both codes are differentiable."""
    if dead.shape != (W_enc.shape[0],):
        raise ValueError(f"dead must be a [n] mask with n={W_enc.shape[0]}, got {tuple(dead.shape)}")
    check_int(k_aux, "k_aux", min=1, max=W_enc.shape[0])
    if backend(x.device, x.dtype) == "triton":
        reference.check_encode(x, W_enc, b_enc, k)
        from . import encode_kernels

        i, v, ai, av = encode_kernels.topk_encode_aux(x, W_enc, b_enc, k, dead, k_aux)
    else:
        i, v, ai, av = reference.topk_encode_aux(x, W_enc, b_enc, k, dead, k_aux)
    return SparseCode(i, v), SparseCode(ai, av)


def sparse_decode(
    indices: torch.Tensor, values: torch.Tensor, W_dec: torch.Tensor, b_dec: torch.Tensor | None = None, *,
    project_grad: bool = False,
) -> torch.Tensor:
    """``[B, d]`` reconstruction ``sum_j values[:, j] * W_dec[indices[:, j]] + b_dec``.

    ``project_grad=True``: the gradient this call sends to each ``W_dec`` row loses its
    component along the row, ``g - <g, w>/|w|^2 w`` (the recipe's projection for unit-norm
    decoder rows, appendix A.1). The Triton path does it in the kernel that writes the touched
    rows, so a trainer needs no dense pass over ``[n, d]`` for it."""
    if backend(values.device, values.dtype) == "triton":
        reference.check_decode(indices, values, W_dec, b_dec)
        from . import decode_kernels

        return decode_kernels.sparse_decode(indices, values, W_dec, b_dec, project_grad=project_grad)
    return reference.sparse_decode(indices, values, W_dec, b_dec, project_grad=project_grad)


__all__ = ["KernelSelfCheckWarning", "SparseCode", "backend", "selfcheck_reset", "selfcheck_status", "sparse_decode",
           "topk_encode", "topk_encode_aux"]
