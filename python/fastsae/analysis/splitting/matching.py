"""Recurrent / split / novel features between two SAE sizes, and the best match of each feature in
an SAE trained on another corpus (Fig. 10, Table 4)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..._plot import save_figure
from .._common import (
    _PNG_DPI,
    _codes,
    _finite_float,
    _ids,
    _positive_int,
    _prepared,
    _select_docs,
    figure_row,
)
from .activation import _activation_similarity
from .neighbours import _nn1

CATEGORIES = ("recurrent", "split", "novel")
"""The labels :func:`match_features` gives, in order of precedence."""


# ----------------------------------------------------------------------------- 3. recurrent / split / novel


@dataclass(eq=False)
class FeatureMatches:
    """Each feature of a larger SAE matched to its nearest feature of a smaller SAE."""

    nearest: np.ndarray
    """``[n_large]`` int64 id of the nearest small-SAE feature (max decoder cosine)."""
    cosine: np.ndarray
    """``[n_large]`` float64 decoder cosine to that feature."""
    activation_similarity: np.ndarray | None
    """``[n_large]`` float64 activation similarity to that feature, or None without codes."""
    n_siblings: np.ndarray
    """``[n_large]`` int64 number of large features (itself included) sharing that nearest feature."""
    category: np.ndarray
    """``[n_large]`` ``"recurrent"``, ``"split"`` or ``"novel"`` (see :func:`match_features`)."""
    counts: dict
    """Number of large features per category."""
    children: np.ndarray
    """``[n_small]`` int64 number of large features whose nearest neighbour is each small feature."""
    cos_threshold: float
    """Decoder cosine above which a feature can be recurrent."""
    act_threshold: float | None
    """Activation similarity a recurrent feature needs (None: not used, no codes)."""
    split_threshold: float
    """Decoder cosine above which a feature sharing its nearest neighbour is split."""


def match_features(sae_small: Any, sae_large: Any, codes_small: Any = None, codes_large: Any = None, *,
                   cos_threshold: float = 0.95, act_threshold: float = 0.5, split_threshold: float = 0.7,
                   block_size: int = 4096, device=None) -> FeatureMatches:
    """Match every feature of the larger SAE to its nearest feature of the smaller one.

    ``sae_small``/``sae_large`` are TopKSAEs or decoder matrices. For large feature ``j``,
    ``nearest[j] = argmax_i cos(w_small,i, w_large,j)`` (paper section 4.1) and
    ``n_siblings[j]`` counts the large features with the same nearest neighbour. With
    ``codes_small`` and ``codes_large`` (both SAEs' codes on the same documents, row for row)
    the activation similarity of ``(nearest[j], j)`` is computed as in
    :func:`activation_similarity`. Rules, first match wins:

    1. ``recurrent``: ``cosine > cos_threshold`` and, when codes are given,
       ``activation_similarity >= act_threshold``: the same feature learned again;
    2. ``split``: ``n_siblings >= 2`` and ``cosine > split_threshold``: one of several large
       features sharing (splitting) the direction of one small feature;
    3. ``novel``: anything else (no close counterpart in the smaller SAE, or a close but lone
       one whose activations differ).
    """
    cos_threshold = _finite_float(cos_threshold, "cos_threshold", -1.0, 1.0)
    split_threshold = _finite_float(split_threshold, "split_threshold", -1.0, 1.0)
    act_threshold = _finite_float(act_threshold, "act_threshold")
    block_size = _positive_int(block_size, "block_size")
    if (codes_small is None) != (codes_large is None):
        raise ValueError("give both codes_small and codes_large (codes of the same documents), or neither")
    small, large = _prepared([(sae_small, "sae_small"), (sae_large, "sae_large")], device)
    nearest, cosine = _nn1(small, large, block_size)
    children = np.bincount(nearest, minlength=small.shape[0]).astype(np.int64)
    siblings = children[nearest]
    act = None
    recurrent = cosine > cos_threshold
    if codes_small is not None:
        cs, cl = _codes(codes_small, "codes_small"), _codes(codes_large, "codes_large")
        pairs = np.stack([nearest, np.arange(large.shape[0], dtype=np.int64)], axis=1)
        act = _activation_similarity(cs, cl, pairs, 1 << 24).similarity
        recurrent &= act >= act_threshold
    split = ~recurrent & (siblings >= 2) & (cosine > split_threshold)
    category = np.full(large.shape[0], "novel", dtype="<U9")
    category[split] = "split"
    category[recurrent] = "recurrent"
    counts = {c: int((category == c).sum()) for c in CATEGORIES}
    return FeatureMatches(nearest, cosine, act, siblings, category, counts, children, cos_threshold,
                          act_threshold if codes_small is not None else None, split_threshold)


_COLOURS = {"recurrent": "tab:green", "split": "tab:orange", "novel": "tab:gray"}


def plot_matches(result: FeatureMatches, path: str | os.PathLike, *, bins: int = 40) -> str:
    """Nearest-neighbour cosine of the large SAE's features, stacked by category; with codes, a
    second panel of decoder cosine vs activation similarity."""
    has_act = result.activation_similarity is not None
    fig, axes = figure_row(2 if has_act else 1)
    lo = min(0.0, float(result.cosine.min()))
    data = [np.clip(result.cosine[result.category == c], lo, 1.0) for c in CATEGORIES]
    axes[0].hist(data, bins=bins, range=(lo, 1.0), stacked=True, color=[_COLOURS[c] for c in CATEGORIES],
                 label=[f"{c} ({result.counts[c]})" for c in CATEGORIES])
    axes[0].axvline(result.cos_threshold, color="k", linestyle="--", linewidth=1)
    axes[0].axvline(result.split_threshold, color="k", linestyle=":", linewidth=1)
    axes[0].set_xlabel("cosine to nearest feature of the smaller SAE")
    axes[0].set_ylabel("features of the larger SAE")
    axes[0].legend(fontsize="small")
    if has_act:
        for c in CATEGORIES:
            m = result.category == c
            axes[1].scatter(result.cosine[m], result.activation_similarity[m], s=6, color=_COLOURS[c], label=c)
        axes[1].set_xlabel("decoder cosine")
        axes[1].set_ylabel("activation similarity")
        axes[1].legend(fontsize="small")
    return save_figure(fig, path, dpi=_PNG_DPI)


# ----------------------------------------------------------------------------- 6. cross-domain


@dataclass(eq=False)
class CrossDomainMatches:
    """Best match in SAE b (another corpus) of selected features of SAE a (Table 4, Fig. 10)."""

    features: np.ndarray
    """``[m]`` int64 feature ids of SAE a that were matched."""
    match: np.ndarray
    """``[m]`` int64 best-matching feature of SAE b (max decoder cosine)."""
    cosine: np.ndarray
    """``[m]`` float64 decoder cosine of the match (the max cosine of Fig. 10)."""
    activation_similarity: np.ndarray | None
    """``[m]`` float64 activation similarity of each match on the shared documents, or None."""
    bin_edges: np.ndarray
    """Histogram bin edges of ``cosine``."""
    counts: np.ndarray
    """int64 histogram counts of ``cosine`` (Fig. 10)."""
    mean_cosine: float
    """Mean of ``cosine``."""
    mean_activation_similarity: float | None
    """Mean of ``activation_similarity`` (None without codes)."""


def _doc_rows(shared_docs: Any) -> tuple[Any, Any]:
    if shared_docs is None:
        return None, None
    if isinstance(shared_docs, tuple):
        if len(shared_docs) != 2:
            raise ValueError("shared_docs must be a row-id array or a (rows_a, rows_b) pair")
        return shared_docs
    return shared_docs, shared_docs


def cross_domain_matches(W_a: Any, W_b: Any, *, features: Any = None, codes_a: Any = None, codes_b: Any = None,
                         shared_docs: Any = None, bins: int = 50, block_size: int = 4096,
                         device=None) -> CrossDomainMatches:
    """For each selected feature ``i`` of SAE a (trained on corpus A), the feature of SAE b
    (corpus B) with the largest decoder cosine (paper appendix C, Fig. 10, Table 4).

    The cosine is taken in the input (embedding) space: each SAE was standardised with its
    own corpus's statistics, so a TopKSAE contributes :meth:`~fastsae.TopKSAE.feature_directions`
    (``W_dec · diag(std)``, normalised), not its ``W_dec``. Raw matrices are used as given and
    must already be input-space directions (e.g. ``sae.feature_directions()``).

    ``features``: ids of SAE a to match (default all). With ``codes_a`` and ``codes_b`` (both
    SAEs' codes on documents they share, e.g. cross-posted papers) the activation similarity
    of each match is computed as in :func:`activation_similarity`. ``shared_docs`` picks those
    documents: None (row ``d`` of both codes is the same document), one row-id array used for
    both, or a pair ``(rows_a, rows_b)`` of equal length aligning the two.
    """
    bins = _positive_int(bins, "bins")
    block_size = _positive_int(block_size, "block_size")
    if (codes_a is None) != (codes_b is None):
        raise ValueError("give both codes_a and codes_b (codes on the same shared documents), or neither")
    if shared_docs is not None and codes_a is None:
        raise ValueError("shared_docs selects rows of codes_a/codes_b, which were not given")
    a, b = _prepared([(W_a, "W_a"), (W_b, "W_b")], device, input_space=True)
    feats = np.arange(a.shape[0], dtype=np.int64) if features is None else _ids(features, "features", a.shape[0])
    if feats.size == 0:
        raise ValueError("features selects no feature of W_a")
    match, cosine = _nn1(b, a[torch.from_numpy(feats).to(a.device)], block_size)
    act = None
    if codes_a is not None:
        rows_a, rows_b = _doc_rows(shared_docs)
        ca = _select_docs(_codes(codes_a, "codes_a"), rows_a, "shared_docs (rows of codes_a)")
        cb = _select_docs(_codes(codes_b, "codes_b"), rows_b, "shared_docs (rows of codes_b)")
        act = _activation_similarity(ca, cb, np.stack([feats, match], axis=1), 1 << 24).similarity
    counts, edges = np.histogram(np.clip(cosine, -1.0, 1.0), bins=bins, range=(-1.0, 1.0))
    return CrossDomainMatches(feats, match, cosine, act, edges, counts.astype(np.int64), float(cosine.mean()),
                              None if act is None else float(act.mean()))


def plot_cross_domain(result: CrossDomainMatches, path: str | os.PathLike, *, bins: int = 50) -> str:
    """Fig. 10: histogram of the max cross-domain cosine; with activation similarities, a second
    panel of cosine vs activation similarity (Table 4's two columns)."""
    has_act = result.activation_similarity is not None
    fig, axes = figure_row(2 if has_act else 1)
    lo = min(0.0, float(result.cosine.min()))
    axes[0].hist(np.clip(result.cosine, lo, 1.0), bins=bins, range=(lo, 1.0), color="tab:red")
    axes[0].set_xlabel("max cosine similarity to the other domain's SAE")
    axes[0].set_ylabel("features")
    axes[0].set_title(f"{result.features.size} features, mean {result.mean_cosine:.2f}")
    if has_act:
        axes[1].scatter(result.cosine, result.activation_similarity, s=8, color="tab:red")
        axes[1].set_xlabel("decoder cosine")
        axes[1].set_ylabel("activation similarity (shared documents)")
    return save_figure(fig, path, dpi=_PNG_DPI)
