"""How much of a planted dictionary a trained SAE recovers: its feature directions and families.

* :func:`features_recovered` -- for each true feature, the decoder row with the best cosine.
* :func:`family_recovery` / :func:`family_recovery_by_ids` -- precision and recall of found
  families against the true ones (e.g. those of :func:`fastsae.groundtruth.planted.planted_embeddings`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np

from .._arrays import to_numpy
from .._checks import check_number
from .planted import PlantedCorpus, _is_int

__all__ = ["FeatureRecovery", "FamilyMatch", "FoundFamilyMatch", "FamilyRecovery", "features_recovered",
           "family_recovery", "family_recovery_by_ids"]

# --------------------------------------------------------------------------------------------
# Feature recovery
# --------------------------------------------------------------------------------------------


@dataclass
class FeatureRecovery:
    """How well decoder rows recover the true feature directions."""

    best_cosine: np.ndarray
    """``[n_true]`` float64: for each true feature, the largest cosine with any decoder row."""
    best_latent: np.ndarray
    """``[n_true]`` int64: the decoder row reaching ``best_cosine`` (smallest id on ties)."""
    recovered: np.ndarray
    """``[n_true]`` bool: ``best_cosine >= threshold``."""
    fraction: float
    """Share of true features recovered (``recovered.mean()``; NaN with no true features)."""
    matching: dict[int, int]
    """True feature id -> latent id, for the recovered features only."""
    threshold: float
    """The cosine threshold used."""

    @property
    def n_recovered(self) -> int:
        return int(self.recovered.sum())

    @property
    def latent_to_true(self) -> dict[int, int]:
        """Latent id -> true feature id, for every latent that recovers some true feature.

        A latent that is the best match of several true features maps to the one it is most
        similar to (smallest true id on ties). Latents recovering nothing are absent.
        """
        out: dict[int, int] = {}
        best: dict[int, float] = {}
        for t, lat in self.matching.items():
            c = float(self.best_cosine[t])
            if lat not in out or c > best[lat] or (c == best[lat] and t < out[lat]):
                out[lat], best[lat] = t, c
        return out


def _as_matrix(x: Any, name: str) -> np.ndarray:
    a = to_numpy(x, name)
    if a.ndim != 2:
        raise ValueError(f"{name} must be 2-D, got shape {a.shape}")
    if a.dtype.kind not in "fiu":
        raise ValueError(f"{name} must hold real numbers, got dtype {a.dtype}")
    a = np.asarray(a, dtype=np.float64)
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{name} holds NaN or infinite values")
    return a


def _normalized(a: np.ndarray) -> np.ndarray:
    n = np.linalg.norm(a, axis=1, keepdims=True)
    return np.divide(a, n, out=np.zeros_like(a), where=n > 0)  # zero rows: cosine 0 with all


def features_recovered(W_dec: Any, true_features: Any, *, threshold: float = 0.9) -> FeatureRecovery:
    """For each true feature, the decoder row with the largest cosine, and whether it is recovered.

    ``W_dec``: a trained :class:`fastsae.TopKSAE`, or ``[n_latents, d]`` decoder directions
    (one row per latent; numpy or torch) in the space of ``true_features``: ``[n_true, d]``
    (e.g. :attr:`PlantedCorpus.features`, the input space). An SAE contributes
    :meth:`~fastsae.TopKSAE.feature_directions` (its directions in the input space); its raw
    ``W_dec`` lives in the standardised space and is comparable with the planted features only
    when the model is unstandardised, so pass the SAE or ``sae.feature_directions()``.
    Rows need not be normalised; an all-zero row has cosine 0 with everything. A true feature
    is recovered when its best cosine is ``>= threshold``. Several true features may share a
    best latent (the matching is not one-to-one).
    """
    if callable(getattr(W_dec, "feature_directions", None)):  # a TopKSAE (duck-typed: no torch import here)
        W_dec = W_dec.feature_directions()
    W = _as_matrix(W_dec, "W_dec")
    F = _as_matrix(true_features, "true_features")
    if W.shape[1] != F.shape[1]:
        hint = " (W_dec must be [n_latents, d], one row per latent)" if W.shape[0] == F.shape[1] else ""
        raise ValueError(f"W_dec has dimension {W.shape[1]} but true_features has {F.shape[1]}{hint}")
    if W.shape[0] == 0:
        raise ValueError("W_dec has no rows")
    threshold = check_number(threshold, "threshold", min=-1.0, max=1.0)
    Wn, Fn = _normalized(W), _normalized(F)
    n_true = F.shape[0]
    best = np.full(n_true, -np.inf)
    arg = np.zeros(n_true, dtype=np.int64)
    chunk = max(1, (1 << 22) // max(n_true, 1))
    for s in range(0, W.shape[0], chunk):
        cos = Wn[s : s + chunk] @ Fn.T  # [chunk, n_true]
        i = np.argmax(cos, axis=0)
        c = cos[i, np.arange(n_true)]
        better = c > best  # strict: earlier (smaller) latent ids win ties
        best[better] = c[better]
        arg[better] = i[better] + s
    recovered = best >= threshold
    matching = {int(t): int(arg[t]) for t in np.flatnonzero(recovered)}
    return FeatureRecovery(
        best_cosine=best,
        best_latent=arg,
        recovered=recovered,
        fraction=float(recovered.mean()) if n_true else float("nan"),
        matching=matching,
        threshold=threshold,
    )


# --------------------------------------------------------------------------------------------
# Family recovery
# --------------------------------------------------------------------------------------------


@dataclass
class FamilyMatch:
    """The best found family for one true family."""

    parent: int
    """True parent feature id."""
    children: list[int]
    """True child feature ids."""
    best_found: int
    """Index (into the found families) of the found family with the same parent and the
    highest Jaccard similarity of children; -1 if no found family maps to this parent."""
    jaccard: float
    """That Jaccard similarity (0.0 when ``best_found == -1``)."""
    matched: bool
    """Whether ``jaccard >= threshold`` (the true family is recovered)."""


@dataclass
class FoundFamilyMatch:
    """One found family, mapped to true ids, and the best true family for it."""

    parent: int
    """Parent latent id as given."""
    children: list[int]
    """Child latent ids as given."""
    mapped_parent: int
    """True feature id of the parent, -1 if the parent latent has no match."""
    mapped_children: list[int]
    """Sorted distinct true feature ids of the children that have a match."""
    n_unmapped_children: int
    """Number of child latents without a match (ignored unless ``count_unmatched``)."""
    best_true: int
    """Index (into the true families) of the true family with parent ``mapped_parent`` and
    the highest Jaccard similarity of children; -1 if none has that parent."""
    jaccard: float
    """That Jaccard similarity (0.0 when ``best_true == -1``)."""
    matched: bool
    """Whether ``jaccard >= threshold`` (the found family is a true family)."""


@dataclass
class FamilyRecovery:
    """Precision and recall of found families against true families.

    A found family matches a true family when its parent maps to the true parent and the
    Jaccard similarity of its mapped children and the true children is ``>= threshold``.
    Matching is not one-to-one: duplicate found families of one true family all count as
    correct for precision.
    """

    recall: float
    """Share of true families matched by some found family (NaN with no true families)."""
    precision: float
    """Share of found families that match some true family (NaN with no found families)."""
    n_true: int
    """Number of true families."""
    n_found: int
    """Number of found families."""
    n_true_matched: int
    """True families matched by at least one found family."""
    n_found_matched: int
    """Found families matching at least one true family."""
    true_details: list[FamilyMatch]
    """Per true family (same order as given)."""
    found_details: list[FoundFamilyMatch]
    """Per found family (same order as given)."""
    threshold: float
    """The Jaccard threshold used."""

    @property
    def f1(self) -> float:
        """Harmonic mean of precision and recall (0 when both are 0, NaN when either is NaN)."""
        p, r = self.precision, self.recall
        if math.isnan(p) or math.isnan(r):
            return float("nan")
        return 0.0 if p + r == 0 else 2 * p * r / (p + r)


def _family_list(families: Any, name: str) -> list[tuple[int, list[int]]]:
    """(parent, children) pairs from pairs, objects with ``.parent``/``.children``, or a corpus."""
    if isinstance(families, PlantedCorpus):
        families = families.families
    if isinstance(families, (str, bytes)) or not hasattr(families, "__iter__"):
        raise ValueError(f"{name} must be a list of (parent, children) pairs, got {type(families).__name__}")
    out = []
    for i, fam in enumerate(families):
        if hasattr(fam, "parent") and hasattr(fam, "children"):
            parent, children = fam.parent, fam.children
        else:
            try:
                parent, children = fam
            except (TypeError, ValueError):
                raise ValueError(f"{name}[{i}] must be a (parent, children) pair, got {fam!r}") from None
        arr = np.asarray(children)
        if arr.ndim != 1 or (arr.size and arr.dtype.kind not in "iu"):
            raise ValueError(f"{name}[{i}]: children must be a list of integer ids, got {children!r}")
        children = [int(c) for c in arr]
        if not _is_int(parent) or any(c < 0 for c in children) or parent < 0:
            raise ValueError(f"{name}[{i}]: ids must be non-negative ints, got ({parent!r}, {children!r})")
        out.append((int(parent), children))
    return out


def _latent_map(latent_to_true: Any) -> Mapping[int, int]:
    if isinstance(latent_to_true, FeatureRecovery):
        return latent_to_true.latent_to_true
    if isinstance(latent_to_true, Mapping):
        return {int(k): int(v) for k, v in latent_to_true.items() if v is not None and int(v) >= 0}
    a = np.asarray(latent_to_true)
    if a.ndim != 1 or a.dtype.kind not in "iu":
        raise ValueError(
            "latent_to_true must be a dict {latent: true id}, a FeatureRecovery, or a 1-D integer "
            "array (negative = no match)"
        )
    return {int(i): int(v) for i, v in enumerate(a) if v >= 0}


def _jaccard(a: set, b: set, extra: int = 0) -> float:
    union = len(a | b) + extra
    return 1.0 if union == 0 else len(a & b) / union


def _recovery(found, true, mapping, threshold: float, count_unmatched: bool, identity: bool) -> FamilyRecovery:
    threshold = check_number(threshold, "jaccard", min=0.0, max=1.0)
    by_parent: dict[int, list[int]] = {}
    true_sets = []
    for j, (p, ch) in enumerate(true):
        by_parent.setdefault(p, []).append(j)
        true_sets.append(set(ch))

    def m(x: int) -> int:
        return x if identity else mapping.get(x, -1)

    found_details = []
    true_best = [(-1, 0.0)] * len(true)
    for i, (p, ch) in enumerate(found):
        mp = m(p)
        mapped = [m(c) for c in ch]
        mset = {c for c in mapped if c >= 0}
        n_un = sum(c < 0 for c in mapped)
        best_j, best_s = -1, 0.0
        for j in by_parent.get(mp, []) if mp >= 0 else []:
            s = _jaccard(mset, true_sets[j], n_un if count_unmatched else 0)
            if best_j == -1 or s > best_s:
                best_j, best_s = j, s
            bj, bs = true_best[j]
            if bj == -1 or s > bs:
                true_best[j] = (i, s)
        found_details.append(
            FoundFamilyMatch(
                parent=p, children=list(ch), mapped_parent=mp, mapped_children=sorted(mset),
                n_unmapped_children=n_un, best_true=best_j, jaccard=best_s,
                matched=best_j >= 0 and best_s >= threshold,
            )
        )  # fmt: skip
    true_details = [
        FamilyMatch(parent=p, children=list(ch), best_found=bi, jaccard=bs, matched=bi >= 0 and bs >= threshold)
        for (p, ch), (bi, bs) in zip(true, true_best)
    ]
    n_tm = sum(t.matched for t in true_details)
    n_fm = sum(f.matched for f in found_details)
    return FamilyRecovery(
        recall=n_tm / len(true) if true else float("nan"),
        precision=n_fm / len(found) if found else float("nan"),
        n_true=len(true),
        n_found=len(found),
        n_true_matched=n_tm,
        n_found_matched=n_fm,
        true_details=true_details,
        found_details=found_details,
        threshold=threshold,
    )


def family_recovery(
    found_families: Any,
    true_families: Any,
    latent_to_true: Any,
    *,
    jaccard: float = 0.5,
    count_unmatched: bool = False,
) -> FamilyRecovery:
    """Precision / recall of families found among SAE latents against the true families.

    ``found_families``: ``(parent latent id, [child latent ids])`` pairs, or objects with
    ``.parent`` and ``.children`` (e.g. :class:`fastsae.analysis.families.Family`).
    ``true_families``: ``(parent, [children])`` pairs in true feature ids, or a
    :class:`PlantedCorpus`. ``latent_to_true``: latent id -> true feature id, as a dict, a
    :class:`FeatureRecovery` (its :attr:`~FeatureRecovery.latent_to_true`), or a 1-D int array
    with -1 for latents without a match.

    A found family matches a true family when its parent maps to the true parent and the
    Jaccard similarity between its mapped children (the set of true ids its child latents map
    to; children without a match are dropped) and the true children is ``>= jaccard``. With
    ``count_unmatched=True`` each child latent without a match instead counts as one extra
    element of the union, so unmatched children lower the similarity.
    """
    found = _family_list(found_families, "found_families")
    true = _family_list(true_families, "true_families")
    return _recovery(found, true, _latent_map(latent_to_true), jaccard, count_unmatched, identity=False)


def family_recovery_by_ids(found: Any, true: Any, *, jaccard: float = 0.5) -> FamilyRecovery:
    """:func:`family_recovery` when found families are already in true feature ids.

    For example families found on :func:`planted_codes_from_corpus` codes: the mapping is the
    identity; definitions are otherwise the same.
    """
    return _recovery(
        _family_list(found, "found"), _family_list(true, "true"), {}, jaccard, False, identity=True
    )
