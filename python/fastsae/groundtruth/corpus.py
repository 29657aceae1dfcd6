"""A built-in demo corpus of scientific-abstract-like documents with a known topic hierarchy.

The paper trains SAEs on embeddings of arXiv abstracts and finds feature *families*: a dense
parent feature (a broad theme) with sparser children (its sub-topics). To show that end to end
without downloading anything, :func:`demo_corpus` writes short "title\\n\\nabstract" documents
from a hand-written taxonomy that ships with the package (``taxonomy.json``):

    field (5)  ->  subfield (21)  ->  topic (76)

Every node has its own vocabulary (terms, methods, sentence templates). A document of topic
``t`` (in subfield ``s``, field ``f``) mixes sentences from ``t``'s vocabulary, from ``s``'s and
``f``'s themes and generic scientific filler ("We present ...", "Our results suggest ..."), so
documents of one field share the field's vocabulary, documents of one subfield share more, and
the hierarchy is what an SAE's feature families should recover. A seeded fraction of documents
(``cross_topic``) mixes in a second, random topic, so the data is not trivially separable; both
paths are recorded.

* :func:`load_taxonomy` -- the :class:`Taxonomy` (nodes by level, parents, vocabularies).
* :func:`demo_corpus` -- a :class:`DemoCorpus`: titles, abstracts, texts, ground-truth paths.
* :func:`topic_feature_recovery` -- for every taxonomy node, the SAE latent whose firing best
  matches "the document belongs to this node" (F1), and the share of nodes recovered per level.

Determinism: every random draw comes from ``numpy.random.Generator(PCG64)`` streams derived
from ``seed`` with ``SeedSequence`` spawn keys, and only through ``Generator.random()`` (doubles),
turned into choices by this module's own arithmetic -- no Python ``hash()``, no set ordering, no
numpy sampling routine whose algorithm could change between versions. Document ``i`` depends
only on ``(seed, i)``, the taxonomy and the parameters, so ``demo_corpus(100)`` is a prefix of
``demo_corpus(1000)`` with the same arguments.
"""

from __future__ import annotations

import json
import math
import os
import string
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from numbers import Integral, Real
from pathlib import Path
from types import MappingProxyType
from typing import Any, Iterator, Mapping, NamedTuple, Sequence

import numpy as np
import scipy.sparse as sp

from ._arrays import to_numpy

__all__ = [
    "LEVELS",
    "TaxonomyNode",
    "Taxonomy",
    "DemoCorpus",
    "NodeMatch",
    "TopicRecovery",
    "load_taxonomy",
    "demo_corpus",
    "topic_feature_recovery",
]

LEVELS = ("field", "subfield", "topic")
"""The taxonomy's levels, broadest first."""

_NODE_SLOTS = frozenset({"term", "term2", "method"})
_GENERIC_SLOTS = frozenset({"t", "t2", "s", "f", "m", "ms", "x", "xs", "n"})
_GENERIC_KINDS = ("titles", "cross_titles", "openers", "methods", "results", "closers", "cross")
_CHILD_KEY = {"field": "subfields", "subfield": "topics"}


# --------------------------------------------------------------------------------------------
# Taxonomy
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TaxonomyNode:
    """One field, subfield or topic of the taxonomy."""

    name: str
    """Identifier, unique across the whole taxonomy (snake_case, e.g. ``"weak_lensing"``)."""
    label: str
    """Human-readable name (e.g. ``"Weak gravitational lensing"``)."""
    level: str
    """``"field"``, ``"subfield"`` or ``"topic"``."""
    index: int
    """Position among the nodes of its level: the id :meth:`DemoCorpus.labels` returns."""
    path: tuple[str, ...]
    """Names from the field down to this node (length 1, 2 or 3)."""
    children: tuple[str, ...]
    """Names of the child nodes (empty for topics)."""
    terms: tuple[str, ...]
    """Noun phrases of this node's vocabulary (fill ``{term}`` / ``{term2}`` slots)."""
    methods: tuple[str, ...]
    """Methods typical of this node (fill ``{method}`` slots)."""
    sentences: tuple[str, ...]
    """Sentence templates with slots ``{term}``, ``{term2}``, ``{method}`` from this node."""

    @property
    def parent(self) -> str | None:
        """Name of the parent node (``None`` for a field)."""
        return self.path[-2] if len(self.path) > 1 else None


