"""The ``openai`` backend: embeddings from any OpenAI-compatible ``/embeddings`` endpoint.

Batched, retried with exponential backoff and jitter on 429 / 408 / 409 / 5xx / timeouts /
connection errors (``Retry-After`` honoured), token accounting from ``usage``, and the on-disk
cache of :class:`fastsae.embed.Embedder`. URL handling, the client, the retry policy and the
cache storage are the ones :mod:`fastsae._endpoint` gives every remote client. The API key is
never written anywhere.
"""

from __future__ import annotations

import base64
import dataclasses
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from .._checks import check_int, check_number
from .._endpoint import RetryPolicy, is_retryable, make_client, resolve_endpoint, resolve_key, split_credentials
from .base import DEFAULT_OPENAI_MODEL, Embedder, EmbeddingError

__all__ = ["OpenAIConfig", "OpenAIEmbedder"]


@dataclass
class OpenAIConfig:
    """Settings of the ``openai`` backend (the API key is deliberately not one of them)."""

    model: str = DEFAULT_OPENAI_MODEL
    """Embedding model name (the paper: ``text-embedding-3-small``)."""
    base_url: str | None = None
    """API base URL, e.g. ``http://127.0.0.1:8000/v1``; ``None``: ``OPENAI_BASE_URL`` or OpenAI."""
    dimensions: int | None = None
    """Ask the model for shorter embeddings (``text-embedding-3-*`` only); ``None``: native size."""
    batch_size: int = 256
    """Texts per request (the API allows up to 2048 inputs and 300k tokens per request)."""
    timeout: float = 60.0
    """Seconds before one request counts as timed out (and is retried)."""
    max_retries: int = 6
    """Retries of one batch after a retryable failure (429, 408, 409, 5xx, timeout, connection)."""
    retry_base_delay: float = 1.0
    """Backoff before retry ``r`` (0-based): ``base * 2**r`` seconds, times a random factor in
    ``[0.5, 1]``, capped at ``retry_max_delay``; a server's ``Retry-After`` is honoured up to
    the cap."""
    retry_max_delay: float = 60.0
    """Upper bound of one backoff, seconds."""
    normalize: bool = True
    """L2-normalise each embedding (OpenAI's are unit-norm already)."""
    cache_path: str | None = None
    """sqlite cache file (see :class:`EmbeddingCache`); ``None``: no cache, no resumption."""

    def __post_init__(self):
        if not isinstance(self.model, str) or not self.model.strip():
            raise ValueError(f"model must be a non-empty string, got {self.model!r}")
        check_int(self.dimensions, "dimensions", min=1, none=True)
        check_int(self.batch_size, "batch_size", min=1, max=2048)
        check_number(self.timeout, "timeout", min=0, min_open=True)
        check_int(self.max_retries, "max_retries", min=0)
        check_number(self.retry_base_delay, "retry_base_delay", min=0)
        check_number(self.retry_max_delay, "retry_max_delay", min=0)
        if self.cache_path is not None:
            self.cache_path = str(self.cache_path)


