"""The numbers behind the report, each computed blocked so that memory stays bounded at 100k+
documents and 100k+ latents, and each testable against a brute-force reference.

* :func:`top_documents` -- for every latent, its ``top`` highest-activating documents.
* :func:`activation_histograms` -- per-latent histograms of the non-zero activations (and the
  activation counts).
* :func:`decoder_neighbours` -- nearest decoder directions within one SAE (cosine, self excluded).
* :func:`top_cooccurring` -- the latents that fire most often together with each latent.
* :func:`family_tree` -- the nested tree of a family from its depth-first ``children``/``depth``.
* :func:`member_matrix` -- a family's block of the frequency-normalised co-occurrence C.

Codes are ``[N, k]`` ``indices``/``values`` (numpy arrays, memmaps or torch tensors); an entry
with value <= 0 is an inactive slot (padding) and is ignored, whatever its index.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import scipy.sparse as sp

from ..analysis._common import _unit_rows_or_zero

#: Code entries (rows * k) handled per block by the passes over the codes: a few tens of MB of
#: temporaries whatever the corpus size.
CHUNK_ENTRIES = 1 << 21


def _np(a: Any) -> np.ndarray:
    """A numpy view of a numpy array / memmap / CPU torch tensor (no copy when possible)."""
    if hasattr(a, "detach"):  # torch tensor
        return a.detach().cpu().numpy()
    return np.asarray(a)


def _check_codes(indices: Any, values: Any, n_latents: int) -> tuple[np.ndarray, np.ndarray]:
    idx, val = _np(indices), _np(values)
    if idx.ndim != 2 or idx.shape != val.shape:
        raise ValueError(f"codes must be two [N, k] arrays of the same shape, got {idx.shape} and {val.shape}")
    if n_latents < 1:
        raise ValueError(f"n_latents must be >= 1, got {n_latents}")
    return idx, val


def _chunks(idx: np.ndarray, val: np.ndarray, n_latents: int, chunk_rows: int | None):
    """(row offset, latent ids, row ids, values) of the active entries, block by block."""
    n_rows, k = idx.shape
    step = chunk_rows or max(1, CHUNK_ENTRIES // max(k, 1))
    for a in range(0, n_rows, step):
        ci = np.asarray(idx[a : a + step])
        cv = np.asarray(val[a : a + step])
        mask = cv > 0
        f = ci[mask].astype(np.int64, copy=False)
        if f.size and (f.min() < 0 or f.max() >= n_latents):
            raise ValueError(f"codes rows {a}..{a + len(ci) - 1}: latent id out of range [0, {n_latents})")
        rows = np.nonzero(mask)[0].astype(np.int64) + a
        yield f, rows, cv[mask].astype(np.float64)


def top_documents(indices: Any, values: Any, n_latents: int, top: int = 10, *,
                  chunk_rows: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The ``top`` highest activations of every latent and the documents (rows) they occur in.

    Returns ``(docs [n, top] int64, acts [n, top] float64)``, best first; ties go to the lower
    row; a latent active in fewer than ``top`` rows is padded with row -1 and activation 0.

    One pass over the codes: each block's active entries are merged with the best-so-far
    (at most ``n * top`` entries) and cut back to ``top`` per latent, so memory never grows
    with the number of documents.
    """
    idx, val = _check_codes(indices, values, n_latents)
    if top < 1:
        raise ValueError(f"top must be >= 1, got {top}")
    bf = np.empty(0, np.int64)
    bd = np.empty(0, np.int64)
    bv = np.empty(0, np.float64)
    for f, d, v in _chunks(idx, val, n_latents, chunk_rows):
        F, Dd, V = np.concatenate([bf, f]), np.concatenate([bd, d]), np.concatenate([bv, v])
        order = np.lexsort((Dd, -V, F))  # by latent, then activation descending, then row
        F, Dd, V = F[order], Dd[order], V[order]
        rank = _rank_in_groups(F)
        keep = rank < top
        bf, bd, bv = F[keep], Dd[keep], V[keep]
    docs = np.full((n_latents, top), -1, np.int64)
    acts = np.zeros((n_latents, top), np.float64)
    rank = _rank_in_groups(bf)
    docs[bf, rank] = bd
    acts[bf, rank] = bv
    return docs, acts


