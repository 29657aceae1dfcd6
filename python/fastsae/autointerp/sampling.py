"""Which documents the Interpreter and the Predictor see for each feature (or family).

For a feature f (paper, appendix A.2):

* **top documents**: the ``n_top`` documents with the largest activations of f, strongest
  first, shown to the Interpreter with their activation values;
* **negatives**: ``n_negatives`` documents on which f is inactive, shown to the Interpreter:
  drawn at random (default), or the *hard* ones, nearest (cosine) to the mean embedding of the
  top documents, which forces a label that separates the feature from its near neighbours;
* **test set**: ``n_test_positive`` activating documents *not* among the top ones (drawn at
  random) and ``n_test_negative`` non-activating documents, disjoint from everything the
  Interpreter saw; the Predictor scores each separately against the ±1 truth.

For a family (section 4.2), "activating" means that some member (the parent or a child) is
active, and the top and test documents are sampled *across the children* in turn, so a dense
parent does not crowd out the children that give the family its meaning.

Every random choice uses a generator seeded by ``(seed, kind, key)``: a feature's documents
do not depend on which other features are in the run or in which order they finish, which is
what makes a resumed run identical to an uninterrupted one and runs of different backends
comparable.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np

NEGATIVE_MODES = ("random", "hard")


@dataclass(frozen=True)
class Unit:
    """One thing to interpret: a single feature or a feature family."""

    key: int
    """Feature id, or family index (position in the families list)."""
    members: tuple[int, ...]
    """Latents whose activation makes a document positive (the feature; parent + children)."""
    sources: tuple[int, ...]
    """Latents the top and test documents are drawn from (the feature; the children)."""
    family: int | None = None
    """Family index, or ``None`` for a single feature."""

    @property
    def kind(self) -> int:
        """0 for features, 1 for families (separates their random streams)."""
        return 0 if self.family is None else 1

    @property
    def parent(self) -> int:
        return self.members[0]

    @property
    def children(self) -> tuple[int, ...]:
        return self.members[1:]


@dataclass
class Selection:
    """The documents chosen for one unit (row indices into the corpus)."""

    top: list[int]
    """Documents shown to the Interpreter as activating, strongest first."""
    top_activations: list[float]
    """Their activations (for a family: the largest over its members)."""
    negatives: list[int]
    """Documents shown to the Interpreter as non-activating."""
    test_docs: list[int]
    """Documents the Predictor scores: the test positives, then the test negatives."""
    truth: list[int]
    """+1 / -1 for each of ``test_docs``: does the unit activate on it."""
    n_active: int
    """Documents on which the unit activates (any member for a family)."""
    skipped: str | None = None
    """Why the unit cannot be scored (too few activating or non-activating documents), else ``None``."""


class ActivationIndex:
    """Every (latent, document, activation) of a SparseCode, grouped by latent and sorted by
    activation (descending, ties by document id), for the latents in ``keep``.

    Built once in O(N k log(N k)); then a latent's activating documents are a slice."""

    def __init__(self, indices: np.ndarray, values: np.ndarray, n_latents: int, keep: Iterable[int] | None = None):
        self.indices = indices
        self.values = values
        self.n_latents = n_latents
        active = values > 0
        rows = np.nonzero(active)[0].astype(np.int64)
        lat = indices[active].astype(np.int64)
        val = values[active].astype(np.float64)
        if keep is not None:
            keep_arr = np.unique(np.fromiter(keep, dtype=np.int64))
            m = np.isin(lat, keep_arr)
            rows, lat, val = rows[m], lat[m], val[m]
        # A latent listed twice in a row (it should not be) counts once, at its largest value.
        o = np.lexsort((-val, rows, lat))
        rows, lat, val = rows[o], lat[o], val[o]
        first = np.ones(len(lat), dtype=bool)
        first[1:] = (lat[1:] != lat[:-1]) | (rows[1:] != rows[:-1])
        rows, lat, val = rows[first], lat[first], val[first]
        o = np.lexsort((rows, -val, lat))
        self._rows, self._vals = rows[o], val[o]
        counts = np.bincount(lat, minlength=n_latents)
        self._offsets = np.concatenate([[0], np.cumsum(counts)])

    def rows(self, latent: int) -> np.ndarray:
        """Documents where ``latent`` is active, by decreasing activation."""
        return self._rows[self._offsets[latent]:self._offsets[latent + 1]]

    def activations(self, latent: int) -> np.ndarray:
        return self._vals[self._offsets[latent]:self._offsets[latent + 1]]

    def count(self, latent: int) -> int:
        return int(self._offsets[latent + 1] - self._offsets[latent])

    def active_rows(self, members: Sequence[int]) -> np.ndarray:
        """Sorted documents where any of ``members`` is active."""
        if len(members) == 1:
            return np.sort(self.rows(members[0]))
        parts = [self.rows(m) for m in members]
        return np.unique(np.concatenate(parts)) if parts else np.zeros(0, dtype=np.int64)

    def activation(self, row: int, members: Sequence[int]) -> float:
        """The largest activation of ``members`` on document ``row`` (0 if none is active)."""
        idx, val = self.indices[row], self.values[row]
        hit = np.isin(idx, np.asarray(members)) & (val > 0)
        return float(val[hit].max()) if hit.any() else 0.0


