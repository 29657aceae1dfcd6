"""Encoding a whole data set with a trained SAE: :func:`encode_dataset`."""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import torch

from ..ops import SparseCode
from .data import ArraySource
from .model import TopKSAE


@torch.no_grad()
def encode_dataset(sae: TopKSAE, data: Any, *, batch_size: int = 4096, out_dir: str | None = None,
                   progress: bool = False) -> SparseCode:
    """Top-k codes of every row of ``data`` (raw inputs; the model's standardisation applies).

    With ``out_dir`` the codes go to ``out_dir/indices.npy`` (int64) and ``values.npy``
    (float32) as memmaps, written to temporary names and renamed when complete; the returned
    tensors share that memory.
    """
    source = ArraySource(data)
    if source.d != sae.d_in:
        raise ValueError(f"data has d={source.d}, the SAE expects d={sae.d_in}")
    n, k = source.n_rows, sae.k
    device = sae.W_enc.device
    if out_dir:
        os.makedirs(out_dir, exist_ok=True)
        ti, tv = os.path.join(out_dir, ".indices.npy.tmp"), os.path.join(out_dir, ".values.npy.tmp")
        idx = np.lib.format.open_memmap(ti, mode="w+", dtype=np.int64, shape=(n, k))
        val = np.lib.format.open_memmap(tv, mode="w+", dtype=np.float32, shape=(n, k))
    else:
        idx, val = np.empty((n, k), np.int64), np.empty((n, k), np.float32)
    rows = np.arange(n)
    it = range(0, n, batch_size)
    if progress:
        from tqdm.auto import tqdm

        it = tqdm(it, desc="encode", unit="batch")
    for a in it:
        x = source.rows(rows[a : a + batch_size], dtype=sae.W_enc.dtype).to(device)
        code = sae.encode(x)
        idx[a : a + batch_size] = code.indices.cpu().numpy()
        val[a : a + batch_size] = code.values.float().cpu().numpy()
    if out_dir:
        idx.flush(), val.flush()
        del idx, val
        os.replace(ti, os.path.join(out_dir, "indices.npy"))
        os.replace(tv, os.path.join(out_dir, "values.npy"))
        idx = np.load(os.path.join(out_dir, "indices.npy"), mmap_mode="r+")
        val = np.load(os.path.join(out_dir, "values.npy"), mmap_mode="r+")
    return SparseCode(torch.from_numpy(idx), torch.from_numpy(val))
