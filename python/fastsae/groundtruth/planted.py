"""Planted-feature embedding corpora with known feature families, and recovery metrics.

The paper (section 4.2) finds *feature families* in SAEs trained on text embeddings: a dense
"parent" feature and sparser "child" features that all co-occur with the parent but rarely
with one another. To test training and the family search end to end, this module generates
embeddings from a known sparse dictionary with exactly that structure, and measures how much
of it a trained SAE (or a family search on its codes) recovers.

* :func:`planted_embeddings` -- a :class:`PlantedCorpus`: embeddings, the true unit feature
  directions, the true sparse activations, the families and the isolated features.
* :func:`planted_codes_from_corpus` -- the true activations as top-k style codes
  (``indices``, ``values``; value 0 = padding), to run the co-occurrence / family pipeline on
  exact ground truth.

How much of it a trained SAE recovers is measured in :mod:`fastsae.groundtruth.recovery`.

Generative model of :func:`planted_embeddings`
----------------------------------------------
There are ``T = n_families + n_isolated`` *topics*. A family topic owns a parent feature and
``c`` child features (``c`` drawn per family from ``children_per_family``); an isolated topic
owns one feature. Topic ``t`` has probability ``p_t`` proportional to ``1 / rank_t**zipf_alpha``,
the ranks a random permutation of ``1..T`` (so which topics are frequent is random, and
families and isolated features share one long-tailed law).

Each document draws ``m`` (uniform in ``topics_per_doc``) distinct topics, without replacement
with probabilities ``p`` (successive sampling, so a topic with a higher ``p_t`` is more
frequent). For a drawn family topic, with probability ``child_prob`` one child fires together
with the parent (children chosen by a Zipf(``zipf_alpha``) law over the family's children, the
first child the most frequent), otherwise the parent fires alone; when a child fires, with
probability ``child_cooccur_prob`` a second, different child of the same family fires too (so
children are *mostly* mutually exclusive). A drawn isolated topic fires its one feature. Every
active feature gets an independent coefficient ``0.25 + Exponential(mean 0.75)`` (positive,
mean 1). The embedding is ``x = sum_i a_i f_i + noise / sqrt(d) * N(0, I_d)`` (so the noise
vector has a root-mean-square norm of ``noise``).

True directions: parents and isolated features are independent uniformly random unit vectors;
child ``j`` of parent ``p`` is ``child_cosine * p + sqrt(1 - child_cosine**2) * u_j`` with
``u_j`` a random unit vector orthogonal to ``p``, so every child has cosine exactly
``child_cosine`` with its parent (and about ``child_cosine**2`` with its siblings): the mild
parent/child alignment of real SAE feature families, while every direction stays recoverable.

Feature ids are a random permutation of the layout (the id order carries no information).
Everything is a deterministic function of ``seed``; the structure (features, families,
topic law) does not depend on ``n_docs`` or ``noise``, and the activations do not depend on
``noise``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from numbers import Integral
from typing import Any, NamedTuple

import numpy as np
import scipy.sparse as sp

from .._checks import check_int, check_number

__all__ = [
    "PlantedCorpus",
    "TrueCodes",
    "planted_embeddings",
    "planted_codes_from_corpus",
]

_COEF_MIN = 0.25
_COEF_EXP_MEAN = 0.75
_DOC_CHUNK = 1 << 15


# --------------------------------------------------------------------------------------------
# Corpus
# --------------------------------------------------------------------------------------------


@dataclass
class PlantedCorpus:
    """Embeddings generated from a known sparse dictionary with planted feature families."""

    embeddings: np.ndarray
    """``[n_docs, d]`` float32 document embeddings (``activations @ features`` plus noise)."""
    features: np.ndarray
    """``[n_true, d]`` float32 true feature directions, each of unit norm."""
    activations: sp.csr_matrix
    """``[n_docs, n_true]`` float32 CSR matrix: row ``i`` holds the features active on
    document ``i`` (column indices, sorted) and their positive coefficients. Row ``i`` is
    document ``i``'s set of active features (see :meth:`active_features`)."""
    families: list[tuple[int, list[int]]]
    """The planted families, each ``(parent feature id, [child feature ids])``; children are
    listed from most to least frequent by construction (Zipf order within the family)."""
    isolated: list[int]
    """Feature ids of the isolated features (no parent, no children)."""
    parent_of: np.ndarray
    """``[n_true]`` int64: the parent feature id of each child, -1 for parents and isolated
    features."""
    topic_probabilities: np.ndarray
    """``[n_families + n_isolated]`` float64, sums to 1: the Zipf law over topics; entries
    ``0..n_families-1`` are the families (in the order of :attr:`families`), the rest the
    isolated features (in the order of :attr:`isolated`)."""
    child_probabilities: list[np.ndarray]
    """Per family, the probability of each child (aligned with that family's children) given
    that the family fires with a child."""
    params: dict[str, Any] = field(default_factory=dict)
    """The arguments :func:`planted_embeddings` was called with."""

    @property
    def n_docs(self) -> int:
        return int(self.embeddings.shape[0])

    @property
    def d(self) -> int:
        return int(self.embeddings.shape[1])

    @property
    def n_true(self) -> int:
        return int(self.features.shape[0])

    def active_features(self, doc: int) -> tuple[np.ndarray, np.ndarray]:
        """(feature ids int64, coefficients float32) active on document ``doc``, ids ascending."""
        if not -self.n_docs <= doc < self.n_docs:
            raise IndexError(f"document {doc} out of range for {self.n_docs} documents")
        doc %= self.n_docs
        a = self.activations
        lo, hi = a.indptr[doc], a.indptr[doc + 1]
        return a.indices[lo:hi].astype(np.int64), a.data[lo:hi].copy()


