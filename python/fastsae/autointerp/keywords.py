"""The LLM-free baseline: label a feature by its most distinctive terms, predict by term match.

No key, no network, no cost. It sees exactly what the LLM Interpreter sees (the top documents
and the non-activating ones) plus a seeded background sample of the corpus, and is scored on
the same test documents, so its Pearson/F1 are a floor the LLM labels should clear.

**Interpreter.** Terms are unigrams and bigrams (scikit-learn's English analyzer, stop words
removed), counted once per document. For each term w present in the top documents the
weighted log-odds with an informative Dirichlet prior (Monroe, Colaresi & Quinn, 2008) compare
the fraction of activating documents containing w with the fraction of non-activating ones (the
Interpreter's negatives plus the background documents on which the feature is inactive), the
prior being w's corpus document frequency; the z-score ranks the terms. The label is the best
``n_keywords`` terms with z >= 1.96 (at least the best one), preferring terms shared by at
least two top documents, joined by commas, within the word limit.

**Predictor.** A document's match m is the z-weighted fraction of the label's terms it
contains, in [0, 1]. The threshold t is the midpoint between the mean match of the top
documents and that of the Interpreter's negatives (both seen while labelling, never the test
documents); the confidence maps m = 0 -> -1, m = t -> 0, m = 1 -> +1, linearly on each side.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np


def make_analyzer() -> Callable[[str], list[str]]:
    from sklearn.feature_extraction.text import CountVectorizer

    return CountVectorizer(lowercase=True, stop_words="english", ngram_range=(1, 2),
                           token_pattern=r"(?u)\b[^\W\d_][\w\-]+\b").build_analyzer()


@dataclass
class KeywordLabel:
    """A keyword Interpreter's answer, with what its Predictor needs."""

    label: str | None
    """The terms joined by ", " (``None`` when the top documents hold no usable term)."""
    reasoning: str
    """The terms with their z-scores and document counts, and the threshold."""
    weights: dict[str, float] = field(default_factory=dict)
    """Term -> z-score (> 0) of the label's terms."""
    threshold: float = 0.5
    """Match level mapped to confidence 0."""


class KeywordModel:
    """Term statistics of a corpus, for :class:`KeywordLabel` s (see the module docstring)."""

    def __init__(self, texts: Sequence[str], usable: np.ndarray, *, background: int = 5000, seed: int = 0,
                 n_keywords: int = 5, max_label_words: int = 8, prior_strength: float = 10.0,
                 min_z: float = 1.96):
        self.texts = texts
        self.min_z = min_z
        self.n_keywords = n_keywords
        self.max_label_words = max_label_words
        self.prior_strength = prior_strength
        self._analyze = make_analyzer()
        self._terms: dict[int, frozenset[str]] = {}
        rows = np.nonzero(usable)[0]
        rng = np.random.default_rng([seed, 3])
        if len(rows) > background:
            rows = np.sort(rng.choice(rows, size=background, replace=False))
        self.background = rows
        self.bg_df: Counter[str] = Counter()
        for r in rows:
            self.bg_df.update(self.terms(int(r)))
        self.n_bg = len(rows)

    def terms(self, row: int) -> frozenset[str]:
        """Distinct terms of document ``row`` (memoised: documents recur across features)."""
        t = self._terms.get(row)
        if t is None:
            t = frozenset(self._analyze(self.texts[row]))
            self._terms[row] = t
        return t

    def label(self, top: Sequence[int], negatives: Sequence[int], active_rows: np.ndarray) -> KeywordLabel:
        """Label the unit whose top documents are ``top``; ``active_rows`` (sorted) are all the
        documents it activates on (removed from the background)."""
        a_docs = [self.terms(r) for r in top]
        n_a = len(a_docs)
        a_df: Counter[str] = Counter()
        for t in a_docs:
            a_df.update(t)
        if not a_df:
            return KeywordLabel(None, "the activating documents contain no usable terms")
        # Non-activating side: the background minus documents where the unit is active, plus
        # the Interpreter's negatives (counted once even if also in the background).
        bg_active = self.background[np.isin(self.background, active_rows)]
        b_df = Counter({w: self.bg_df[w] for w in a_df})
        for r in bg_active:
            for w in self.terms(int(r)) & a_df.keys():
                b_df[w] -= 1
        bg_set = set(int(r) for r in self.background)
        extra = [r for r in negatives if int(r) not in bg_set]
        for r in extra:
            for w in self.terms(int(r)) & a_df.keys():
                b_df[w] += 1
        n_b = self.n_bg - len(bg_active) + len(extra)
        alpha = self.prior_strength
        scores: dict[str, float] = {}
        for w, a in a_df.items():
            pi = (self.bg_df[w] + 0.5) / (self.n_bg + 1.0)  # corpus base rate of the term
            b = max(b_df[w], 0)
            ya, na = a + alpha * pi, n_a - a + alpha * (1 - pi)
            yb, nb = b + alpha * pi, max(n_b - b, 0) + alpha * (1 - pi)
            delta = math.log(ya / na) - math.log(yb / nb)
            var = 1 / ya + 1 / na + 1 / yb + 1 / nb
            scores[w] = delta / math.sqrt(var)
        shared = 2 if n_a >= 2 else 1
        ranked = sorted(scores, key=lambda w: (-(a_df[w] >= shared), -scores[w], w))
        chosen: list[str] = []
        words = 0
        for w in ranked:
            if len(chosen) == self.n_keywords:
                break
            # Significant terms only (z >= 1.96, two-sided 5%); the single best positive term
            # still labels a feature whose evidence is weaker than that.
            if scores[w] <= 0 or (chosen and scores[w] < self.min_z):
                continue
            ws = set(w.split())
            if any(ws <= set(c.split()) or ws >= set(c.split()) for c in chosen):
                continue  # "dark" next to "dark matter" adds nothing
            if words + len(ws) > self.max_label_words:
                continue
            chosen.append(w)
            words += len(ws)
        if not chosen:
            return KeywordLabel(None, "no term is more frequent in the activating documents than elsewhere")
        weights = {w: scores[w] for w in chosen}
        kl = KeywordLabel(", ".join(chosen), "", weights)
        top_m = [self.match(kl, r) for r in top]
        neg_m = [self.match(kl, r) for r in negatives]
        t = 0.5 * (float(np.mean(top_m)) + (float(np.mean(neg_m)) if neg_m else 0.0))
        kl.threshold = min(max(t, 0.05), 0.95)
        kl.reasoning = ("distinctive terms by log-odds z-score (activating vs. non-activating documents): "
                        + "; ".join(f"{w} (z={scores[w]:.2f}, in {a_df[w]}/{n_a} activating, {max(b_df[w], 0)}/{n_b} "
                                    f"non-activating)" for w in chosen)
                        + f". Match threshold {kl.threshold:.3f}.")
        return kl

    def match(self, kl: KeywordLabel, row: int) -> float:
        """z-weighted fraction of the label's terms that document ``row`` contains."""
        total = sum(kl.weights.values())
        if total <= 0:
            return 0.0
        terms = self.terms(int(row))
        return sum(z for w, z in kl.weights.items() if w in terms) / total

    def predict(self, kl: KeywordLabel, row: int) -> float:
        """Confidence in [-1, 1] that the unit labelled ``kl`` activates on document ``row``."""
        m, t = self.match(kl, row), kl.threshold
        conf = (m - t) / (1 - t) if m >= t else (m - t) / t
        return float(min(1.0, max(-1.0, conf)))
