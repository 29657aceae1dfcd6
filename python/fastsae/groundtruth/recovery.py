"""Every ground-truth recovery metric: how well an SAE's latents and families recover what was
planted in its training data.

* :func:`topic_feature_recovery` -- for every node of a :class:`~fastsae.groundtruth.taxonomy.Taxonomy`,
  the latent whose firing best matches "the document belongs to this node" (F1), and the share
  of nodes recovered per level.
* :func:`taxonomy_recovery` -- the same F1 for any corpus with ``path`` records (no taxonomy
  needed), per-level counts, and whether the feature families follow the hierarchy (the demo's
  ``summary.json``).
* :func:`features_recovered`, :func:`family_recovery`, :func:`family_recovery_by_ids` -- of a
  planted dictionary (:mod:`fastsae.groundtruth.feature_recovery`, re-exported here).

Both taxonomy metrics are one computation: document -> node membership from the paths
(:func:`~fastsae.groundtruth.taxonomy.path_membership`), latent firing (:func:`firing_matrix`)
and every (node, latent) F1 from one sparse product (:func:`membership_f1`).
"""

from __future__ import annotations

from dataclasses import dataclass
from numbers import Integral
from typing import Any, Mapping, NamedTuple, Sequence

import numpy as np
import scipy.sparse as sp

from .._arrays import to_numpy
from .._checks import check_int, check_number
from .corpus import DemoCorpus
from .feature_recovery import (FamilyMatch, FamilyRecovery, FeatureRecovery, FoundFamilyMatch, family_recovery,
                               family_recovery_by_ids, features_recovered)
from .taxonomy import LEVELS, Taxonomy, _as_taxonomy, _level, _membership, path_membership

__all__ = [
    "NodeMatch",
    "TopicRecovery",
    "topic_feature_recovery",
    "taxonomy_recovery",
    "firing_matrix",
    "membership_f1",
    "FeatureRecovery",
    "FamilyMatch",
    "FoundFamilyMatch",
    "FamilyRecovery",
    "features_recovered",
    "family_recovery",
    "family_recovery_by_ids",
]


# --------------------------------------------------------------------------------------------
# Taxonomy recovery
# --------------------------------------------------------------------------------------------


class NodeMatch(NamedTuple):
    """The SAE latent that best matches one taxonomy node."""

    level: str
    """``"field"``, ``"subfield"`` or ``"topic"``."""
    name: str
    """The node's name."""
    n_docs: int
    """Documents belonging to the node."""
    latent: int
    """Best-matching latent by F1 (lowest id among ties); ``-1`` if no latent fires on any of
    the node's documents (or the node has none)."""
    f1: float
    """``2 |node & latent| / (|node| + |latent|)`` over documents (0 without a match)."""
    precision: float
    """Share of the latent's documents that belong to the node."""
    recall: float
    """Share of the node's documents on which the latent fires."""
    latent_docs: int
    """Documents on which the latent fires."""


@dataclass
class TopicRecovery:
    """Result of :func:`topic_feature_recovery`."""

    matches: list[NodeMatch]
    """One entry per node of the requested levels, broadest level first, in id order."""
    threshold: float
    """F1 at or above which a node counts as recovered."""
    n_latents: int
    """Number of latents considered."""
    share_recovered: dict[str, float]
    """Per level, the share of nodes (with at least one document) whose best F1 >= threshold."""
    mean_f1: dict[str, float]
    """Per level, the mean best F1 over nodes with at least one document."""

    def level(self, level: str | int) -> list[NodeMatch]:
        lv = _level(level)
        return [m for m in self.matches if m.level == lv]

    def to_dict(self) -> dict:
        return {
            "threshold": self.threshold,
            "n_latents": self.n_latents,
            "share_recovered": dict(self.share_recovered),
            "mean_f1": dict(self.mean_f1),
            "matches": [m._asdict() for m in self.matches],
        }

    def summary(self) -> str:
        """A few lines: per level, nodes recovered at the threshold and the mean best F1."""
        lines = []
        for lv in self.share_recovered:
            ms = [m for m in self.level(lv) if m.n_docs > 0]
            k = sum(m.f1 >= self.threshold for m in ms)
            lines.append(f"{lv + 's':<10} {k:>3}/{len(ms):<3} recovered (best-latent F1 >= {self.threshold:g}), "
                         f"mean F1 {self.mean_f1[lv]:.2f}")
        return "\n".join(lines)