def _is_int(x: Any) -> bool:
    return isinstance(x, Integral) and not isinstance(x, bool)


def _int_range(value: Any, name: str, minimum: int) -> tuple[int, int]:
    """An int ``n`` or an inclusive ``(lo, hi)`` pair, validated to ``minimum <= lo <= hi``."""
    if _is_int(value):
        lo = hi = int(value)
    elif isinstance(value, (tuple, list)) and len(value) == 2 and all(_is_int(v) for v in value):
        lo, hi = int(value[0]), int(value[1])
    else:
        raise ValueError(f"{name} must be an int or an inclusive (lo, hi) pair of ints, got {value!r}")
    if lo < minimum:
        raise ValueError(f"{name} must be at least {minimum}, got {value!r}")
    if lo > hi:
        raise ValueError(f"{name}: lo must not exceed hi, got {value!r}")
    return lo, hi




def _zipf(n: int, alpha: float) -> np.ndarray:
    p = np.exp(-alpha * np.log(np.arange(1, n + 1, dtype=np.float64)))  # no overflow at large alpha
    return p / p.sum()


def _unit_rows(rng: np.random.Generator, n: int, d: int) -> np.ndarray:
    v = rng.standard_normal((n, d))
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def planted_embeddings(
    n_docs: int,
    d: int,
    *,
    n_families: int = 20,
    children_per_family: int | tuple[int, int] = (3, 8),
    n_isolated: int = 20,
    zipf_alpha: float = 1.0,
    child_prob: float = 0.7,
    child_cooccur_prob: float = 0.02,
    topics_per_doc: int | tuple[int, int] = (1, 3),
    child_cosine: float = 0.3,
    noise: float = 0.05,
    seed: int = 0,
) -> PlantedCorpus:
    """Embeddings from a planted dictionary with feature families (see the module docstring).

    ``n_docs`` documents of dimension ``d`` (``d >= 2``).

    * ``n_families``: number of families (a parent feature and its children).
    * ``children_per_family``: number of children per family, an int or an inclusive
      ``(lo, hi)`` range (drawn uniformly per family); at least 1.
    * ``n_isolated``: number of isolated features (neither parent nor child).
    * ``zipf_alpha``: exponent of the Zipf law over topics (families and isolated features)
      and over the children within a family; 0 = uniform.
    * ``child_prob``: probability that a drawn family fires one of its children with the
      parent (otherwise the parent fires alone).
    * ``child_cooccur_prob``: probability that a second child of the same family fires too.
    * ``topics_per_doc``: number of distinct topics per document, an int or an inclusive
      ``(lo, hi)`` range; ``hi`` may not exceed ``n_families + n_isolated``.
    * ``child_cosine``: cosine between each child direction and its parent, in ``[0, 1)``.
    * ``noise``: root-mean-square norm of the Gaussian noise vector added to each embedding.
    * ``seed``: a non-negative int; the result is a deterministic function of all arguments.

    Raises ``ValueError`` on invalid parameters.
    """
    n_docs = check_int(n_docs, "n_docs", min=1)
    d = check_int(d, "d", min=2)
    n_families = check_int(n_families, "n_families", min=0)
    n_isolated = check_int(n_isolated, "n_isolated", min=0)
    if n_families + n_isolated == 0:
        raise ValueError("need at least one family or isolated feature (n_families + n_isolated >= 1)")
    c_lo, c_hi = _int_range(children_per_family, "children_per_family", 1)
    zipf_alpha = check_number(zipf_alpha, "zipf_alpha", min=0.0)
    child_prob = check_number(child_prob, "child_prob", min=0.0, max=1.0)
    child_cooccur_prob = check_number(child_cooccur_prob, "child_cooccur_prob", min=0.0, max=1.0)
    n_topics = n_families + n_isolated
    t_lo, t_hi = _int_range(topics_per_doc, "topics_per_doc", 1)
    if t_hi > n_topics:
        raise ValueError(
            f"topics_per_doc allows {t_hi} topics per document but there are only "
            f"n_families + n_isolated = {n_topics} topics"
        )
    child_cosine = check_number(child_cosine, "child_cosine", min=0.0, max=1.0, max_open=True)
    noise = check_number(noise, "noise", min=0.0)
    seed = check_int(seed, "seed", min=0)
    params = dict(
        n_docs=n_docs, d=d, n_families=n_families, children_per_family=(c_lo, c_hi),
        n_isolated=n_isolated, zipf_alpha=zipf_alpha, child_prob=child_prob,
        child_cooccur_prob=child_cooccur_prob, topics_per_doc=(t_lo, t_hi),
        child_cosine=child_cosine, noise=noise, seed=seed,
    )  # fmt: skip

    # Independent streams: the structure does not depend on n_docs, the activations not on noise.
    rng_struct, rng_docs, rng_noise = (np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(3))

    # ---- structure: layout = [family 0: parent, children...] ... [isolated...] ----------------
    n_children = rng_struct.integers(c_lo, c_hi + 1, size=n_families)
    fam_start = np.concatenate([[0], np.cumsum(1 + n_children)]).astype(np.int64)
    n_true = int(fam_start[-1]) + n_isolated
    perm = rng_struct.permutation(n_true)  # layout position -> feature id

    layout = np.empty((n_true, d))
    parent_pos = fam_start[:-1]
    layout[parent_pos] = _unit_rows(rng_struct, n_families, d)
    layout[fam_start[-1]:] = _unit_rows(rng_struct, n_isolated, d)
    for f in range(n_families):
        p = layout[parent_pos[f]]
        u = rng_struct.standard_normal((int(n_children[f]), d))
        u -= np.outer(u @ p, p)
        u /= np.linalg.norm(u, axis=1, keepdims=True)
        layout[parent_pos[f] + 1 : fam_start[f + 1]] = child_cosine * p + math.sqrt(1.0 - child_cosine**2) * u
    layout /= np.linalg.norm(layout, axis=1, keepdims=True)
    features64 = np.empty_like(layout)
    features64[perm] = layout
    features = features64.astype(np.float32)

    topic_rank = rng_struct.permutation(n_topics) + 1  # 1 = most frequent
    topic_probabilities = _zipf(n_topics, zipf_alpha)[topic_rank - 1]
    child_probabilities = [_zipf(int(c), zipf_alpha) for c in n_children]

    families = [
        (int(perm[parent_pos[f]]), [int(i) for i in perm[parent_pos[f] + 1 : fam_start[f + 1]]])
        for f in range(n_families)
    ]
    isolated = [int(i) for i in perm[fam_start[-1] :]]
    parent_of = np.full(n_true, -1, dtype=np.int64)
    for par, ch in families:
        parent_of[ch] = par

    # Per topic: layout position of its (parent / isolated) feature; per family: child cdf table.
    topic_pos = np.concatenate([parent_pos, np.arange(fam_start[-1], n_true)]).astype(np.int64)
    max_c = int(n_children.max()) if n_families else 1
    child_cdf = np.ones((max(n_families, 1), max_c))
    for f, cp in enumerate(child_probabilities):
        child_cdf[f, : len(cp)] = np.cumsum(cp)
    log_p = -zipf_alpha * np.log(topic_rank)  # unnormalised log-probabilities (no underflow)

    # ---- documents, in fixed-size chunks (bounded memory, deterministic) ---------------------
    rows_all, cols_all, vals_all = [], [], []
    for start in range(0, n_docs, _DOC_CHUNK):
        n = min(_DOC_CHUNK, n_docs - start)
        m = rng_docs.integers(t_lo, t_hi + 1, size=n)
        # Gumbel top-m = sampling m topics without replacement with probabilities p.
        keys = log_p + rng_docs.gumbel(size=(n, n_topics))
        order = np.argsort(-keys, axis=1, kind="stable")[:, :t_hi]
        take = np.arange(t_hi)[None, :] < m[:, None]
        doc = np.broadcast_to(np.arange(start, start + n)[:, None], take.shape)[take]
        topic = order[take]
        rows = [doc]
        pos = [topic_pos[topic]]  # parent or isolated feature of each drawn topic

        fam = topic < n_families
        fdoc, ftop = doc[fam], topic[fam]
        r_child = rng_docs.random(len(ftop))
        r_which = rng_docs.random(len(ftop))
        r_second = rng_docs.random(len(ftop))
        r_other = rng_docs.random(len(ftop))
        has_child = r_child < child_prob
        nc = n_children[ftop] if n_families else np.zeros(0, dtype=np.int64)
        j1 = np.minimum((child_cdf[ftop] < r_which[:, None]).sum(axis=1), nc - 1)
        rows.append(fdoc[has_child])
        pos.append((parent_pos[ftop] + 1 + j1)[has_child])
        second = has_child & (r_second < child_cooccur_prob) & (nc >= 2)
        j2 = (j1 + 1 + np.floor(r_other * (nc - 1)).astype(np.int64)) % np.maximum(nc, 1)
        rows.append(fdoc[second])
        pos.append((parent_pos[ftop] + 1 + j2)[second])

        r = np.concatenate(rows)
        c = perm[np.concatenate(pos)]
        v = (_COEF_MIN + rng_docs.exponential(_COEF_EXP_MEAN, size=len(r))).astype(np.float32)
        rows_all.append(r)
        cols_all.append(c)
        vals_all.append(v)

    activations = sp.csr_matrix(
        (np.concatenate(vals_all), (np.concatenate(rows_all), np.concatenate(cols_all))),
        shape=(n_docs, n_true),
        dtype=np.float32,
    )
    activations.sum_duplicates()  # no duplicates exist; this sorts the indices of each row
    activations.sort_indices()

    # x = a @ F (+ noise), in float64 row chunks, stored as float32.
    embeddings = np.empty((n_docs, d), dtype=np.float32)
    a64, f64 = activations.astype(np.float64), features.astype(np.float64)
    for start in range(0, n_docs, _DOC_CHUNK):
        stop = min(start + _DOC_CHUNK, n_docs)
        block = a64[start:stop] @ f64
        if noise > 0:
            block += (noise / math.sqrt(d)) * rng_noise.standard_normal((stop - start, d))
        embeddings[start:stop] = block
    return PlantedCorpus(
        embeddings=embeddings,
        features=features,
        activations=activations,
        families=families,
        isolated=isolated,
        parent_of=parent_of,
        topic_probabilities=topic_probabilities,
        child_probabilities=child_probabilities,
        params=params,
    )


