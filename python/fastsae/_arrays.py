"""Conversion of user inputs (numpy arrays, memmaps, torch tensors) for the native core.

The native core accepts only C-contiguous CPU arrays of a few dtypes and raises on anything
else; this module turns what users reasonably pass into that, and rejects the rest with a
message naming the argument.
"""

from __future__ import annotations

import mmap
from typing import Any

import numpy as np

_INDEX_DTYPES = (np.dtype(np.int32), np.dtype(np.int64))
_VALUE_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def is_torch_tensor(x: Any) -> bool:
    return type(x).__module__.split(".", 1)[0] == "torch" and hasattr(x, "detach")


def to_numpy(x: Any, name: str) -> np.ndarray:
    """numpy view of ``x`` (a torch tensor is detached and moved to the CPU)."""
    if is_torch_tensor(x):
        import torch

        t = x.detach()
        if t.dtype in (torch.bfloat16, torch.float16):
            t = t.float()  # exact: every bf16/fp16 value is a float32 value
        return t.cpu().numpy()
    if isinstance(x, np.ndarray):
        return x
    if hasattr(x, "__array__") or isinstance(x, (list, tuple)):
        return np.asarray(x)
    raise TypeError(f"{name} must be a numpy array or torch tensor, got {type(x).__name__}")


def as_indices(x: Any, name: str = "indices") -> np.ndarray:
    a = to_numpy(x, name)
    if a.dtype in _INDEX_DTYPES:
        return np.ascontiguousarray(a)
    if a.dtype.kind in "iu":
        if a.dtype.kind == "u" and a.size and a.max() > np.iinfo(np.int64).max:
            raise ValueError(f"{name} holds values beyond int64")
        return np.ascontiguousarray(a, dtype=np.int64)
    raise TypeError(f"{name} must hold integers (int32 or int64), got dtype {a.dtype}")


def as_values(x: Any, name: str = "values") -> np.ndarray:
    a = to_numpy(x, name)
    if a.dtype in _VALUE_DTYPES:
        return np.ascontiguousarray(a)
    if a.dtype == np.float16:
        return np.ascontiguousarray(a, dtype=np.float32)
    raise TypeError(f"{name} must hold floats (float32 or float64), got dtype {a.dtype}")


def check_codes_shape(indices: np.ndarray, values: np.ndarray) -> None:
    if indices.ndim != 2 or values.ndim != 2:
        raise ValueError(
            f"indices and values must be 2-dimensional [B, k], got shapes {indices.shape} and {values.shape}"
        )
    if indices.shape != values.shape:
        raise ValueError(f"indices and values must have the same [B, k] shape, got {indices.shape} and {values.shape}")


def check_n_latents(n_latents: Any) -> int:
    if isinstance(n_latents, bool) or not isinstance(n_latents, (int, np.integer)):
        raise TypeError(f"n_latents must be an int, got {type(n_latents).__name__}")
    if n_latents <= 0:
        raise ValueError(f"n_latents must be positive, got {n_latents}")
    if n_latents >= 2**31:
        raise ValueError(f"n_latents must be < 2**31, got {n_latents}")
    return int(n_latents)


def release_pages(chunk: np.ndarray) -> None:
    """Drop the resident pages of a chunk of a read-only/shared ``np.memmap``.

    Streaming over a file-backed memmap would otherwise leave every page it touched resident
    in this process, so memory would grow with the number of rows. The data stays in the
    file (and the OS page cache); a later access faults it back in.
    """
    m = getattr(chunk, "_mmap", None)
    if m is None or getattr(chunk, "mode", "r") not in ("r", "r+", "readonly", "readwrite"):
        return
    try:
        base = np.frombuffer(m, dtype=np.uint8).ctypes.data
        start = chunk.ctypes.data - base
        end = start + chunk.nbytes
        page = mmap.PAGESIZE
        lo = (start // page) * page
        hi = min(len(m), -(-end // page) * page)
        if hi > lo:
            m.madvise(mmap.MADV_DONTNEED, lo, hi - lo)
    except (AttributeError, ValueError, OSError):  # pragma: no cover - best effort only
        pass
