"""A built-in demo corpus of scientific-abstract-like documents with a known topic hierarchy.

The paper trains SAEs on embeddings of arXiv abstracts and finds feature *families*: a dense
parent feature (a broad theme) with sparser children (its sub-topics). To show that end to end
without downloading anything, :func:`demo_corpus` writes short "title\\n\\nabstract" documents
from a hand-written taxonomy that ships with the package (``taxonomy.json``, read by
:mod:`fastsae.groundtruth.taxonomy`):

    field (5)  ->  subfield (21)  ->  topic (76)

Every node has its own vocabulary (terms, methods, sentence templates). A document of topic
``t`` (in subfield ``s``, field ``f``) mixes sentences from ``t``'s vocabulary, from ``s``'s and
``f``'s themes and generic scientific filler ("We present ...", "Our results suggest ..."), so
documents of one field share the field's vocabulary, documents of one subfield share more, and
the hierarchy is what an SAE's feature families should recover. A seeded fraction of documents
(``cross_topic``) mixes in a second, random topic, so the data is not trivially separable; both
paths are recorded.

* :func:`demo_corpus` -- a :class:`DemoCorpus`: titles, abstracts, texts, ground-truth paths.
(:func:`fastsae.groundtruth.recovery.topic_feature_recovery` measures how well an SAE's latents
recover its taxonomy.)

Determinism: every random draw comes from ``numpy.random.Generator(PCG64)`` streams derived
from ``seed`` with ``SeedSequence`` spawn keys, and only through ``Generator.random()`` (doubles),
turned into choices by this module's own arithmetic -- no Python ``hash()``, no set ordering, no
numpy sampling routine whose algorithm could change between versions. Document ``i`` depends
only on ``(seed, i)``, the taxonomy and the parameters, so ``demo_corpus(100)`` is a prefix of
``demo_corpus(1000)`` with the same arguments.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Iterator, Mapping, Sequence

import numpy as np

from .._checks import check_int, check_number
from .taxonomy import LEVELS, Taxonomy, TaxonomyNode, _as_taxonomy, _level, _membership, load_taxonomy

__all__ = ["DemoCorpus", "demo_corpus", "LEVELS", "Taxonomy", "TaxonomyNode", "load_taxonomy"]


# --------------------------------------------------------------------------------------------
# Corpus
# --------------------------------------------------------------------------------------------


@dataclass
class DemoCorpus:
    """Generated documents and their ground-truth positions in the taxonomy."""

    titles: list[str]
    """Document titles."""
    abstracts: list[str]
    """Document abstracts (several sentences each)."""
    texts: list[str]
    """``title + "\\n\\n" + abstract``: what gets embedded, as in the paper."""
    paths: list[tuple[str, str, str]]
    """Primary ground truth of each document: ``(field, subfield, topic)`` names."""
    secondary: list[tuple[str, str, str] | None]
    """For cross-topic documents, the path of the mixed-in second topic; ``None`` otherwise."""
    taxonomy: Taxonomy
    """The taxonomy the documents were generated from."""
    params: dict[str, Any] = field(default_factory=dict)
    """The arguments :func:`demo_corpus` was called with (``n_docs``, ``seed``, ...)."""

    def __len__(self) -> int:
        return len(self.texts)

    @property
    def n_docs(self) -> int:
        return len(self.texts)

    def records(self) -> Iterator[dict]:
        """One dict per document: ``{"text", "title", "abstract", "path": [f, s, t], "secondary"}``.

        ``secondary`` is ``[f, s, t]`` or ``None``; the dicts are what
        :meth:`fastsae.rundir.RunDir.write_corpus` stores.
        """
        for title, abstract, text, path, sec in zip(self.titles, self.abstracts, self.texts, self.paths, self.secondary):
            yield {"text": text, "title": title, "abstract": abstract, "path": list(path),
                   "secondary": list(sec) if sec is not None else None}

    def labels(self, level: str | int = "topic", *, secondary: bool = False) -> np.ndarray:
        """``[n_docs]`` int64 ids (:attr:`TaxonomyNode.index`) of each document's node at ``level``.

        With ``secondary=True``, the ids along the secondary path, ``-1`` for documents without one.
        """
        lv = LEVELS.index(_level(level))
        paths = self.secondary if secondary else self.paths
        return np.array([self.taxonomy.node(p[lv]).index if p is not None else -1 for p in paths], dtype=np.int64)

    def membership(self, level: str | int = "topic", *, include_secondary: bool = True) -> np.ndarray:
        """``[n_docs, n_nodes(level)]`` bool: document ``i`` belongs to node ``j``.

        A cross-topic document belongs to both of its paths unless ``include_secondary=False``.
        """
        return _membership(self.paths, self.secondary if include_secondary else None,
                           self.taxonomy, _level(level)).toarray()

    def counts(self, level: str | int = "topic") -> dict[str, int]:
        """Documents per node of ``level`` (primary paths), in id order."""
        lab = self.labels(level)
        c = np.bincount(lab, minlength=len(self.taxonomy.nodes(level)))
        return {n.name: int(c[n.index]) for n in self.taxonomy.nodes(level)}


class _Draw:
    """Choices from a Generator's doubles only (stable across numpy versions and platforms)."""

    __slots__ = ("_rng",)

    def __init__(self, seed: int, *key: int):
        self._rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence(seed, spawn_key=key)))

    def u(self) -> float:
        return float(self._rng.random())

    def index(self, n: int) -> int:
        return min(int(self.u() * n), n - 1)

    def choice(self, seq: Sequence[Any]) -> Any:
        return seq[self.index(len(seq))]

    def two(self, seq: Sequence[Any]) -> tuple[Any, Any]:
        """Two distinct entries (``seq`` has at least two)."""
        i = self.index(len(seq))
        j = self.index(len(seq) - 1)
        return seq[i], seq[j + (j >= i)]

    def sample(self, seq: Sequence[Any], k: int) -> list[Any]:
        """``k`` distinct entries in random order (partial Fisher-Yates)."""
        pool = list(seq)
        k = min(k, len(pool))
        for i in range(k):
            j = i + self.index(len(pool) - i)
            pool[i], pool[j] = pool[j], pool[i]
        return pool[:k]

    def shuffle(self, seq: list[Any]) -> list[Any]:
        return self.sample(seq, len(seq))

    def bernoulli(self, p: float) -> bool:
        return self.u() < p