class TrueCodes(NamedTuple):
    """Ground-truth codes in top-k layout (unpacks as ``indices, values``)."""

    indices: np.ndarray
    """``[n_docs, k]`` int64 true feature ids."""
    values: np.ndarray
    """``[n_docs, k]`` float32 coefficients; 0 marks padding (whose index repeats the row's
    first id, a valid id)."""


def planted_codes_from_corpus(corpus: PlantedCorpus, *, k: int | None = None) -> TrueCodes:
    """The corpus's true sparse codes as (indices, values), rows sorted by value descending.

    ``k`` is the row width: by default the largest number of active features of any document;
    a larger ``k`` pads more, a smaller one raises ``ValueError``. Padding entries have value 0
    and repeat the row's first (largest) id, so every index is a valid feature id.
    """
    a = sp.csr_matrix(corpus.activations)
    n_docs = a.shape[0]
    counts = np.diff(a.indptr)
    k_max = int(counts.max()) if n_docs else 0
    if k is None:
        k = k_max
    else:
        k = check_int(k, "k", min=0)
        if k < k_max:
            raise ValueError(f"k={k} is smaller than the largest number of active features ({k_max})")
    if np.any(a.data <= 0):
        raise ValueError("activations must be positive (value 0 is reserved for padding)")
    indices = np.zeros((n_docs, k), dtype=np.int64)
    values = np.zeros((n_docs, k), dtype=np.float32)
    rows = np.repeat(np.arange(n_docs), counts)
    slot = np.arange(len(rows)) - a.indptr[rows]
    indices[rows, slot] = a.indices
    values[rows, slot] = a.data
    # Sort each row by value descending, ties by id ascending; padding (value 0) goes last.
    order = np.lexsort((indices, -values), axis=-1) if k else np.zeros((n_docs, 0), dtype=np.int64)
    indices = np.take_along_axis(indices, order, axis=1)
    values = np.take_along_axis(values, order, axis=1)
    if k:
        pad = values == 0
        indices[pad] = np.broadcast_to(indices[:, :1], indices.shape)[pad]
    return TrueCodes(np.ascontiguousarray(indices), np.ascontiguousarray(values))
