"""Building, loading and running embedders: :func:`get_embedder` (one backend's config fields),
:func:`build_embedder` (the flat options of the CLI and :func:`embed_texts`), :func:`load_embedder`
(what :meth:`Embedder.save` wrote) and :func:`embed_texts`, the one-call convenience.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..io import atomic_save_npy
from .base import BACKENDS, DEFAULT_OPENAI_MODEL, EMBEDDER_FORMAT, Embedder
from .local import LocalConfig, LocalEmbedder
from .remote import OpenAIConfig, OpenAIEmbedder
from .tfidf import TfidfConfig, TfidfEmbedder

__all__ = ["build_embedder", "embed_texts", "get_embedder", "load_embedder"]

_CLASSES: dict[str, tuple[type, type]] = {
    "openai": (OpenAIEmbedder, OpenAIConfig),
    "local": (LocalEmbedder, LocalConfig),
    "tfidf": (TfidfEmbedder, TfidfConfig),
}


def _backend(name: Any) -> str:
    b = str(name).lower() if isinstance(name, str) else name
    if b not in _CLASSES:
        raise ValueError(f"unknown embedding backend {name!r}; choose one of {list(BACKENDS)}")
    return b


def get_embedder(backend: str = "local", *, api_key: str | None = None, **options: Any) -> Embedder:
    """A new :class:`Embedder` of ``backend`` (``"local"``, ``"openai"`` or ``"tfidf"``).

    ``options`` are the fields of that backend's config (:class:`LocalConfig`,
    :class:`OpenAIConfig`, :class:`TfidfConfig`); ``api_key`` (``openai`` only) is kept in memory.
    """
    b = _backend(backend)
    cls, cfg_cls = _CLASSES[b]
    names = {f.name for f in dataclasses.fields(cfg_cls)}
    unknown = sorted(set(options) - names)
    if unknown:
        raise TypeError(f"{b} embedder: unknown option(s) {unknown}; valid: {sorted(names)}")
    config = cfg_cls(**options)
    if b == "openai":
        return OpenAIEmbedder(config, api_key=api_key)
    if api_key is not None:
        raise ValueError("api_key applies to the openai backend only")
    return cls(config)


def load_embedder(directory: str | os.PathLike, *, api_key: str | None = None, **overrides: Any) -> Embedder:
    """The embedder :meth:`Embedder.save` wrote to ``directory`` (``overrides`` replace config fields,
    e.g. ``base_url=`` or ``device=``)."""
    d = Path(directory)
    path = d / "embedder.json"
    if not path.exists():
        raise FileNotFoundError(f"{d}: no saved embedder (embedder.json missing)")
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: corrupt ({e})") from None
    if meta.get("format") != EMBEDDER_FORMAT:
        raise ValueError(f"{path}: embedder format {meta.get('format')!r}; this fastsae reads {EMBEDDER_FORMAT}")
    cfg = dict(meta.get("config") or {})
    cfg.update(overrides)
    emb = get_embedder(meta.get("backend"), api_key=api_key, **cfg)
    if isinstance(emb, TfidfEmbedder):
        emb._load_state(d)
    elif meta.get("dim") is not None:
        emb._dim = int(meta["dim"])
    return emb


def build_embedder(
    backend: str = "local",
    *,
    model: str | None = None,
    batch_size: int | None = None,
    base_url: str | None = None,
    api_key: str | None = None,
    cache_path: str | os.PathLike | None = None,
    normalize: bool = True,
    timeout: float = 60.0,
    max_retries: int = 6,
    retry_base_delay: float = 1.0,
    dimensions: int | None = None,
    device: str | None = None,
    dim: int = 256,
    seed: int = 0,
) -> Embedder:
    """A new :class:`Embedder` from the flat options of :func:`embed_texts` (and ``fastsae
    embed``): each backend takes the ones that apply to it; one given (not ``None``) to a
    backend it does not apply to is a ``ValueError`` naming it. ``batch_size=None``: the
    backend's default."""
    b = _backend(backend)
    opts: dict[str, Any] = {"normalize": normalize}
    if batch_size is not None:
        opts["batch_size"] = batch_size
    misplaced = [n for n, v, ok in (("base_url", base_url, ("openai",)), ("api_key", api_key, ("openai",)),
                                     ("dimensions", dimensions, ("openai",)), ("device", device, ("local",)),
                                     ("cache_path", cache_path, ("openai", "local")),
                                     ("model", model, ("openai", "local"))) if v is not None and b not in ok]
    if misplaced:
        raise ValueError(f"option(s) {misplaced} do not apply to the {b} backend")
    cache = None if cache_path is None else str(cache_path)
    if b == "openai":
        opts.update(model=model or DEFAULT_OPENAI_MODEL, base_url=base_url, timeout=timeout,
                    max_retries=max_retries, retry_base_delay=retry_base_delay, dimensions=dimensions,
                    cache_path=cache)
    elif b == "local":
        opts.update(model=model, device=device, cache_path=cache)
    else:
        opts.update(dim=dim, seed=seed)
    return get_embedder(b, api_key=api_key, **opts)


def embed_texts(
    texts: Sequence[str],
    *,
    backend: str = "local",
    model: str | None = None,
    batch_size: int | None = None,
    base_url: str | None = None,
    api_key: str | None = None,
    cache_path: str | os.PathLike | None = None,
    out_path: str | os.PathLike | None = None,
    progress: bool = True,
    normalize: bool = True,
    timeout: float = 60.0,
    max_retries: int = 6,
    retry_base_delay: float = 1.0,
    dimensions: int | None = None,
    device: str | None = None,
    dim: int = 256,
    seed: int = 0,
    embedder: Embedder | None = None,
) -> np.ndarray:
    """Embed ``texts`` into a ``[N, d]`` float32 array (row ``i`` embeds ``texts[i]``).

    ``backend``: ``"local"`` (default; all-MiniLM-L6-v2 unless ``model`` names another
    sentence-transformers model; ``device``), ``"openai"`` (``model`` default
    ``text-embedding-3-small``; ``base_url`` / ``api_key`` default to ``OPENAI_BASE_URL`` /
    ``OPENAI_API_KEY``; ``timeout``, ``max_retries``, ``retry_base_delay``, ``dimensions``) or
    ``"tfidf"`` (fitted on ``texts``; ``dim``, ``seed``). ``cache_path``: an sqlite cache
    (openai, local) that makes re-runs free and interrupted runs resumable. ``out_path``: also
    write the array there as ``.npy`` (atomically). ``embedder``: use this :class:`Embedder`
    instead of building one (a tfidf one is fitted on ``texts`` if it is not yet).

    Raises ``ValueError`` for empty input, non-string or empty texts (naming the row) and
    options that do not apply to the backend; :class:`EmbeddingError` when the endpoint fails
    after its retries or returns the wrong count, mismatched dimensions or NaN.
    """
    if embedder is None:
        embedder = build_embedder(backend, model=model, batch_size=batch_size, base_url=base_url, api_key=api_key,
                                  cache_path=cache_path, normalize=normalize, timeout=timeout,
                                  max_retries=max_retries, retry_base_delay=retry_base_delay,
                                  dimensions=dimensions, device=device, dim=dim, seed=seed)
    if embedder.requires_fit and not embedder.is_fitted:
        embedder.fit(texts)
    out = embedder.embed(texts, progress=progress)
    if out_path is not None:
        atomic_save_npy(out_path, out)
    return out
