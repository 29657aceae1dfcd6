"""The demo corpus's taxonomy: fields -> subfields -> topics, read from ``taxonomy.json``.

The file ships inside this package (``fastsae/groundtruth/taxonomy.json``; scikit-build-core's
``wheel.packages = ["python/fastsae"]`` copies the whole tree into the wheel) and is found with
``importlib.resources`` relative to this module, so it works from a wheel, a zip or a checkout.

* :func:`load_taxonomy` -- the :class:`Taxonomy` (nodes by level, parents, vocabularies).
* :func:`path_membership` -- which documents lie under which node, from their paths: the one
  membership used by :meth:`DemoCorpus.membership <fastsae.groundtruth.corpus.DemoCorpus.membership>`
  and every taxonomy recovery metric (:mod:`fastsae.groundtruth.recovery`).
"""

from __future__ import annotations

import json
import os
import string
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from numbers import Integral
from pathlib import Path
from types import MappingProxyType
from typing import Any, Mapping, Sequence

import numpy as np
import scipy.sparse as sp

__all__ = ["LEVELS", "TaxonomyNode", "Taxonomy", "load_taxonomy", "path_membership"]

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
    """The taxonomy shipped with fastsae (``fastsae/groundtruth/taxonomy.json``), or the JSON file at ``path``.

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
# Membership: documents -> nodes
# --------------------------------------------------------------------------------------------


def path_membership(paths: Sequence[Any], secondary: Sequence[Any] | None = None) -> tuple[list[tuple], sp.csr_matrix]:
    """Every node the documents lie under, and the ``[n_docs, n_nodes]`` 0/1 int64 CSR membership.

    A node is a path prefix (a tuple of names, 1 to 3 long): document ``i`` belongs to every
    prefix of ``paths[i]`` and (when given) of ``secondary[i]``; an empty or ``None`` path
    belongs to nothing, and a node reached through both paths counts once. Nodes are numbered in
    first-seen order, document by document, primary path before secondary (argmax ties over
    nodes resolve in that order).
    """
    node_ids: dict[tuple, int] = {}
    rows, cols = [], []
    for i, p in enumerate(paths):
        for q in (p, secondary[i]) if secondary is not None else (p,):
            if not q:
                continue
            for depth in range(1, len(q) + 1):
                rows.append(i)
                cols.append(node_ids.setdefault(tuple(q[:depth]), len(node_ids)))
    M = sp.csr_matrix((np.ones(len(rows), dtype=np.int64), (rows, cols)), shape=(len(paths), len(node_ids)))
    M.data[:] = 1  # duplicates were summed on construction
    return list(node_ids), M


def _membership(paths: Sequence[Any], secondary: Sequence[Any] | None, tax: Taxonomy, level: str) -> sp.csr_matrix:
    """``[n_docs, n_nodes(level)]`` 0/1 CSR matrix, columns in :attr:`TaxonomyNode.index` order;
    ``None`` paths belong to nothing. The level's columns of :func:`path_membership`."""
    depth = LEVELS.index(level)
    for src in (paths, secondary) if secondary is not None else (paths,):
        for i, p in enumerate(src):
            if p is not None and len(p) <= depth:
                raise ValueError(f"document {i}: path {list(p)} does not reach the {level} level")
    keys, M = path_membership(paths, secondary)
    col = np.array([tax.node(k[-1]).index if len(k) == depth + 1 else -1 for k in keys], dtype=np.int64)
    coo = M.tocoo()
    keep = col[coo.col] >= 0 if coo.nnz else np.zeros(0, dtype=bool)
    m = sp.csr_matrix((coo.data[keep], (coo.row[keep], col[coo.col[keep]])),
                      shape=(len(paths), len(tax.nodes(level))))
    m.data[:] = 1
    return m