def _cap(s: str) -> str:
    """Upper-case the first letter, unless the first word is already mixed-case (``fMRI``)."""
    if not s or not s[0].islower():
        return s
    first = s.split(" ", 1)[0]
    if any(c.isupper() for c in first[1:]):
        return s
    return s[0].upper() + s[1:]


class _Writer:
    """Fills templates for one document (primary topic, optional secondary topic)."""

    def __init__(self, tax: Taxonomy, draw: _Draw, topic: TaxonomyNode, second: TaxonomyNode | None):
        self.tax, self.d = tax, draw
        self.t = topic
        self.s = tax.node(topic.path[1])
        self.f = tax.node(topic.path[0])
        self.x = second
        self.xs = tax.node(second.path[1]) if second is not None else None

    def generic(self, kind: str) -> str:
        d = self.d
        t, t2 = d.two(self.t.terms)
        slots = {
            "t": t, "t2": t2,
            "s": d.choice(self.s.terms),
            "f": d.choice(self.f.terms),
            "m": d.choice(self.t.methods),
            "ms": d.choice(self.s.methods + self.f.methods),
            # Without a secondary topic these slots never appear in the chosen templates; the
            # draws still happen so the stream layout does not depend on the template.
            "x": d.choice(self.x.terms) if self.x is not None else t,
            "xs": d.choice(self.xs.terms) if self.xs is not None else t2,
            "n": 3 + d.index(58),
        }
        return _cap(d.choice(self.tax.generic[kind]).format_map(slots))

    def own(self, node: TaxonomyNode, template: str) -> str:
        term, term2 = self.d.two(node.terms)
        return _cap(template.format_map({"term": term, "term2": term2, "method": self.d.choice(node.methods)}))

    def own_sentences(self, node: TaxonomyNode, k: int) -> list[str]:
        return [self.own(node, tpl) for tpl in self.d.sample(node.sentences, k)]


