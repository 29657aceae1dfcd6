"""Co-occurrence C and activation similarity D of top-k SAE codes (paper section 4.2).

For codes h (one row per document, top-k latents active):

* ``C_ij`` = number of rows where latents i and j are both active (``C_ii`` = activation count);
* ``D_ij`` = sum over those rows of ``h_i * h_j``.

A latent is active in a row when it appears in that row's indices with a value > 0; a value
of exactly 0 is padding (any valid index). Counts are exact int64 at any number of rows; D is
float64, summed in row order inside a chunk whatever the thread count.

The heavy lifting is in the native core (``csrc/cooc.cpp``); this module converts inputs,
streams over chunks (``np.memmap`` inputs with tens of millions of rows keep memory flat) and
hands back a :class:`~fastsae.cooc.result.Cooccurrence` (normalisations: :mod:`.normalize`).
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np
import scipy.sparse as sp

from .. import _native
from .._arrays import (
    as_indices,
    as_values,
    available_memory,
    check_codes_shape,
    check_n_latents,
    release_pages,
    sparse_csr,
)
from .._checks import check_int
from ._check import check_contents
from .result import Cooccurrence

#: Code entries (rows * k) per native call by default. Each chunk costs one pass over the
#: output rows it touches, and chunks larger than the CPU cache slow the per-pair walk; 2**21
#: measured best at n=9216, k=64 (N=1M: 3.3 ns/pair-update/core vs 4.4 at 2**22 and 3.6 at
#: 2**20, 2-core EPYC VM). The native core needs 16 bytes of working memory per entry.
DEFAULT_CHUNK_ENTRIES = 1 << 21


class CooccurrenceAccumulator:
    """Streaming accumulator of C and D over chunks of top-k codes.

    ``update(indices, values)`` adds one ``[B, k]`` chunk (int32/int64 indices, float32/float64
    values; numpy arrays or torch tensors). Each chunk is validated whole before anything is
    added, so a bad chunk raises ``ValueError`` and leaves the totals unchanged.
    ``merge(other)`` adds another accumulator's (or a saved :class:`Cooccurrence`'s) totals, for
    shards computed elsewhere; accumulators pickle, so shards can come from other processes.
    ``result()`` returns a :class:`Cooccurrence`. In dense mode its arrays share memory with
    the accumulator (no copy of the n x n outputs); a later ``update`` copies first, so a
    returned result never changes.
    """

    def __init__(self, n_latents: int, *, dense: bool = True):
        n = check_n_latents(n_latents)
        # The native accumulator zeroes what it allocates, so an allocation the machine cannot
        # back would be killed by the OOM killer rather than fail: check before.
        avail = _available_memory()
        if dense:
            need = 16 * n * n + 8 * n
            if avail is not None and need > avail:
                raise MemoryError(
                    f"dense co-occurrence for n_latents={n} needs {need / 2**30:.1f} GiB but about "
                    f"{avail / 2**30:.1f} GiB is available; use dense=False for observed pairs only"
                )
        else:
            need = 88 * n  # per latent: its count (8 bytes) and an empty row of pairs (3 vectors + flag)
            if avail is not None and need > avail:
                raise MemoryError(f"sparse co-occurrence for n_latents={n} needs {need / 2**30:.1f} GiB for its "
                                  f"per-latent tables before any pair, but about {avail / 2**30:.1f} GiB is available")
        self._acc = _native.CoocAccumulator(n, bool(dense))

    @property
    def n_latents(self) -> int:
        return self._acc.n_latents

    @property
    def dense(self) -> bool:
        return self._acc.dense

    @property
    def n_rows(self) -> int:
        return self._acc.n_rows

    def update(self, indices: Any, values: Any) -> "CooccurrenceAccumulator":
        idx, val = as_indices(indices), as_values(values)
        check_codes_shape(idx, val)
        self._acc.update(idx, val)
        return self

    def merge(self, other: "CooccurrenceAccumulator | Cooccurrence") -> "CooccurrenceAccumulator":
        if isinstance(other, CooccurrenceAccumulator):
            if other.n_latents != self.n_latents:
                raise ValueError(f"cannot merge n_latents={other.n_latents} into n_latents={self.n_latents}")
            if other.dense == self.dense:
                self._acc.merge(other._acc)
                return self
            other = other.result()
        if not isinstance(other, Cooccurrence):
            raise TypeError(f"merge takes a CooccurrenceAccumulator or Cooccurrence, got {type(other).__name__}")
        if other.n_latents != self.n_latents:
            raise ValueError(f"cannot merge n_latents={other.n_latents} into n_latents={self.n_latents}")
        # A result from outside (a file, another process, a user) is checked whole before any
        # of it is added: a damaged one would otherwise be summed into the totals for good.
        check_contents(other.counts, other.act_sim, other.freq, other.n_rows, "cannot merge: ")
        freq = np.ascontiguousarray(other.freq, dtype=np.int64)
        if other.dense:
            self._acc.add_dense_totals(
                np.ascontiguousarray(other.counts, dtype=np.int64),
                np.ascontiguousarray(other.act_sim, dtype=np.float64),
                freq,
                int(other.n_rows),
            )
        else:
            c = sparse_csr(other.counts, "counts")
            s = sparse_csr(other.act_sim, "act_sim")
            upper = sp.triu(c, format="coo")
            sims = np.asarray(s[upper.row, upper.col]).ravel().astype(np.float64)
            self._acc.add_sparse_totals(
                upper.row.astype(np.int64), upper.col.astype(np.int64), upper.data.astype(np.int64), sims, freq,
                int(other.n_rows),
            )
        return self

    def result(self) -> Cooccurrence:
        freq = self._acc.freq()
        if self.dense:
            counts, act_sim = self._acc.dense_result()
        else:
            indptr, indices, cdata, sdata = self._acc.sparse_result()
            n = self.n_latents
            counts = sp.csr_matrix((cdata, indices, indptr), shape=(n, n))
            act_sim = sp.csr_matrix((sdata, indices.copy(), indptr.copy()), shape=(n, n))
        return Cooccurrence(counts=counts, act_sim=act_sim, freq=freq, n_rows=self.n_rows)

    # Pickling (shards from other processes): the state is the result's arrays.
    def __getstate__(self) -> dict:
        return {"n_latents": self.n_latents, "dense": self.dense, "result": self.result()}

    def __setstate__(self, state: dict) -> None:
        self._acc = _native.CoocAccumulator(state["n_latents"], state["dense"])
        self.merge(state["result"])

    def __repr__(self) -> str:
        mode = "dense" if self.dense else "sparse"
        return f"CooccurrenceAccumulator(n_latents={self.n_latents}, {mode}, n_rows={self.n_rows})"


def _available_memory() -> int | None:
    return available_memory()


def default_chunk_size(k: int) -> int:
    """Rows per chunk for codes with ``k`` entries per row."""
    return max(1, DEFAULT_CHUNK_ENTRIES // max(1, k))


def cooccurrence(
    indices: Any,
    values: Any,
    n_latents: int,
    *,
    chunk_size: int | None = None,
    dense: bool = True,
    progress: bool | None = None,
) -> Cooccurrence:
    """C and D of ``[N, k]`` top-k codes in one call, streaming over row chunks.

    ``indices``/``values`` may be ``np.memmap`` (e.g. ``np.load(path, mmap_mode="r")``) with
    tens of millions of rows: each chunk's pages are released after use, so memory does not
    grow with N. ``chunk_size`` defaults to 2**21 code entries per chunk. ``progress``
    shows a tqdm bar (default: when N >= 1M rows).
    """
    n = check_n_latents(n_latents)
    idx_all = indices if hasattr(indices, "shape") else as_indices(indices)
    val_all = values if hasattr(values, "shape") else as_values(values)
    if len(idx_all.shape) != 2 or tuple(idx_all.shape) != tuple(val_all.shape):
        raise ValueError(
            f"indices and values must have the same 2-dimensional [N, k] shape, got "
            f"{tuple(idx_all.shape)} and {tuple(val_all.shape)}"
        )
    n_rows, k = int(idx_all.shape[0]), int(idx_all.shape[1])
    if chunk_size is None:
        chunk_size = default_chunk_size(k)
    chunk_size = check_int(chunk_size, "chunk_size", min=1)
    acc = CooccurrenceAccumulator(n, dense=dense)
    if progress is None:
        progress = n_rows >= 1_000_000
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=n_rows, unit="row", desc="co-occurrence", leave=False)
    try:
        for start in range(0, n_rows, chunk_size):
            stop = min(n_rows, start + chunk_size)
            ci, cv = idx_all[start:stop], val_all[start:stop]
            try:
                acc.update(ci, cv)
            except ValueError as e:
                # The native message numbers rows within the chunk: report the input's row.
                msg = re.sub(r"row (\d+)", lambda m: f"row {start + int(m.group(1))}", str(e), count=1)
                raise ValueError(msg) from None
            release_pages(ci)
            release_pages(cv)
            if bar is not None:
                bar.update(stop - start)
        if n_rows == 0:
            acc.update(np.zeros((0, k), np.int64), np.zeros((0, k), np.float32))
    finally:
        if bar is not None:
            bar.close()
    return acc.result()