def _paths_from(paths: Any, tax: Taxonomy, include_secondary: bool) -> tuple[list, list | None]:
    if isinstance(paths, DemoCorpus):
        return list(paths.paths), (list(paths.secondary) if include_secondary else None)
    if isinstance(paths, (str, bytes)) or not isinstance(paths, Sequence):
        raise TypeError("paths must be a DemoCorpus, a list of paths or a list of corpus records")
    prim, sec, any_sec = [], [], False
    for i, p in enumerate(paths):
        s = None
        if isinstance(p, Mapping):  # a corpus record: {"path": [...], "secondary": [...]}
            p, s = p.get("path"), p.get("secondary")
        try:
            prim.append(tax.check_path(p) if p is not None else None)
            if s is not None:
                sec.append(tax.check_path(s))
                any_sec = True
            else:
                sec.append(None)
        except (ValueError, KeyError) as e:
            msg = e.args[0] if e.args else str(e)
            raise ValueError(f"document {i}: {msg}") from None
    return prim, (sec if include_secondary and any_sec else None)


def _codes_arrays(codes: Any) -> tuple[np.ndarray, np.ndarray]:
    if hasattr(codes, "indices") and hasattr(codes, "values"):  # SparseCode (a NamedTuple) and look-alikes
        idx, val = codes.indices, codes.values
    elif isinstance(codes, (tuple, list)) and len(codes) == 2:
        idx, val = codes
    else:
        raise TypeError("codes must be a SparseCode or an (indices, values) pair of [N, k] arrays")
    idx, val = to_numpy(idx, "indices"), to_numpy(val, "values")
    if idx.ndim != 2 or idx.shape != val.shape:
        raise ValueError(f"indices and values must both be [N, k], got {idx.shape} and {val.shape}")
    if idx.dtype.kind not in "iu":
        raise TypeError(f"indices must hold integers, got dtype {idx.dtype}")
    return idx.astype(np.int64, copy=False), val.astype(np.float64, copy=False)


def firing_matrix(idx: np.ndarray, val: np.ndarray, n_latents: int) -> sp.csr_matrix:
    """``[N, n_latents]`` 0/1 matrix: latent j fires on document i (some slot of row i holds j
    with a value > 0; a latent repeated within a row fires once)."""
    rows, slots = np.nonzero(val > 0)
    A = sp.csr_matrix((np.ones(rows.size, dtype=np.int64), (rows, idx[rows, slots])), shape=(idx.shape[0], n_latents))
    A.data[:] = 1
    return A


def membership_f1(M: sp.spmatrix, A: sp.spmatrix) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """F1 of every (node, latent) pair from 0/1 document matrices ``M`` ``[N, nodes]`` and ``A``
    ``[N, latents]``: ``(f1, inter, node_docs, lat_docs)``, with ``f1[v, j] = 2 |docs(v) & fires(j)|
    / (|docs(v)| + |fires(j)|)`` (one sparse product; 0 where both are empty)."""
    node_docs = np.asarray(M.sum(axis=0)).ravel()
    lat_docs = np.asarray(A.sum(axis=0)).ravel()
    inter = (M.T.tocsr() @ A).toarray() if A.shape[1] else np.zeros((M.shape[1], 0), dtype=np.int64)
    denom = node_docs[:, None] + lat_docs[None, :]
    f1 = np.divide(2.0 * inter, denom, out=np.zeros(inter.shape), where=denom > 0)
    return f1, inter, node_docs, lat_docs


