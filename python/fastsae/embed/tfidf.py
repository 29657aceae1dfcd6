"""The ``tfidf`` backend: TF-IDF + truncated SVD (latent semantic analysis) fitted on the texts
themselves: no extra dependency, no model download, deterministic given ``seed``.
"""

from __future__ import annotations

import json
import os
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from .._checks import check_int, check_number
from ..io import atomic_save_npy, atomic_write_text
from .base import Embedder, _l2_normalize, _progress_bar
from .readers import _check_texts

__all__ = ["TfidfConfig", "TfidfEmbedder"]


@dataclass
class TfidfConfig:
    """Settings of the ``tfidf`` backend (TF-IDF -> truncated SVD -> L2 normalisation)."""

    dim: int = 256
    """SVD components (embedding dimension); capped at the number of documents and of terms."""
    seed: int = 0
    """Random state of the randomized SVD (same texts and seed, same embeddings)."""
    max_features: int | None = 50_000
    """Vocabulary size cap (most frequent terms); ``None``: no cap."""
    ngram_range: tuple[int, int] = (1, 2)
    """Word n-gram lengths (unigrams and bigrams by default)."""
    min_df: int = 1
    """Minimum number of documents a term must appear in."""
    max_df: float = 1.0
    """Maximum share of documents a term may appear in (1.0: no limit)."""
    sublinear_tf: bool = True
    """Use ``1 + log(tf)`` instead of raw counts."""
    stop_words: str | None = "english"
    """scikit-learn's English stop-word list, or ``None`` to keep every word."""
    normalize: bool = True
    """L2-normalise each embedding (after the SVD projection)."""
    batch_size: int = 4096
    """Texts per transform step (progress granularity)."""

    def __post_init__(self):
        check_int(self.dim, "dim", min=1)
        check_int(self.seed, "seed", min=0)
        check_int(self.max_features, "max_features", min=1, none=True)
        ng = tuple(self.ngram_range)
        if len(ng) != 2 or not all(isinstance(n, int) and not isinstance(n, bool) for n in ng) or not 1 <= ng[0] <= ng[1]:
            raise ValueError(f"ngram_range must be (lo, hi) with 1 <= lo <= hi, got {self.ngram_range!r}")
        self.ngram_range = (int(ng[0]), int(ng[1]))
        check_int(self.min_df, "min_df", min=1)
        check_number(self.max_df, "max_df", min=0, max=1, min_open=True)
        if self.stop_words not in (None, "english"):
            raise ValueError(f"stop_words must be 'english' or None, got {self.stop_words!r}")
        check_int(self.batch_size, "batch_size", min=1)


