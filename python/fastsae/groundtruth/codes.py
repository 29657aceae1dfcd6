"""Generated top-k codes with known structure, for the demo, tests and benchmarks (old path: ``fastsae.synthetic``).

* :func:`zipf_codes` -- codes whose latent frequencies follow a Zipf law over a random
  permutation of latent ids, the long-tailed shape of real SAE feature densities.
* :func:`planted_hierarchy_codes` -- codes with planted feature families: whenever a child
  fires its parent fires too (the structure the paper's family search should recover),
  on top of Zipf background latents.

Rows come out in the order ``torch.topk`` gives (by value, descending), not sorted by id.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def zipf_probabilities(n_latents: int, alpha: float, rng: np.random.Generator) -> np.ndarray:
    """``p[id]`` proportional to ``1 / rank**alpha``, ranks randomly assigned to ids."""
    p = 1.0 / np.arange(1, n_latents + 1, dtype=np.float64) ** alpha
    p /= p.sum()
    return p[rng.permutation(n_latents)]


def _distinct_draws(rng: np.random.Generator, cdf: np.ndarray, ids: np.ndarray, rows: int, k: int):
    """[rows, k] distinct ids drawn (without replacement, approximately) from ``cdf``.

    Draws 4k with replacement, drops repeats, keeps the first k in draw order. Rows that end up
    with fewer than k distinct ids (only with extremely concentrated laws) are padded with -1.
    """
    if k == 0:
        return np.zeros((rows, 0), dtype=np.int64)
    m = 4 * k
    draws = ids[np.searchsorted(cdf, rng.random((rows, m)), side="right").clip(max=len(ids) - 1)]
    order = np.argsort(draws, axis=1, kind="stable")
    s = np.take_along_axis(draws, order, axis=1)
    dup = np.zeros_like(s, dtype=bool)
    dup[:, 1:] = s[:, 1:] == s[:, :-1]
    # Position (in draw order) of each first occurrence; repeats pushed past the end.
    pos = np.where(dup, m, order)
    pos.sort(axis=1)
    pos = pos[:, :k]
    out = np.take_along_axis(draws, np.minimum(pos, m - 1), axis=1)
    out[pos >= m] = -1
    return out


def _finish(idx: np.ndarray, val: np.ndarray, rng: np.random.Generator):
    """Padding (-1 ids) becomes value 0 at a valid, unused id; rows sorted by value descending."""
    pad = idx < 0
    if pad.any():
        val[pad] = 0.0
        # Repeat the row's first id (value 0 marks padding; a repeated padding id is allowed).
        idx[pad] = np.broadcast_to(idx[:, :1], idx.shape)[pad]
    order = np.argsort(-val, axis=1, kind="stable")
    return np.take_along_axis(idx, order, axis=1), np.take_along_axis(val, order, axis=1)


def zipf_codes(
    n_rows: int,
    n_latents: int,
    k: int,
    *,
    alpha: float = 1.0,
    seed: int = 0,
    law_seed: int = 0,
    index_dtype=np.int32,
) -> tuple[np.ndarray, np.ndarray]:
    """(indices ``[n_rows, k]``, values ``[n_rows, k]`` float32) with Zipf(alpha) frequencies.

    ``law_seed`` fixes which ids are frequent; ``seed`` the draws (generate a large set in
    chunks with one ``law_seed`` and different ``seed`` values).
    """
    if k > n_latents:
        raise ValueError(f"k={k} exceeds n_latents={n_latents}")
    p = zipf_probabilities(n_latents, alpha, np.random.default_rng(law_seed))
    rng = np.random.default_rng(seed)
    idx = _distinct_draws(rng, np.cumsum(p), np.arange(n_latents), n_rows, k)
    val = rng.exponential(1.0, size=idx.shape).astype(np.float32) + np.float32(0.05)
    idx, val = _finish(idx, val, rng)
    return idx.astype(index_dtype), val


@dataclass
class PlantedCodes:
    """Codes with planted families and their ground truth."""

    indices: np.ndarray
    """``[n_rows, k]`` latent ids."""
    values: np.ndarray
    """``[n_rows, k]`` float32 activations (0 = padding)."""
    parents: np.ndarray
    """``[n_families]`` the parent latent of each planted family."""
    children: np.ndarray
    """``[n_families, children_per_family]`` the child latents of each planted family."""
    n_latents: int


def planted_hierarchy_codes(
    n_rows: int,
    n_latents: int,
    k: int,
    *,
    n_families: int = 20,
    children_per_family: int = 6,
    families_per_row: int = 2,
    children_per_row: int = 1,
    alpha: float = 1.0,
    seed: int = 0,
) -> PlantedCodes:
    """Codes in which every row activates ``families_per_row`` distinct planted families.

    For each chosen family, its parent and ``children_per_row`` of its children fire (so a
    parent fires whenever any of its children does, and children rarely co-occur); the rest of
    the k slots are Zipf background latents outside the families.
    """
    fam_size = 1 + children_per_family
    per_row = families_per_row * (1 + children_per_row)
    if n_families * fam_size >= n_latents:
        raise ValueError("families use up all latents")
    if families_per_row > n_families or children_per_row > children_per_family or per_row > k:
        raise ValueError("inconsistent family sizes for this k")
    rng = np.random.default_rng(seed)
    perm = rng.permutation(n_latents)
    fam_ids = perm[: n_families * fam_size].reshape(n_families, fam_size)
    parents, children = fam_ids[:, 0].copy(), fam_ids[:, 1:].copy()
    background = perm[n_families * fam_size :]

    fams = np.argsort(rng.random((n_rows, n_families)), axis=1)[:, :families_per_row]
    kids = np.argsort(rng.random((n_rows, families_per_row, children_per_family)), axis=2)[:, :, :children_per_row]
    fam_idx = [parents[fams]]
    fam_val = [rng.uniform(1.0, 2.0, size=fams.shape)]
    fam_idx.append(children[fams[:, :, None], kids].reshape(n_rows, -1))
    fam_val.append(rng.uniform(0.5, 1.5, size=(n_rows, families_per_row * children_per_row)))

    p = zipf_probabilities(len(background), alpha, rng)
    bg = _distinct_draws(rng, np.cumsum(p), background, n_rows, k - per_row)
    bg_val = rng.exponential(0.5, size=bg.shape) + 0.05
    idx = np.concatenate(fam_idx + [bg], axis=1)
    val = np.concatenate(fam_val + [bg_val], axis=1).astype(np.float32)
    idx, val = _finish(idx, val, rng)
    return PlantedCodes(idx.astype(np.int64), val, parents, children, n_latents)
