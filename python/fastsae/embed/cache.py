"""The embedding cache: vectors on disk (sqlite), keyed by a hash of model and text.

The storage (one keyed table, WAL, one committed transaction per write) is the one
:class:`fastsae._endpoint.SqliteCache` every remote client of fastsae uses.
"""

from __future__ import annotations

import hashlib
from typing import Iterable, Sequence

import numpy as np

from .._endpoint import SqliteCache

__all__ = ["EmbeddingCache"]


class EmbeddingCache(SqliteCache):
    """Embeddings on disk (sqlite), keyed by ``sha256(namespace + "\\0" + text)``.

    The namespace names the model (e.g. ``"openai:text-embedding-3-small"``), so one cache file
    can serve several models. Vectors are stored as little-endian float32 bytes, before any
    normalisation. Every :meth:`put_many` commits, so a killed run keeps what it has paid for.
    Only hashes and vectors are stored: no texts, no credentials.
    """

    FORMAT = "1"
    TABLE = "vectors"
    COLUMNS = "dim INTEGER NOT NULL, vec BLOB NOT NULL"
    VERSION_KEY = "format"
    VERSION = FORMAT
    WHAT = "embedding cache"

    @staticmethod
    def key(namespace: str, text: str) -> str:
        return hashlib.sha256(f"{namespace}\x00{text}".encode("utf-8")).hexdigest()

    def get_many(self, keys: Sequence[str]) -> dict[str, np.ndarray]:
        out: dict[str, np.ndarray] = {}
        for start in range(0, len(keys), 500):  # stay under sqlite's bound-parameter limit
            chunk = list(keys[start:start + 500])
            q = f"SELECT key, dim, vec FROM vectors WHERE key IN ({','.join('?' * len(chunk))})"
            for key, dim, blob in self._query(q, chunk):
                v = np.frombuffer(blob, dtype="<f4")
                if v.shape[0] != dim:
                    raise ValueError(f"{self.path}: corrupt entry {key[:12]}... ({v.shape[0]} values, dim {dim})")
                out[key] = v.astype(np.float32)
        return out

    def put_many(self, items: Iterable[tuple[str, np.ndarray]]) -> None:
        rows = [(k, int(v.shape[0]), np.asarray(v, dtype="<f4").tobytes()) for k, v in items]
        self._write("INSERT OR REPLACE INTO vectors VALUES (?, ?, ?)", rows)

    def __enter__(self) -> "EmbeddingCache":
        return self