def _write_document(tax: Taxonomy, draw: _Draw, topic: TaxonomyNode, second: TaxonomyNode | None) -> tuple[str, str]:
    w, d = _Writer(tax, draw, topic, second), draw
    # Title: generic, or for a cross-topic document sometimes one naming both topics.
    title = w.generic("cross_titles" if second is not None and d.bernoulli(0.5) else "titles")

    # Context (field and subfield themes), in random order: every document carries at least one
    # field sentence and one subfield sentence, so the hierarchy is always present in the text.
    context = w.own_sentences(w.f, 1) + w.own_sentences(w.s, 1 + d.bernoulli(0.2))
    context = d.shuffle(context)
    # The topic block: 2-3 topic sentences plus a method sentence at a random position. A
    # cross-topic document gives one of its topic sentences to the second topic and adds a
    # sentence linking the two.
    topical = w.own_sentences(w.t, 2 + d.bernoulli(0.25))
    if second is not None:
        topical[-1] = w.own(second, d.choice(second.sentences))
        topical.append(w.generic("cross"))
    topical = d.shuffle(topical)
    topical.insert(d.index(len(topical) + 1), w.generic("methods"))

    sentences = [w.generic("openers")] + context + topical
    if d.bernoulli(0.6):
        sentences.append(w.generic("results"))
    if d.bernoulli(0.35):
        sentences.append(w.generic("closers"))
    return title, " ".join(sentences)




def demo_corpus(
    n_docs: int = 3000,
    *,
    seed: int = 0,
    cross_topic: float = 0.05,
    imbalance: float = 0.3,
    taxonomy: Taxonomy | str | os.PathLike | Mapping | None = None,
) -> DemoCorpus:
    """Generate ``n_docs`` scientific-abstract-like documents with ground-truth topic paths.

    ``seed``: every draw derives from it (see the module docstring); same arguments, same corpus.
    ``cross_topic``: probability, per document, that a second topic (uniform over the others)
    is mixed in (it takes one topic sentence and adds a linking sentence; recorded in
    :attr:`DemoCorpus.secondary`); in ``[0, 1)``.
    ``imbalance``: topic frequencies follow ``1 / rank**imbalance`` with a seeded random ranking
    of the topics (``0`` = uniform), so, as in real corpora, some topics are much more common
    than others; the default gives a ratio of about 3.7 between the most and least frequent of 76
    topics.
    ``taxonomy``: a :class:`Taxonomy`, a JSON path or a mapping (default: the shipped one).

    The default of 3000 documents keeps the demo (embedding with a local model on two CPU cores
    included) within about a minute; pass more for a richer corpus.
    """
    n_docs = check_int(n_docs, "n_docs", min=1)
    seed = check_int(seed, "seed", min=0)
    cross_topic = check_number(cross_topic, "cross_topic", min=0.0, max=1.0, max_open=True)
    imbalance = check_number(imbalance, "imbalance", min=0.0)
    tax = _as_taxonomy(taxonomy)
    topics = tax.topics
    n_topics = len(topics)
    if cross_topic > 0 and n_topics < 2:
        raise ValueError("cross_topic > 0 needs a taxonomy with at least two topics")

    # Topic law: a seeded random ranking (stream key 0), weights 1/rank**imbalance.
    structure = _Draw(seed, 0)
    keys = np.array([structure.u() for _ in range(n_topics)])
    rank = np.empty(n_topics, dtype=np.float64)
    rank[np.argsort(keys, kind="stable")] = np.arange(1, n_topics + 1, dtype=np.float64)
    weights = rank ** -imbalance
    cdf = np.cumsum(weights) / weights.sum()

    titles, abstracts, texts, paths, secondary = [], [], [], [], []
    for i in range(n_docs):
        d = _Draw(seed, 1, i)  # one stream per document: prefixes are stable
        ti = min(int(np.searchsorted(cdf, d.u(), side="right")), n_topics - 1)
        second = None
        if d.bernoulli(cross_topic):
            j = d.index(n_topics - 1)
            second = topics[j + (j >= ti)]
        title, abstract = _write_document(tax, d, topics[ti], second)
        titles.append(title)
        abstracts.append(abstract)
        texts.append(f"{title}\n\n{abstract}")
        paths.append(topics[ti].path)
        secondary.append(second.path if second is not None else None)
    params = {"n_docs": n_docs, "seed": seed, "cross_topic": cross_topic, "imbalance": imbalance,
              "taxonomy": tax.name}
    return DemoCorpus(titles, abstracts, texts, paths, secondary, tax, params)
