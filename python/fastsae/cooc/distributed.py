"""Co-occurrence across processes with ``torch.distributed`` (run under ``torchrun``).

Each rank accumulates the codes it holds (its own shard) with the native core; the totals are
then combined: dense C/D/freq with an all-reduce (gloo on CPU, NCCL on GPU), sparse results by
all-gathering every rank's observed pairs. Every rank returns the same combined result.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from .._arrays import check_n_latents
from .accumulate import CooccurrenceAccumulator, cooccurrence
from .result import Cooccurrence

#: Elements per all-reduce call: bounds the device copy NCCL needs (256 MB of float64).
_REDUCE_BLOCK = 1 << 25


def _init_if_launched():
    import torch.distributed as dist

    if not dist.is_available():
        return None
    if dist.is_initialized():
        return dist
    if "RANK" in os.environ and "WORLD_SIZE" in os.environ:
        import torch

        backend = "nccl" if torch.cuda.is_available() and dist.is_nccl_available() else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
        dist.init_process_group(backend=backend)
        return dist
    return None


def _reduce_device(dist, group):
    import torch

    if dist.get_backend(group) == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def _all_reduce_inplace(arr: np.ndarray, dist, group, device) -> None:
    """Sum ``arr`` over ranks, in place, in blocks (numpy memory is shared with torch on CPU)."""
    import torch

    flat = arr.reshape(-1)
    for start in range(0, flat.size, _REDUCE_BLOCK):
        view = torch.from_numpy(flat[start : start + _REDUCE_BLOCK])
        if device.type == "cpu":
            dist.all_reduce(view, op=dist.ReduceOp.SUM, group=group)
        else:
            t = view.to(device)
            dist.all_reduce(t, op=dist.ReduceOp.SUM, group=group)
            view.copy_(t.cpu())


def _all_gather_1d(arr: np.ndarray, dist, group, device) -> list[np.ndarray]:
    """Gather a variable-length 1-D array from every rank."""
    import torch

    world = dist.get_world_size(group)
    n = torch.tensor([arr.shape[0]], dtype=torch.int64, device=device)
    sizes = [torch.zeros_like(n) for _ in range(world)]
    dist.all_gather(sizes, n, group=group)
    sizes = [int(s.item()) for s in sizes]
    longest = max(sizes) if sizes else 0
    padded = torch.zeros(longest, dtype=torch.from_numpy(arr[:0]).dtype, device=device)
    padded[: arr.shape[0]] = torch.from_numpy(arr).to(device)
    out = [torch.zeros_like(padded) for _ in range(world)]
    dist.all_gather(out, padded, group=group)
    return [o[:s].cpu().numpy() for o, s in zip(out, sizes)]


def distributed_cooccurrence(
    indices: Any,
    values: Any,
    n_latents: int,
    *,
    dense: bool = True,
    chunk_size: int | None = None,
    shard_rows: bool = False,
    group: Any = None,
) -> Cooccurrence:
    """C and D over the codes of every rank of a ``torch.distributed`` job.

    By default ``indices``/``values`` are this rank's own shard (e.g. the rows it encoded).
    With ``shard_rows=True`` every rank passes the same full arrays (e.g. one ``np.memmap``)
    and rank r accumulates only the r-th contiguous block of rows. Initialises the process
    group from ``torchrun``'s environment when needed (NCCL when CUDA is available, gloo
    otherwise); without a distributed launch it is plain :func:`cooccurrence`.
    """
    check_n_latents(n_latents)
    for arr, name in ((indices, "indices"), (values, "values")):
        if not hasattr(arr, "shape") or len(arr.shape) != 2:
            raise ValueError(f"{name} must be a 2-dimensional [N, k] array, got {type(arr).__name__} "
                             f"of shape {getattr(arr, 'shape', None)}")
    dist = _init_if_launched()
    if dist is None or dist.get_world_size(group) == 1:
        return cooccurrence(indices, values, n_latents, chunk_size=chunk_size, dense=dense)
    rank, world = dist.get_rank(group), dist.get_world_size(group)
    device = _reduce_device(dist, group)
    if shard_rows:
        n = int(indices.shape[0])
        lo, hi = rank * n // world, (rank + 1) * n // world
        indices, values = indices[lo:hi], values[lo:hi]

    # Every rank must agree on n_latents and the mode, or the reduction would be meaningless.
    import torch

    meta = torch.tensor([int(n_latents), int(bool(dense))], dtype=torch.int64, device=device)
    metas = [torch.zeros_like(meta) for _ in range(world)]
    dist.all_gather(metas, meta, group=group)
    if any(not torch.equal(m, meta) for m in metas):
        raise ValueError(f"ranks disagree on (n_latents, dense): {[m.tolist() for m in metas]}")

    local = cooccurrence(indices, values, n_latents, chunk_size=chunk_size, dense=dense, progress=False)
    n_rows = np.array([local.n_rows], dtype=np.int64)
    freq = np.ascontiguousarray(local.freq, dtype=np.int64).copy()
    _all_reduce_inplace(freq, dist, group, device)
    _all_reduce_inplace(n_rows, dist, group, device)
    if dense:
        counts, act_sim = local.counts, local.act_sim  # private to this call: reduce in place
        _all_reduce_inplace(counts, dist, group, device)
        _all_reduce_inplace(act_sim, dist, group, device)
        return Cooccurrence(counts=counts, act_sim=act_sim, freq=freq, n_rows=int(n_rows[0]))

    import scipy.sparse as sp

    upper = sp.triu(local.counts, format="coo")
    sims = np.asarray(local.act_sim.tocsr()[upper.row, upper.col]).ravel().astype(np.float64)
    parts = {
        name: _all_gather_1d(np.ascontiguousarray(a), dist, group, device)
        for name, a in (
            ("rows", upper.row.astype(np.int64)),
            ("cols", upper.col.astype(np.int64)),
            ("counts", upper.data.astype(np.int64)),
            ("sims", sims),
        )
    }
    acc = CooccurrenceAccumulator(n_latents, dense=False)
    zero = np.zeros(n_latents, dtype=np.int64)
    for r in range(world):
        acc._acc.add_sparse_totals(parts["rows"][r], parts["cols"][r], parts["counts"][r], parts["sims"][r], zero, 0)
    out = acc.result()
    return Cooccurrence(counts=out.counts, act_sim=out.act_sim, freq=freq, n_rows=int(n_rows[0]))