class Taxonomy:
    """A fields -> subfields -> topics hierarchy with per-node vocabularies.

    Build one with :func:`load_taxonomy` (the package's ``taxonomy.json``, or your own file of
    the same format) or ``Taxonomy(dict)``. Nodes are immutable; ``generic`` holds the
    level-independent templates (titles, openers, method/result sentences, closers, cross-topic
    sentences).
    """

    def __init__(self, data: Mapping[str, Any]):
        if not isinstance(data, Mapping):
            raise TypeError(f"taxonomy data must be a mapping, got {type(data).__name__}")
        self.name: str = str(data.get("name", "taxonomy"))
        self.description: str = str(data.get("description", ""))
        self._data = data
        self.generic: Mapping[str, tuple[str, ...]] = MappingProxyType(_parse_generic(data.get("generic")))
        self._by_level: dict[str, list[TaxonomyNode]] = {lv: [] for lv in LEVELS}
        self._by_name: dict[str, TaxonomyNode] = {}
        fields = data.get("fields")
        if not isinstance(fields, list) or not fields:
            raise ValueError("taxonomy: 'fields' must be a non-empty list")
        for f in fields:
            self._add(f, "field", ())
        if not self._by_level["topic"]:
            raise ValueError("taxonomy: no topics")

    def _add(self, raw: Any, level: str, parent_path: tuple[str, ...]) -> None:
        where = "/".join(parent_path) or "fields"
        if not isinstance(raw, Mapping):
            raise ValueError(f"taxonomy: a {level} under {where} is not an object")
        name = raw.get("name")
        if not isinstance(name, str) or not name.strip():
            raise ValueError(f"taxonomy: a {level} under {where} has no 'name'")
        if name in self._by_name:
            raise ValueError(f"taxonomy: node name {name!r} is used twice (names must be unique)")
        path = parent_path + (name,)
        terms = _str_list(raw.get("terms"), f"{name}.terms", minimum=2)
        methods = _str_list(raw.get("methods"), f"{name}.methods", minimum=1)
        sentences = _str_list(raw.get("sentences"), f"{name}.sentences", minimum=1)
        for s in sentences:
            _check_slots(s, _NODE_SLOTS, f"{name}.sentences")
        child_key = _CHILD_KEY.get(level)
        children_raw = raw.get(child_key) if child_key else None
        if child_key and (not isinstance(children_raw, list) or not children_raw):
            raise ValueError(f"taxonomy: {level} {name!r} needs a non-empty '{child_key}' list")
        if not child_key and raw.get("subfields", raw.get("topics")) is not None:
            raise ValueError(f"taxonomy: topic {name!r} cannot have children")
        children = tuple(str(c.get("name")) if isinstance(c, Mapping) else "" for c in children_raw or ())
        node = TaxonomyNode(
            name=name,
            label=str(raw.get("label", name)),
            level=level,
            index=len(self._by_level[level]),
            path=path,
            children=children,
            terms=terms,
            methods=methods,
            sentences=sentences,
        )
        self._by_level[level].append(node)
        self._by_name[name] = node
        if child_key:
            child_level = LEVELS[LEVELS.index(level) + 1]
            for c in children_raw:
                self._add(c, child_level, path)

    # -- access --------------------------------------------------------------------------------
    @property
    def fields(self) -> list[TaxonomyNode]:
        return list(self._by_level["field"])

    @property
    def subfields(self) -> list[TaxonomyNode]:
        return list(self._by_level["subfield"])

    @property
    def topics(self) -> list[TaxonomyNode]:
        return list(self._by_level["topic"])

    def nodes(self, level: str | int | None = None) -> list[TaxonomyNode]:
        """Nodes of one level in id order (``None``: all levels, fields first)."""
        if level is None:
            return [n for lv in LEVELS for n in self._by_level[lv]]
        return list(self._by_level[_level(level)])

    def node(self, name: str | TaxonomyNode) -> TaxonomyNode:
        """The node called ``name`` (a :class:`TaxonomyNode` is returned as is, if it belongs here)."""
        key = name.name if isinstance(name, TaxonomyNode) else name
        try:
            return self._by_name[key]
        except (KeyError, TypeError):
            close = sorted(n for n in self._by_name if isinstance(key, str) and key.lower() in n)[:5]
            hint = f"; did you mean one of {close}?" if close else ""
            raise KeyError(f"taxonomy has no node {key!r}{hint}") from None

    def parent_of(self, node: str | TaxonomyNode) -> TaxonomyNode | None:
        """The parent node (``None`` for a field)."""
        p = self.node(node).parent
        return self._by_name[p] if p is not None else None

    def children_of(self, node: str | TaxonomyNode) -> list[TaxonomyNode]:
        return [self._by_name[c] for c in self.node(node).children]

    def path_of(self, node: str | TaxonomyNode) -> tuple[str, ...]:
        """Names from the field down to ``node``."""
        return self.node(node).path

    def topic_path(self, topic: str | TaxonomyNode) -> tuple[str, str, str]:
        """``(field, subfield, topic)`` of a topic node."""
        n = self.node(topic)
        if n.level != "topic":
            raise ValueError(f"{n.name!r} is a {n.level}, not a topic")
        return n.path  # type: ignore[return-value]

    def check_path(self, path: Sequence[str]) -> tuple[str, ...]:
        """``path`` as a tuple, after checking each name exists and is the child of the previous."""
        if isinstance(path, str) or not isinstance(path, Sequence) or not 1 <= len(path) <= len(LEVELS):
            raise ValueError(f"a path is a list of 1 to {len(LEVELS)} node names, got {path!r}")
        path = tuple(path)
        for depth, name in enumerate(path):
            n = self.node(name)
            if n.level != LEVELS[depth]:
                raise ValueError(f"path {list(path)}: {name!r} is a {n.level}, expected a {LEVELS[depth]}")
            if n.path != path[: depth + 1]:
                raise ValueError(f"path {list(path)}: {name!r} belongs under {'/'.join(n.path[:-1])}")
        return path

    def to_dict(self) -> dict:
        """The raw data this taxonomy was built from (JSON-serialisable)."""
        return json.loads(json.dumps(self._data))

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name in self._by_name

    def __len__(self) -> int:
        return len(self._by_name)

    def __repr__(self) -> str:
        counts = ", ".join(f"{len(self._by_level[lv])} {lv}s" for lv in LEVELS)
        return f"Taxonomy({self.name!r}: {counts})"


