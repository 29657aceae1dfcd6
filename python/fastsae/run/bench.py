"""``fastsae bench cooc``: the native core end to end on generated codes with planted families
(codes -> C and D -> thresholded normalised C -> maximum spanning forest -> planted edges found)."""

from __future__ import annotations

import os
import time
from typing import NamedTuple

import numpy as np

from .. import _native
from ..cooc import Cooccurrence, cooccurrence, normalize_frequency, threshold
from ..cooc.forest import maximum_spanning_forest
from ..groundtruth.codes import planted_hierarchy_codes
from ..io import atomic_write_json


class BenchCooc(NamedTuple):
    """What :func:`bench_cooc` measured."""

    summary: dict
    """Sizes, seconds per phase, pair-updates, ns per pair-update per core, forest size and how
    many planted parent -> child edges and families the forest recovered (``summary.json``)."""
    cooc: Cooccurrence
    """The co-occurrence result of the generated codes."""


def bench_cooc(rows: int, n_latents: int, k: int, *, n_families: int = 20, children_per_family: int = 6,
               tau: float = 0.1, seed: int = 0, out: str | None = None) -> BenchCooc:
    """Generate ``rows`` codes with planted families, time C and D and the spanning forest of the
    thresholded normalised C, and count the planted edges the forest holds (each forest edge is
    directed from the denser feature to the sparser one, as in the paper, section 4.2). With
    ``out``: ``out/cooc.npz`` and ``out/summary.json``, written atomically."""
    t0 = time.perf_counter()
    data = planted_hierarchy_codes(rows, n_latents, k, n_families=n_families,
                                   children_per_family=children_per_family, seed=seed)
    t_gen = time.perf_counter() - t0

    t0 = time.perf_counter()
    cooc = cooccurrence(data.indices, data.values, n_latents)
    t_cooc = time.perf_counter() - t0
    active = np.count_nonzero(data.values > 0, axis=1).astype(np.int64)
    n_pairs = int((active * (active - 1) // 2).sum())

    t0 = time.perf_counter()
    forest = maximum_spanning_forest(threshold(normalize_frequency(cooc), tau))
    t_msf = time.perf_counter() - t0

    u, v = forest.edges[:, 0], forest.edges[:, 1]
    denser_u = cooc.freq[u] >= cooc.freq[v]
    directed = set(zip(np.where(denser_u, u, v).tolist(), np.where(denser_u, v, u).tolist()))
    planted = {(int(p), int(c)) for p, cs in zip(data.parents, data.children) for c in cs}
    found = len(planted & directed)
    fam_recovered = sum(
        1 for p, cs in zip(data.parents, data.children) if sum((int(p), int(c)) in directed for c in cs) * 2 >= len(cs)
    )
    threads = _native.max_threads()
    summary = {
        "rows": rows,
        "n_latents": n_latents,
        "k": k,
        "threads": threads,
        "seconds": {"generate": round(t_gen, 3), "cooccurrence": round(t_cooc, 3), "spanning_forest": round(t_msf, 3)},
        "pair_updates": n_pairs,
        "ns_per_pair_update_per_core": round(t_cooc * threads / max(n_pairs, 1) * 1e9, 3),
        "forest_edges": int(len(forest.edges)),
        "planted_parent_child_edges": len(planted),
        "planted_edges_in_forest": found,
        "planted_families_recovered": f"{fam_recovered}/{len(data.parents)}",
    }
    if out:
        os.makedirs(out, exist_ok=True)
        cooc.save(os.path.join(out, "cooc.npz"))
        atomic_write_json(os.path.join(out, "summary.json"), summary)
    return BenchCooc(summary, cooc)
