"""The two SAE operations, usable on their own by any top-k SAE (no trainer import needed).

* :func:`topk_encode` ``(x [B, d], W_enc [n, d], b_enc [n], k) -> SparseCode([B, k], [B, k])``:
  the top-k of ``ReLU(x @ W_enc.T + b_enc)``; differentiable in ``x``, ``W_enc`` and ``b_enc``,
  with gradients flowing only through the k active entries of each row.
* :func:`sparse_decode` ``(indices [B, k], values [B, k], W_dec [n, d], b_dec [d]) -> [B, d]``:
  ``sum_j values[:, j] * W_dec[indices[:, j]] + b_dec``; differentiable in ``values``,
  ``W_dec`` and ``b_dec``, touching only the k decoder rows of each example.

The implementation is chosen here, in one place: :mod:`fastsae.ops.reference` (the torch path,
used on the CPU) today; the fused Triton kernels plug in for CUDA tensors when they exist.
``FASTSAE_BACKEND=reference`` forces the torch path, ``FASTSAE_BACKEND=triton`` the kernels.
"""

from __future__ import annotations

import os
from typing import NamedTuple

import torch

from . import reference


class SparseCode(NamedTuple):
    """Top-k codes of a batch."""

    indices: torch.Tensor
    """``[B, k]`` int64 latent ids, ordered by activation, largest first."""
    values: torch.Tensor
    """``[B, k]`` activations (>= 0; 0 where fewer than k latents are positive)."""


BACKENDS = ("auto", "reference", "triton")


def backend(device: torch.device | None = None) -> str:
    """The implementation :func:`topk_encode`/:func:`sparse_decode` use for tensors on ``device``."""
    choice = os.environ.get("FASTSAE_BACKEND", "auto").lower()
    if choice not in BACKENDS:
        raise ValueError(f"FASTSAE_BACKEND must be one of {BACKENDS}, got {choice!r}")
    if choice == "triton":
        raise NotImplementedError(
            "FASTSAE_BACKEND=triton: the fused Triton kernels are not part of this release yet; "
            "unset it (or use 'reference') to run the torch path"
        )
    return "reference"


def topk_encode(x: torch.Tensor, W_enc: torch.Tensor, b_enc: torch.Tensor, k: int) -> SparseCode:
    """Top-k of ``ReLU(x @ W_enc.T + b_enc)`` as a :class:`SparseCode` (``x`` is ``[B, d]``)."""
    backend(x.device)
    indices, values = reference.topk_encode(x, W_enc, b_enc, k)
    return SparseCode(indices, values)


def sparse_decode(
    indices: torch.Tensor, values: torch.Tensor, W_dec: torch.Tensor, b_dec: torch.Tensor | None = None
) -> torch.Tensor:
    """``[B, d]`` reconstruction ``sum_j values[:, j] * W_dec[indices[:, j]] + b_dec``."""
    backend(values.device)
    return reference.sparse_decode(indices, values, W_dec, b_dec)


__all__ = ["SparseCode", "backend", "sparse_decode", "topk_encode"]