def _level(level: str | int) -> str:
    if isinstance(level, Integral) and not isinstance(level, bool) and 0 <= int(level) < len(LEVELS):
        return LEVELS[int(level)]
    if isinstance(level, str):
        lv = level.lower().rstrip("s")
        if lv in LEVELS:
            return lv
    raise ValueError(f"level must be one of {LEVELS} (or 0, 1, 2), got {level!r}")


def _str_list(value: Any, what: str, *, minimum: int) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
        raise ValueError(f"taxonomy: {what} must be a list of non-empty strings")
    if len(value) < minimum:
        raise ValueError(f"taxonomy: {what} needs at least {minimum} entries, has {len(value)}")
    return tuple(value)


def _check_slots(template: str, allowed: frozenset, what: str) -> None:
    try:
        names = {f for _, f, _, _ in string.Formatter().parse(template) if f is not None}
    except ValueError as e:
        raise ValueError(f"taxonomy: {what}: malformed template {template!r} ({e})") from None
    bad = names - allowed
    if bad:
        raise ValueError(f"taxonomy: {what}: template {template!r} uses unknown slots {sorted(bad)}; "
                         f"allowed: {sorted(allowed)}")


def _parse_generic(raw: Any) -> dict[str, tuple[str, ...]]:
    if not isinstance(raw, Mapping):
        raise ValueError("taxonomy: 'generic' must be an object of template lists")
    out = {}
    for kind in _GENERIC_KINDS:
        out[kind] = _str_list(raw.get(kind), f"generic.{kind}", minimum=1)
        for s in out[kind]:
            _check_slots(s, _GENERIC_SLOTS, f"generic.{kind}")
    return out


