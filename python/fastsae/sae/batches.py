"""Where the trainer's batches come from: :class:`BatchSource`.

The data order is a function of ``(seed, epoch)``: each epoch visits the training rows in a
permutation drawn from ``np.random.default_rng([seed, epoch])``, once per epoch (not per step:
at N = 1M a permutation costs about as much as a GPU step), and the last partial batch is
dropped. Each rank takes its contiguous share of every global batch. The rows are either
resident on the device (gathered there, no host work per step) or gathered on the host, then
optionally prefetched on a thread into pinned memory while the current step runs.
"""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np
import torch

from .config import TrainConfig
from .data import ArraySource


def _resident_data(source: ArraySource, cfg: TrainConfig, dtype: torch.dtype, device: torch.device):
    """The whole data array on ``device`` (in ``dtype``) when ``cfg.data_on_device`` asks for it
    or, left at None, when it fits a quarter of the GPU's free memory; else None."""
    nbytes = source.n_rows * source.d * torch.empty((), dtype=dtype).element_size()
    want = cfg.data_on_device
    if want is None:
        want = device.type == "cuda" and nbytes <= torch.cuda.mem_get_info(device)[0] // 4
    if not want:
        return None
    out = torch.empty(source.n_rows, source.d, dtype=dtype, device=device)
    for a, block in source.chunks():  # bounded host memory, whatever N
        out[a : a + block.shape[0]].copy_(torch.from_numpy(block).to(dtype))
    return out


class BatchSource:
    """This rank's batch of every step ``s < total_steps``, on ``device`` in ``dtype``.

    Call :meth:`batch` with consecutive steps (from any start, e.g. a resumed step): with
    prefetching, asking for step ``s`` also starts loading ``s + 1``. :meth:`close` (or the
    ``with`` block) stops the loader thread."""

    def __init__(self, source: ArraySource, train_rows: np.ndarray, cfg: TrainConfig, *, dtype: torch.dtype,
                 device: torch.device, rank: int, world: int, total_steps: int):
        self.source, self.train_rows, self.cfg = source, train_rows, cfg
        self.dtype, self.device, self.total_steps = dtype, device, total_steps
        self.steps_per_epoch = train_rows.size // cfg.batch_size
        local = cfg.batch_size // world
        self._mine = slice(rank * local, (rank + 1) * local)
        self._epoch_order: dict[int, np.ndarray] = {}
        self._pin = device.type == "cuda"
        self._resident = _resident_data(source, cfg, dtype, device)
        prefetch = self._resident is None and (cfg.prefetch if cfg.prefetch is not None else device.type == "cuda")
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="fastsae-batches") if prefetch else None
        self._pending: Future | None = None

    def _load(self, s: int) -> torch.Tensor:
        epoch, pos = divmod(s, self.steps_per_epoch)
        if epoch not in self._epoch_order:
            self._epoch_order.clear()
            self._epoch_order[epoch] = np.random.default_rng([self.cfg.seed, epoch]).permutation(self.train_rows.size)
        bs = self.cfg.batch_size
        batch_rows = self.train_rows[self._epoch_order[epoch][pos * bs : (pos + 1) * bs]]
        mine = batch_rows[self._mine]
        if self._resident is not None:
            return self._resident.index_select(0, torch.from_numpy(mine).to(self.device, non_blocking=True))
        x = self.source.rows(mine, dtype=self.dtype)
        return x.pin_memory() if self._pin else x

    def batch(self, step: int) -> torch.Tensor:
        """The batch of ``step`` (the one prefetched, when the previous call started it)."""
        x = (self._pending.result() if self._pending is not None else self._load(step)).to(self.device, non_blocking=True)
        # numpy's gather and the pinned copy release the GIL: the next batch loads meanwhile
        self._pending = (self._pool.submit(self._load, step + 1)
                         if self._pool is not None and step + 1 < self.total_steps else None)
        return x

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)

    def __enter__(self) -> "BatchSource":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