class OpenAIEmbedder(Embedder):
    """Embeddings from an OpenAI-compatible ``/embeddings`` endpoint via the official client."""

    backend = "openai"

    def __init__(self, config: OpenAIConfig | None = None, *, api_key: str | None = None):
        config = config or OpenAIConfig()
        # A key inside base_url (user:KEY@host, ?api_key=KEY) moves to the key, so that the URL
        # kept in the config, embedder.json, logs and errors holds none (fastsae._endpoint).
        clean, url_key = split_credentials(config.base_url)
        if clean != config.base_url:
            config = dataclasses.replace(config, base_url=clean)
        super().__init__(config)
        # Held in memory only: never part of the config, embedder.json or the cache.
        self._api_key = resolve_key(url_key, api_key)
        self._client = None
        self._retry = RetryPolicy(config.max_retries, config.retry_base_delay, config.retry_max_delay)

    def describe(self) -> str:
        return f"openai {self.config.model}"

    def _namespace(self) -> str:
        dims = f":{self.config.dimensions}" if self.config.dimensions else ""
        return f"openai:{self.config.model}{dims}"

    def _get_client(self):
        if self._client is None:
            base_url, key = resolve_endpoint(self.config.base_url, self._api_key, no_key=lambda: EmbeddingError(
                "the openai backend needs an API key: set OPENAI_API_KEY (or pass api_key=...), or point "
                "base_url at a compatible server"))
            self._client = make_client(base_url, key, timeout=self.config.timeout)
        return self._client

    def _embed_batch(self, batch: list[str], rows: tuple[int, int]) -> np.ndarray:
        import openai

        client = self._get_client()
        cfg = self.config
        kwargs: dict[str, Any] = {"model": cfg.model, "input": batch, "encoding_format": "float"}
        if cfg.dimensions:
            kwargs["dimensions"] = cfg.dimensions
        where = f"texts {rows[0]}..{rows[1]}"
        attempt = 0
        while True:
            try:
                resp = client.embeddings.create(**kwargs)
                break
            except (openai.APIConnectionError, openai.APIStatusError) as e:
                status = getattr(e, "status_code", None)
                if not is_retryable(e):
                    hint = " (check OPENAI_API_KEY)" if status in (401, 403) else ""
                    raise EmbeddingError(f"embedding request for {where} failed with HTTP {status}{hint}: {e}") from e
                if self._retry.gives_up(attempt):
                    raise EmbeddingError(f"embedding request for {where} failed after {attempt + 1} attempts "
                                         f"({type(e).__name__}: {e})") from e
                delay = self._retry.delay(attempt, e)
                attempt += 1
                self.stats.retries += 1
                time.sleep(delay)
            except openai.APIError as e:  # e.g. a response that is not the embeddings protocol
                raise EmbeddingError(f"embedding request for {where} failed: {type(e).__name__}: {e}") from e
        self.stats.requests += 1
        usage = getattr(resp, "usage", None)
        if usage is not None:
            self.stats.prompt_tokens += int(getattr(usage, "prompt_tokens", 0) or 0)
            self.stats.total_tokens += int(getattr(usage, "total_tokens", 0) or 0)
        return self._parse(resp, len(batch), where)

    def _parse(self, resp: Any, n: int, where: str) -> np.ndarray:
        data = list(getattr(resp, "data", None) or [])
        if len(data) != n:
            raise EmbeddingError(f"the endpoint returned {len(data)} embeddings for a batch of {n} ({where})")
        order = [getattr(item, "index", i) for i, item in enumerate(data)]
        if sorted(order) != list(range(n)):
            raise EmbeddingError(f"the endpoint returned embedding indices {order[:10]}..., expected 0..{n - 1} "
                                 f"({where})")
        vecs: list[np.ndarray] = [None] * n  # type: ignore[list-item]
        for pos, item in zip(order, data):
            emb = item.embedding
            if isinstance(emb, str):  # a server that answered base64 despite encoding_format="float"
                v = np.frombuffer(base64.b64decode(emb), dtype="<f4")
            else:
                try:
                    v = np.asarray(emb, dtype=np.float64)
                except (TypeError, ValueError):
                    raise EmbeddingError(f"the endpoint returned a non-numeric embedding ({where})") from None
            if v.ndim != 1:
                raise EmbeddingError(f"the endpoint returned an embedding of shape {v.shape} ({where})")
            vecs[pos] = v.astype(np.float32)
        dims = {v.shape[0] for v in vecs}
        if len(dims) != 1:
            raise EmbeddingError(f"the endpoint returned embeddings of different sizes {sorted(dims)} ({where})")
        if self.config.dimensions and dims != {self.config.dimensions}:
            raise EmbeddingError(f"asked for {self.config.dimensions} dimensions, the endpoint returned "
                                 f"{dims.pop()} ({where})")
        return np.stack(vecs)