@dataclass(frozen=True)
class SamplingConfig:
    """How many documents of each kind; see the module docstring."""

    n_top: int = 5
    """Top-activating documents shown to the Interpreter (paper: 5)."""
    n_negatives: int = 5
    """Non-activating documents shown to the Interpreter."""
    n_test_positive: int = 3
    """Activating documents (not among the top ones) the Predictor scores (paper: 3)."""
    n_test_negative: int = 3
    """Non-activating documents the Predictor scores (paper: 3)."""
    negatives: str = "random"
    """How the Interpreter's negatives are chosen: ``"random"`` or ``"hard"`` (needs embeddings)."""
    test_negatives: str = "random"
    """How the Predictor's negatives are chosen: ``"random"`` or ``"hard"``."""
    seed: int = 0
    """Seed of every random choice (combined with the unit's kind and key)."""


class Sampler:
    """Chooses the documents of each unit (see the module docstring)."""

    def __init__(self, index: ActivationIndex, usable: np.ndarray, cfg: SamplingConfig,
                 embeddings: np.ndarray | None = None):
        self.index = index
        self.usable = usable
        """bool [N]: documents that may be shown (blank texts may not)."""
        self.cfg = cfg
        self.embeddings = embeddings
        self.n_docs = len(usable)
        self._hard: dict[tuple[int, int], np.ndarray] = {}

    def _rng(self, unit: Unit, stream: int) -> np.random.Generator:
        return np.random.default_rng([self.cfg.seed, unit.kind, unit.key, stream])

    # -- activating documents ------------------------------------------------------------------
    def _usable_rows(self, latent: int) -> np.ndarray:
        r = self.index.rows(latent)
        return r[self.usable[r]]

    def top(self, unit: Unit) -> list[int]:
        """The unit's top documents (deterministic given the seed)."""
        n = self.cfg.n_top
        if len(unit.sources) == 1:
            return [int(r) for r in self._usable_rows(unit.sources[0])[:n]]
        # Round-robin over the sources (in a seeded order), each giving its strongest unused document.
        order = self._rng(unit, 0).permutation(len(unit.sources))
        return _round_robin([self._usable_rows(unit.sources[i]) for i in order], n, set())

    def _test_positives(self, unit: Unit, exclude: set[int]) -> list[int]:
        n = self.cfg.n_test_positive
        rng = self._rng(unit, 1)
        excl = np.fromiter(exclude, dtype=np.int64, count=len(exclude))
        if len(unit.sources) == 1:
            pool = self._usable_rows(unit.sources[0])
            pool = pool[~np.isin(pool, excl)]
            if len(pool) < n:
                return []
            return [int(r) for r in np.sort(rng.choice(pool, size=n, replace=False))]
        order = rng.permutation(len(unit.sources))
        pools = []
        for i in order:
            rows = self._usable_rows(unit.sources[i])
            rows = rows[~np.isin(rows, excl)]
            pools.append(rows[rng.permutation(len(rows))])
        out = _round_robin(pools, n, set(exclude))
        return out if len(out) == n else []

    # -- non-activating documents --------------------------------------------------------------
    def _random_negatives(self, rng: np.random.Generator, active: np.ndarray, n: int, exclude: set[int]) -> list[int]:
        if n == 0:
            return []
        bad = set(exclude)
        if len(active) <= self.n_docs // 2:
            # Sparse unit (the usual case): rejection sampling never materialises the complement.
            bad.update(int(r) for r in active)
            out: list[int] = []
            for _ in range(50):
                for r in rng.integers(0, self.n_docs, size=4 * n + 16):
                    r = int(r)
                    if r in bad or not self.usable[r]:
                        continue
                    out.append(r)
                    bad.add(r)
                    if len(out) == n:
                        return out
            # Few usable documents: fall through to the exact complement (same rng, still seeded).
        mask = self.usable.copy()
        mask[active] = False
        if exclude:
            mask[np.fromiter(exclude, dtype=np.int64, count=len(exclude))] = False
        pool = np.nonzero(mask)[0]
        if len(pool) < n:
            return []
        return [int(r) for r in rng.choice(pool, size=n, replace=False)]

    def needs_hard(self) -> bool:
        return "hard" in (self.cfg.negatives, self.cfg.test_negatives)

    def hard_pool_size(self) -> int:
        c = self.cfg
        return (c.n_negatives if c.negatives == "hard" else 0) + (c.n_test_negative if c.test_negatives == "hard" else 0)

    def prepare_hard(self, units: Sequence[Unit], *, chunk: int = 256, block_rows: int = 8192, progress=None) -> None:
        """Find the hard-negative pools of ``units`` in batched passes over the embeddings.

        For each unit: the non-activating usable documents with the largest cosine similarity
        to the mean (normalised) embedding of its top documents. Units are processed ``chunk``
        at a time as one matrix product per block of rows, so 10,000 features cost a few
        passes over the embeddings, not 10,000."""
        if self.embeddings is None:
            raise ValueError("hard negatives need embeddings (pass embeddings=[N, d])")
        E = self.embeddings
        m = self.hard_pool_size()
        todo = [u for u in units if (u.kind, u.key) not in self._hard]
        if m == 0 or not todo:
            return
        norms = np.empty(self.n_docs, dtype=np.float64)
        for s in range(0, self.n_docs, block_rows):
            b = np.asarray(E[s:s + block_rows], dtype=np.float32)
            norms[s:s + block_rows] = np.linalg.norm(b, axis=1)
        norms[norms == 0] = 1.0
        for c0 in range(0, len(todo), chunk):
            us = todo[c0:c0 + chunk]
            M = np.zeros((len(us), E.shape[1]), dtype=np.float32)
            pair_rows, pair_cols = [], []
            for j, u in enumerate(us):
                top = self.top(u)
                if top:
                    v = (np.asarray(E[np.sort(top)], dtype=np.float64) / norms[np.sort(top), None]).mean(axis=0)
                    nv = np.linalg.norm(v)
                    M[j] = v / nv if nv > 0 else v
                act = self.index.active_rows(u.members)
                pair_rows.append(act)
                pair_cols.append(np.full(len(act), j, dtype=np.int64))
            prow = np.concatenate(pair_rows) if pair_rows else np.zeros(0, dtype=np.int64)
            pcol = np.concatenate(pair_cols) if pair_cols else np.zeros(0, dtype=np.int64)
            order = np.argsort(prow, kind="stable")
            prow, pcol = prow[order], pcol[order]
            best_s = np.full((m, len(us)), -np.inf)
            best_r = np.full((m, len(us)), -1, dtype=np.int64)
            for s in range(0, self.n_docs, block_rows):
                b = np.asarray(E[s:s + block_rows], dtype=np.float32)
                S = (b @ M.T).astype(np.float64) / norms[s:s + len(b), None]
                S[~self.usable[s:s + len(b)]] = -np.inf
                lo, hi = np.searchsorted(prow, [s, s + len(b)])
                S[prow[lo:hi] - s, pcol[lo:hi]] = -np.inf  # activating documents are not negatives
                k = min(m, len(b))
                part = np.argpartition(-S, k - 1, axis=0)[:k]
                cand_s = np.concatenate([best_s, np.take_along_axis(S, part, axis=0)])
                cand_r = np.concatenate([best_r, part + s])
                # Highest similarity first; equal similarities go to the lower document id.
                o = np.lexsort((cand_r, -cand_s), axis=0)[:m]
                best_s = np.take_along_axis(cand_s, o, axis=0)
                best_r = np.take_along_axis(cand_r, o, axis=0)
            for j, u in enumerate(us):
                self._hard[(u.kind, u.key)] = best_r[np.isfinite(best_s[:, j]), j]
            if progress is not None:
                progress.update(len(us))

    # -- the whole selection -------------------------------------------------------------------
    def select(self, unit: Unit) -> Selection:
        """The documents of ``unit``; ``skipped`` says why when there are not enough."""
        c = self.cfg
        active = self.index.active_rows(unit.members)
        n_active = int(len(active))
        empty = Selection([], [], [], [], [], n_active)
        if n_active == 0:
            empty.skipped = "never activates: no document activates it"
            return empty
        need = c.n_top + c.n_test_positive
        n_usable_active = int(self.usable[active].sum())
        top = self.top(unit)
        positives = self._test_positives(unit, set(top)) if len(top) == c.n_top else []
        if len(top) < c.n_top or len(positives) < c.n_test_positive:
            empty.skipped = (f"too few activating documents: {n_usable_active} ({need} needed: {c.n_top} to label, "
                             f"{c.n_test_positive} to test)")
            return empty
        rng = self._rng(unit, 2)
        hard = self._hard.get((unit.kind, unit.key)) if self.needs_hard() else None
        if self.needs_hard() and hard is None:
            raise RuntimeError("prepare_hard() must run before select() when hard negatives are used")
        negatives: list[int] = []
        test_neg: list[int] = []
        if hard is not None:
            pool = [int(r) for r in hard]
            if len(pool) < self.hard_pool_size():
                empty.skipped = f"too few non-activating documents: {len(pool)} ({self.hard_pool_size()} needed)"
                return empty
            pool = [pool[i] for i in rng.permutation(len(pool))]  # both roles get equally hard ones
            if c.negatives == "hard":
                negatives, pool = pool[:c.n_negatives], pool[c.n_negatives:]
            if c.test_negatives == "hard":
                test_neg = pool[:c.n_test_negative]
        used = set(top) | set(positives) | set(negatives) | set(test_neg)
        if c.negatives == "random":
            negatives = self._random_negatives(rng, active, c.n_negatives, used)
            used |= set(negatives)
        if c.test_negatives == "random":
            test_neg = self._random_negatives(rng, active, c.n_test_negative, used)
        if len(negatives) < c.n_negatives or len(test_neg) < c.n_test_negative:
            n_free = int(self.usable.sum()) - n_usable_active
            empty.skipped = (f"too few non-activating documents: {n_free} "
                             f"({c.n_negatives + c.n_test_negative} needed)")
            return empty
        acts = [self.index.activation(r, unit.members) for r in top]
        return Selection(top=top, top_activations=acts, negatives=negatives,
                         test_docs=positives + test_neg,
                         truth=[1] * len(positives) + [-1] * len(test_neg), n_active=n_active)


def _round_robin(lists: list[np.ndarray], n: int, seen: set[int]) -> list[int]:
    """Up to ``n`` distinct rows, taking in turn from each list its first row not yet taken (nor
    in ``seen``); fewer when the lists run out."""
    pos = [0] * len(lists)
    out: list[int] = []
    seen = set(seen)
    while len(out) < n:
        progressed = False
        for j, rows in enumerate(lists):
            while pos[j] < len(rows) and int(rows[pos[j]]) in seen:
                pos[j] += 1
            if pos[j] < len(rows):
                r = int(rows[pos[j]])
                pos[j] += 1
                out.append(r)
                seen.add(r)
                progressed = True
                if len(out) == n:
                    break
        if not progressed:
            break
    return out
