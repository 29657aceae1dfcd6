"""Training data as rows of a 2-D float array: numpy arrays, ``.npy`` files opened as memmaps
(never loaded whole), or torch tensors. Streaming statistics and validation live here."""

from __future__ import annotations

import hashlib
import os
from typing import Any

import numpy as np
import torch

#: Rows per pass when scanning data (validation, statistics): bounded memory for any N.
SCAN_ROWS = 65536


class ArraySource:
    """Random access to the rows of a ``[N, d]`` float array without loading it whole."""

    def __init__(self, data: Any):
        if isinstance(data, (str, os.PathLike)):
            path = os.fspath(data)
            if not path.endswith(".npy"):
                raise ValueError(f"{path}: expected a .npy file")
            try:
                data = np.load(path, mmap_mode="r")
            except (OSError, ValueError) as e:
                raise ValueError(f"{path}: cannot read as .npy ({e})") from e
        if isinstance(data, torch.Tensor):
            data = data.detach()
            if data.dtype == torch.bfloat16:
                data = data.float()
            data = data.cpu().numpy()
        if not isinstance(data, np.ndarray):
            raise TypeError(f"data must be a numpy array, .npy path or torch tensor, got {type(data).__name__}")
        if data.ndim != 2:
            raise ValueError(f"data must be 2-dimensional [N, d], got shape {data.shape}")
        if data.shape[0] == 0 or data.shape[1] == 0:
            raise ValueError(f"data is empty (shape {data.shape})")
        if data.dtype.kind != "f":
            raise TypeError(f"data must hold floats, got dtype {data.dtype}")
        self.array = data
        self.n_rows, self.d = int(data.shape[0]), int(data.shape[1])

    def rows(self, index: np.ndarray, dtype=torch.float32) -> torch.Tensor:
        """Rows ``index`` (any order) as a float tensor; memmaps read only those rows."""
        order = np.argsort(index, kind="stable")
        block = np.asarray(self.array[index[order]], dtype=np.float64 if dtype == torch.float64 else np.float32)
        out = np.empty_like(block)
        out[order] = block
        return torch.from_numpy(out).to(dtype)

    def chunks(self):
        for a in range(0, self.n_rows, SCAN_ROWS):
            yield a, np.asarray(self.array[a : a + SCAN_ROWS], dtype=np.float64)

    def check_finite(self) -> None:
        """Raise ValueError naming the first row with a NaN or infinite value."""
        for a, block in self.chunks():
            bad = ~np.isfinite(block).all(axis=1)
            if bad.any():
                r = a + int(np.argmax(bad))
                raise ValueError(f"data row {r} contains NaN or infinite values")

    def mean_std(self) -> tuple[np.ndarray, np.ndarray]:
        """Per-dimension mean and standard deviation (float64, streamed; shifted sums for stability)."""
        shift = np.asarray(self.array[0], dtype=np.float64)
        s = np.zeros(self.d)
        s2 = np.zeros(self.d)
        for _, block in self.chunks():
            c = block - shift
            s += c.sum(axis=0)
            s2 += (c * c).sum(axis=0)
        mean_c = s / self.n_rows
        var = np.maximum(s2 / self.n_rows - mean_c**2, 0.0)
        return shift + mean_c, np.sqrt(var)

    def fingerprint(self, n_sampled: int = 33) -> dict:
        """What identifies these data cheaply, for resume to recognise them: ``n_rows``, ``d``,
        ``dtype`` and ``rows_sha256``, a SHA-256 of ``n_sampled`` rows at fixed positions (the
        first, the last and evenly spaced ones between, in their stored dtype and byte order
        normalised to little-endian). It reads those rows only (a memmap stays on disk), so it
        sees a change of shape, dtype or order, not an edit confined to rows it does not read."""
        rows = np.unique(np.linspace(0, self.n_rows - 1, max(2, n_sampled)).round().astype(np.int64))
        block = np.ascontiguousarray(self.array[rows])
        block = block.astype(block.dtype.newbyteorder("<"), copy=False)
        h = hashlib.sha256()
        h.update(rows.astype("<i8").tobytes())
        h.update(block.tobytes())
        return {"n_rows": self.n_rows, "d": self.d, "dtype": str(self.array.dtype.newbyteorder("=")),
                "rows_sha256": h.hexdigest()}