def _rank_in_groups(sorted_keys: np.ndarray) -> np.ndarray:
    """Position of each element within its run of equal keys (keys already sorted)."""
    n = len(sorted_keys)
    if n == 0:
        return np.empty(0, np.int64)
    starts = np.r_[0, np.flatnonzero(sorted_keys[1:] != sorted_keys[:-1]) + 1]
    lengths = np.diff(np.r_[starts, n])
    return np.arange(n) - np.repeat(starts, lengths)


def activation_histograms(indices: Any, values: Any, n_latents: int, max_act: np.ndarray, *, bins: int = 20,
                          chunk_rows: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Histogram of each latent's non-zero activations on ``bins`` equal bins over
    ``[0, max_act[j]]`` (the maximum falls in the last bin), and the activation counts.

    Returns ``(counts [n, bins] int64, freq [n] int64)``. ``max_act`` is the per-latent
    maximum (the first column of :func:`top_documents`' activations), so two passes over the
    codes give both without holding them.
    """
    idx, val = _check_codes(indices, values, n_latents)
    max_act = np.asarray(max_act, dtype=np.float64)
    if max_act.shape != (n_latents,):
        raise ValueError(f"max_act must have shape ({n_latents},), got {max_act.shape}")
    counts = np.zeros(n_latents * bins, np.int64)
    freq = np.zeros(n_latents, np.int64)
    scale = np.divide(bins, max_act, out=np.zeros(n_latents), where=max_act > 0)
    for f, _, v in _chunks(idx, val, n_latents, chunk_rows):
        b = np.minimum((v * scale[f]).astype(np.int64), bins - 1)
        counts += np.bincount(f * bins + b, minlength=n_latents * bins)
        freq += np.bincount(f, minlength=n_latents)
    return counts.reshape(n_latents, bins), freq


def unit_rows(W: Any) -> np.ndarray:
    """Rows of ``W`` scaled to unit norm (float32; all-zero rows stay zero): the analyses' own."""
    return _unit_rows_or_zero(W)


def decoder_neighbours(W_dec: Any, top: int = 5, *, rows: Sequence[int] | None = None,
                       block_rows: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """For each decoder row (or each of ``rows``), the ``top`` other rows with the highest
    cosine (self excluded): :func:`fastsae.analysis.splitting.decoder_neighbours`, the one
    blocked neighbour search (ids ``[m, top]`` int64, cosines float32, ties to the lower id,
    padded with -1 / nan; never the whole ``m x n`` similarity)."""
    from ..analysis.splitting import decoder_neighbours as search

    return search(W_dec, top, rows=rows, block_rows=block_rows)


def top_cooccurring(counts: Any, freq: np.ndarray, top: int = 5, *,
                    block_rows: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """For each latent i, the ``top`` latents j != i with the largest co-occurrence ``C_ij``.

    Within a row this is the order of the paper's frequency normalisation ``C_ij / (n_i + 1)``
    (the fraction of i's documents where j fires too). Ties go to the lower id; pairs that never
    co-occur are left out (id -1, count 0). ``counts`` is the dense ``[n, n]`` C or its CSR form.

    Returns ``(ids [n, top] int64, counts [n, top] int64)``.
    """
    freq = np.asarray(freq, dtype=np.int64)
    n = freq.shape[0]
    if counts.shape != (n, n):
        raise ValueError(f"co-occurrence shape {counts.shape} does not match {n} latents")
    ids = np.full((n, top), -1, np.int64)
    cnt = np.zeros((n, top), np.int64)
    # Score = count * (n + 1) + (n - j): distinct per row, so ordering by score is ordering by
    # count with ties to the lower id, and argpartition is deterministic.
    if sp.issparse(counts):
        C = sp.csr_matrix(counts)
        for i in range(n):
            lo, hi = C.indptr[i], C.indptr[i + 1]
            j = C.indices[lo:hi].astype(np.int64)
            c = C.data[lo:hi].astype(np.int64)
            ok = (j != i) & (c > 0)
            j, c = j[ok], c[ok]
            if not len(j):
                continue
            o = np.argsort(-(c * (n + 1) + (n - j)))[:top]
            ids[i, : len(o)], cnt[i, : len(o)] = j[o], c[o]
        return ids, cnt
    C = np.asarray(counts)
    step = block_rows or max(1, (1 << 22) // n)
    t = min(top, n)
    for a in range(0, n, step):
        blk = C[a : a + step].astype(np.int64)
        rows = np.arange(blk.shape[0])
        blk[rows, rows + a] = 0
        score = blk * (n + 1) + (n - np.arange(n))[None, :]
        cand = np.argpartition(-score, t - 1, axis=1)[:, :t]
        sc = np.take_along_axis(score, cand, axis=1)
        order = np.argsort(-sc, axis=1)
        cand = np.take_along_axis(cand, order, axis=1)
        c = np.take_along_axis(blk, cand, axis=1)
        cand = np.where(c > 0, cand, -1)
        ids[a : a + step, :t], cnt[a : a + step, :t] = cand, c
    return ids, cnt


def family_tree(parent: int, children: Sequence[int], depth: Sequence[int]) -> dict:
    """The nested tree ``{"id": parent, "children": [{"id": c, "children": [...]}, ...]}`` of a
    family whose ``children`` are listed in depth-first order with their ``depth``.

    A child at depth ``d`` hangs under the closest preceding node at depth ``d - 1`` (depth 1:
    under the parent). Raises ``ValueError`` when the lists differ in length or a depth is not
    reachable that way (the first child must have depth 1, depths grow by at most 1 per step).
    """
    children, depth = list(children), list(depth)
    if len(children) != len(depth):
        raise ValueError(f"family {parent}: {len(children)} children but {len(depth)} depths")
    root = {"id": int(parent), "children": []}
    stack = [root]  # stack[d] = the latest node at depth d
    for c, d in zip(children, depth):
        d = int(d)
        if d < 1 or d > len(stack):
            raise ValueError(f"family {parent}: child {c} has depth {d} with no node at depth {d - 1} before it")
        node = {"id": int(c), "children": []}
        stack[d - 1]["children"].append(node)
        del stack[d:]
        stack.append(node)
    return root


def tree_parents(tree: dict) -> dict[int, int]:
    """``{child id: id of the node it hangs under}`` for every non-root node of a tree."""
    out: dict[int, int] = {}
    todo = [tree]
    while todo:
        node = todo.pop()
        for ch in node["children"]:
            out[ch["id"]] = node["id"]
            todo.append(ch)
    return out


def submatrix(M: Any, ids: Sequence[int]) -> np.ndarray:
    """Dense ``M[ids][:, ids]`` of a dense or CSR matrix (never densifies the whole matrix)."""
    ids = np.asarray(ids, dtype=np.int64)
    if sp.issparse(M):
        return sp.csr_matrix(M)[ids][:, ids].toarray()
    return np.asarray(M)[np.ix_(ids, ids)]


def member_matrix(counts: Any, freq: np.ndarray, members: Sequence[int]) -> np.ndarray:
    """The family's block of the frequency-normalised co-occurrence, ``C_ij / (n_i + 1)``."""
    sub = submatrix(counts, members).astype(np.float64)
    f = np.asarray(freq, dtype=np.float64)[np.asarray(members, dtype=np.int64)]
    return sub / (f[:, None] + 1.0)