class TfidfEmbedder(Embedder):
    """TF-IDF + truncated SVD (LSA) fitted on a corpus: an offline, dependency-free stand-in.

    The transform is written out explicitly (term counts from a fixed vocabulary, optional
    ``1 + log``, idf weights, L2 row normalisation, projection on the SVD components, L2 again),
    so a saved and reloaded embedder reproduces it exactly, whatever the scikit-learn version.
    """

    backend = "tfidf"

    def __init__(self, config: TfidfConfig | None = None):
        super().__init__(config or TfidfConfig())
        self.vocabulary: list[str] | None = None
        self.idf: np.ndarray | None = None
        self.components: np.ndarray | None = None
        self._counter = None

    def describe(self) -> str:
        return f"tfidf {self.dim or self.config.dim}d"

    @property
    def requires_fit(self) -> bool:
        return True

    @property
    def is_fitted(self) -> bool:
        return self.components is not None

    def _vectorizer_params(self) -> dict:
        c = self.config
        return {"lowercase": True, "ngram_range": c.ngram_range, "stop_words": c.stop_words,
                "token_pattern": r"(?u)\b\w\w+\b"}

    def fit(self, texts: Sequence[str]) -> "TfidfEmbedder":
        from sklearn.decomposition import TruncatedSVD
        from sklearn.feature_extraction.text import TfidfVectorizer

        texts = _check_texts(texts)
        c = self.config
        vec = TfidfVectorizer(**self._vectorizer_params(), min_df=c.min_df, max_df=c.max_df,
                              max_features=c.max_features, sublinear_tf=c.sublinear_tf, norm="l2", use_idf=True,
                              smooth_idf=True, dtype=np.float64)
        try:
            X = vec.fit_transform(texts)
        except ValueError as e:  # e.g. "empty vocabulary; perhaps the documents only contain stop words"
            raise ValueError(f"tfidf: cannot fit on these texts: {e}") from None
        n_comp = min(c.dim, X.shape[0], X.shape[1])
        if n_comp < c.dim:
            warnings.warn(f"tfidf: dim={c.dim} exceeds what {X.shape[0]} texts with {X.shape[1]} terms support; "
                          f"using {n_comp} dimensions", stacklevel=2)
        svd = TruncatedSVD(n_components=n_comp, algorithm="randomized", n_iter=5, random_state=c.seed)
        svd.fit(X)
        self._set_state(list(vec.get_feature_names_out()), np.asarray(vec.idf_, dtype=np.float64),
                        np.asarray(svd.components_, dtype=np.float64))
        return self

    def _set_state(self, vocabulary: list[str], idf: np.ndarray, components: np.ndarray) -> None:
        from sklearn.feature_extraction.text import CountVectorizer

        if idf.shape != (len(vocabulary),) or components.ndim != 2 or components.shape[1] != len(vocabulary):
            raise ValueError(f"tfidf state is inconsistent: {len(vocabulary)} terms, idf {idf.shape}, "
                             f"components {components.shape}")
        self.vocabulary, self.idf, self.components = vocabulary, idf, components
        self._counter = CountVectorizer(**self._vectorizer_params(),
                                        vocabulary={t: i for i, t in enumerate(vocabulary)}, dtype=np.float64)
        self._dim = int(components.shape[0])

    def transform_tfidf(self, texts: Sequence[str]):
        """The sparse ``[N, n_terms]`` TF-IDF matrix (rows L2-normalised) of ``texts``."""
        from sklearn.preprocessing import normalize

        if not self.is_fitted:
            raise RuntimeError("the tfidf embedder is not fitted: call fit(texts) first (or load a saved one)")
        X = self._counter.transform(texts).astype(np.float64)
        if self.config.sublinear_tf:
            np.log(X.data, out=X.data)
            X.data += 1.0
        X = X.multiply(self.idf[None, :]).tocsr()
        return normalize(X, norm="l2", copy=False)

    def embed(self, texts: Sequence[str], *, progress: bool = True) -> np.ndarray:
        t0 = time.perf_counter()
        texts = _check_texts(texts)
        if not self.is_fitted:
            raise RuntimeError("the tfidf embedder is not fitted: call fit(texts) first (or load a saved one)")
        out = np.empty((len(texts), self._dim), dtype=np.float32)
        bs = self.config.batch_size
        with _progress_bar(len(texts), f"embed ({self.describe()})", progress) as bar:
            for start in range(0, len(texts), bs):
                chunk = texts[start:start + bs]
                z = np.asarray(self.transform_tfidf(chunk) @ self.components.T)
                out[start:start + len(chunk)] = _l2_normalize(z) if self.config.normalize else z
                bar.update(len(chunk))
        self.stats.texts += len(texts)
        self.stats.embedded += len(texts)
        self.stats.seconds += time.perf_counter() - t0
        return out

    def save(self, directory: str | os.PathLike) -> Path:
        if not self.is_fitted:
            raise RuntimeError("cannot save an unfitted tfidf embedder: call fit(texts) first")
        return super().save(directory)

    def _save_state(self, directory: Path) -> None:
        atomic_write_text(directory / "tfidf_vocabulary.json", json.dumps(self.vocabulary, ensure_ascii=False))
        atomic_save_npy(directory / "tfidf_idf.npy", self.idf)
        atomic_save_npy(directory / "tfidf_components.npy", self.components)

    def _load_state(self, directory: Path) -> None:
        try:
            vocab = json.loads((directory / "tfidf_vocabulary.json").read_text(encoding="utf-8"))
            idf = np.load(directory / "tfidf_idf.npy", allow_pickle=False)
            comps = np.load(directory / "tfidf_components.npy", allow_pickle=False)
        except FileNotFoundError as e:
            raise FileNotFoundError(f"{directory}: incomplete tfidf embedder ({e.filename} missing)") from None
        if not isinstance(vocab, list) or not all(isinstance(t, str) for t in vocab):
            raise ValueError(f"{directory}/tfidf_vocabulary.json: expected a list of terms")
        self._set_state(vocab, idf, comps)