@lru_cache(maxsize=1)
def _default_taxonomy() -> Taxonomy:
    text = resources.files(__package__).joinpath("taxonomy.json").read_text(encoding="utf-8")
    return Taxonomy(json.loads(text))


def load_taxonomy(path: str | os.PathLike | None = None) -> Taxonomy:
    """The taxonomy shipped with fastsae (``fastsae/taxonomy.json``), or the JSON file at ``path``.

    The file format is the one of the shipped file: ``{"generic": {...templates...},
    "fields": [{"name", "label", "terms", "methods", "sentences", "subfields": [... "topics":
    [...]]}]}``; names must be unique across the taxonomy and templates may use only the slots
    documented in the shipped file's ``description``.
    """
    if path is None:
        return _default_taxonomy()
    p = Path(path)
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ValueError(f"{p}: not valid JSON ({e})") from None
    return Taxonomy(data)


def _as_taxonomy(taxonomy: Any) -> Taxonomy:
    if taxonomy is None:
        return load_taxonomy()
    if isinstance(taxonomy, Taxonomy):
        return taxonomy
    if isinstance(taxonomy, (str, os.PathLike)):
        return load_taxonomy(taxonomy)
    if isinstance(taxonomy, Mapping):
        return Taxonomy(taxonomy)
    raise TypeError(f"taxonomy must be a Taxonomy, a path or a mapping, got {type(taxonomy).__name__}")


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


def _check_int(value: Any, name: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, Integral):
        raise ValueError(f"{name} must be an int, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be at least {minimum}, got {value}")
    return int(value)


def _check_real(value: Any, name: str, lo: float, hi: float | None, *, hi_open: bool) -> float:
    if isinstance(value, bool) or not isinstance(value, Real) or not math.isfinite(float(value)):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    v = float(value)
    if v < lo or (hi is not None and (v > hi or (hi_open and v == hi))):
        rng = f"[{lo}, {hi})" if hi_open else (f"[{lo}, {hi}]" if hi is not None else f">= {lo}")
        raise ValueError(f"{name} must be in {rng}, got {value!r}")
    return v


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
    n_docs = _check_int(n_docs, "n_docs", 1)
    seed = _check_int(seed, "seed", 0)
    cross_topic = _check_real(cross_topic, "cross_topic", 0.0, 1.0, hi_open=True)
    imbalance = _check_real(imbalance, "imbalance", 0.0, None, hi_open=False)
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


# --------------------------------------------------------------------------------------------
# Ground-truth recovery
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


def _membership(paths: Sequence[Any], secondary: Sequence[Any] | None, tax: Taxonomy, level: str) -> sp.csr_matrix:
    """``[n_docs, n_nodes(level)]`` 0/1 CSR matrix; ``None`` paths belong to nothing."""
    depth = LEVELS.index(level)
    rows, cols = [], []
    for src in (paths, secondary) if secondary is not None else (paths,):
        for i, p in enumerate(src):
            if p is None:
                continue
            if len(p) <= depth:
                raise ValueError(f"document {i}: path {list(p)} does not reach the {level} level")
            rows.append(i)
            cols.append(tax.node(p[depth]).index)
    m = sp.csr_matrix((np.ones(len(rows), dtype=np.int64), (rows, cols)),
                      shape=(len(paths), len(tax.nodes(level))))
    m.data[:] = 1  # a document whose two paths share a node counts once
    return m


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
    threshold = _check_real(threshold, "threshold", 0.0, 1.0, hi_open=False)
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
        n_latents = _check_int(n_latents, "n_latents", 1)
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