def topic_feature_recovery(
    codes: Any,
    paths: Any,
    *,
    level: str | int | Sequence[str | int] | None = None,
    taxonomy: Taxonomy | None = None,
    include_secondary: bool = True,
    n_latents: int | None = None,
    threshold: float = 0.5,
) -> TopicRecovery:
    """For each taxonomy node, the latent whose firing best matches membership in the node.

    ``codes``: top-k codes of the documents (a :class:`fastsae.ops.SparseCode` or an
    ``(indices, values)`` pair of ``[N, k]`` arrays); latent ``j`` *fires* on document ``i`` when
    some slot of row ``i`` holds ``j`` with a value ``> 0``.
    ``paths``: a :class:`DemoCorpus`, a list of ``(field, subfield, topic)`` paths (``None`` for
    a document without one), or corpus records with ``"path"`` (and ``"secondary"``) keys,
    e.g. ``RunDir.corpus()``; row ``i`` of ``codes`` is document ``i``.
    ``level``: one level, several, or ``None`` for all three.
    ``include_secondary``: a cross-topic document belongs to the nodes of both its paths.
    ``n_latents``: latents to consider (default: the largest firing id + 1).

    Document ``i`` belongs to node ``v`` when ``v`` lies on its path. For each node the F1 score
    ``2 |docs(v) & fires(j)| / (|docs(v)| + |fires(j)|)`` is computed against every latent ``j``
    (one sparse product), and the best latent kept; ``share_recovered[level]`` is the share of
    the level's nodes with best F1 >= ``threshold``. A latent may be the best match of several
    nodes (e.g. a field and its only well-populated topic).
    """
    tax = paths.taxonomy if isinstance(paths, DemoCorpus) and taxonomy is None else _as_taxonomy(taxonomy)
    threshold = check_number(threshold, "threshold", min=0.0, max=1.0)
    if level is None:
        levels = list(LEVELS)
    elif isinstance(level, (str, Integral)):
        levels = [_level(level)]
    else:
        levels = [lv for lv in LEVELS if lv in {_level(x) for x in level}]
    prim, sec = _paths_from(paths, tax, include_secondary)
    idx, val = _codes_arrays(codes)
    if idx.shape[0] != len(prim):
        raise ValueError(f"codes have {idx.shape[0]} rows but there are {len(prim)} document paths")
    active = val > 0
    if active.any() and idx[active].min() < 0:
        raise ValueError("codes hold negative latent ids")
    top = int(idx[active].max()) + 1 if active.any() else 0
    if n_latents is None:
        n_latents = top
    else:
        n_latents = check_int(n_latents, "n_latents", min=1)
        if top > n_latents:
            raise ValueError(f"codes hold latent id {top - 1} but n_latents={n_latents}")
    A = firing_matrix(idx, val, n_latents)

    matches: list[NodeMatch] = []
    share, mean = {}, {}
    for lv in levels:
        f1, inter, node_docs, lat_docs = membership_f1(_membership(prim, sec, tax, lv), A)
        f1s = []
        for node in tax.nodes(lv):
            v = node.index
            if n_latents == 0 or node_docs[v] == 0 or inter[v].max() == 0:
                matches.append(NodeMatch(lv, node.name, int(node_docs[v]), -1, 0.0, 0.0, 0.0, 0))
            else:
                j = int(np.argmax(f1[v]))  # first maximum: lowest id among ties
                matches.append(NodeMatch(lv, node.name, int(node_docs[v]), j, float(f1[v, j]),
                                         float(inter[v, j] / lat_docs[j]), float(inter[v, j] / node_docs[v]),
                                         int(lat_docs[j])))
            if node_docs[v] > 0:
                f1s.append(matches[-1].f1)
        share[lv] = float(np.mean([f >= threshold for f in f1s])) if f1s else 0.0
        mean[lv] = float(np.mean(f1s)) if f1s else 0.0
    return TopicRecovery(matches, threshold, n_latents, share, mean)


def taxonomy_recovery(codes, records: Sequence[dict], families: Sequence[dict], n_latents: int, *,
                      min_f1: float = 0.5, label_f1: float = 0.3) -> dict:
    """How well the SAE's latents and families recover a corpus's topic hierarchy.

    Every prefix of a document's ``path`` (and ``secondary`` path) is a taxonomy node the
    document belongs to. Per node, the latent whose firing best matches membership (F1);
    per level, the share of nodes matched with F1 >= ``min_f1``. Each latent is assigned its
    best node when that F1 >= ``label_f1``. A family is *consistent* when its parent's node is
    a field or subfield and at least half of its children's nodes lie below it; an internal
    node is *recovered as a family* when a consistent family's parent is assigned to it.
    """
    keys, M = path_membership([r.get("path") for r in records], [r.get("secondary") for r in records])
    if not keys:
        raise ValueError("the corpus has no ground-truth paths")
    f1 = membership_f1(M, firing_matrix(np.asarray(codes.indices), np.asarray(codes.values), n_latents))[0].T
    best_f1 = f1.max(axis=0)
    levels: dict[int, list[float]] = {}
    for j, key in enumerate(keys):
        levels.setdefault(len(key), []).append(float(best_f1[j]))
    names = {1: "field", 2: "subfield", 3: "topic"}
    per_level = {names.get(L, f"level{L}"): {"nodes": len(v), "matched": int(np.sum(np.array(v) >= min_f1)),
                                           "median_best_f1": float(np.median(v))} for L, v in sorted(levels.items())}
    lat_node = np.where(f1.max(axis=1) >= label_f1, f1.argmax(axis=1), -1)

    def below(child: int, parent: int) -> bool:
        if child < 0 or parent < 0:
            return False
        c, p = keys[child], keys[parent]
        return len(c) > len(p) and c[: len(p)] == p

    consistent, recovered = 0, set()
    for fam in families:
        pn = int(lat_node[int(fam["parent"])])
        if pn < 0 or len(keys[pn]) >= 3:
            continue
        ok = sum(below(int(lat_node[int(c)]), pn) for c in fam["children"])
        if 2 * ok >= len(fam["children"]):
            consistent += 1
            recovered.add(pn)
    internal = [j for j, k in enumerate(keys) if len(k) < max(len(x) for x in keys)
                and any(len(x) > len(k) and x[: len(k)] == k for x in keys)]
    return {"per_level": per_level, "families": len(families), "consistent_families": consistent,
            "internal_nodes": len(internal), "internal_nodes_recovered_as_family": len(recovered & set(internal)),
            "min_f1": min_f1}
