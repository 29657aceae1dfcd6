"""The one OpenAI-compatible endpoint base, shared by both remote clients (embeddings and chat):
credentials in the URL, endpoint resolution, the ``openai`` client, retries with backoff and
``Retry-After``, the sqlite cache and the token/cost accounting.

Credentials in an OpenAI-compatible endpoint URL:

Users paste URLs like ``http://user:KEY@host/v1`` or ``https://host/v1?api_key=KEY``. The
``openai`` client would send such a URL as given, and the HTTP stack logs every request URL at
INFO (``httpx``: ``HTTP Request: POST http://...``), so the key would land in logs, and from
the URL in saved configurations and error messages. fastsae's choice: *strip* the credentials
from the URL and use them as the API key (sent as ``Authorization: Bearer KEY``, the header the
OpenAI protocol authenticates with). The clean URL is the only one fastsae keeps, logs or
saves; the key lives in memory only.

From the user info, the password is the key (``user:KEY@``), or the user name when there is no
password (``KEY@``). From the query, the parameters in :data:`KEY_PARAMS` are the key; any
other query parameter is refused (the ``openai`` client appends its paths after the query,
so such a URL never reached the right endpoint). A fragment is dropped.
"""

from __future__ import annotations

import os
import random
import sqlite3
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping
from urllib.parse import parse_qsl, unquote, urlsplit, urlunsplit

__all__ = ["KEY_PARAMS", "split_credentials", "resolve_key"]

KEY_PARAMS = frozenset({"api_key", "api-key", "apikey", "key", "access_token", "token"})
"""Query parameters taken as an API key (case-insensitive) and removed from the URL."""


def split_credentials(url: str | None) -> tuple[str | None, str | None]:
    """``(url_without_credentials, key_or_None)``. Raises ``ValueError`` (never echoing the
    key) for a URL that is not ``http(s)://host...`` or that holds two different keys."""
    if url is None:
        return None, None
    if not isinstance(url, str) or not url.strip():
        raise ValueError("the base URL must be a non-empty string like http://host:port/v1")
    try:
        parts = urlsplit(url.strip())
        port = parts.port  # raises ValueError for a non-numeric port
    except ValueError:
        raise ValueError("the base URL is malformed (a bad port or bracket?); expected http(s)://host[:port]/path") \
            from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        shown = f"{parts.scheme}://{parts.hostname or ''}" if parts.scheme else "no scheme"
        raise ValueError(f"the base URL must start with http:// or https:// and name a host (got {shown}...)")
    keys: list[str] = []
    if parts.username or parts.password:
        keys.append(unquote(parts.password or parts.username or ""))
    kept = []
    for name, value in parse_qsl(parts.query, keep_blank_values=True):
        if name.lower() in KEY_PARAMS:
            keys.append(value)
        else:
            kept.append((name, value))
    keys = [k for k in keys if k]
    if kept:
        # The openai client appends its paths after the whole base URL, query included
        # (".../v1/?x=1embeddings"), so such a URL never worked: say so instead of mangling it.
        names = sorted({name for name, _ in kept})
        raise ValueError(f"the base URL has query parameters {names}; OpenAI-compatible clients cannot send them "
                         "(only an API key may be given there, as ?api_key=...)")
    if len(set(keys)) > 1:
        raise ValueError("the base URL holds two different API keys (in the user info and the query); keep one")
    host = parts.hostname
    if ":" in host:  # an IPv6 literal
        host = f"[{host}]"
    netloc = host + (f":{port}" if port is not None else "")
    clean = urlunsplit((parts.scheme, netloc, parts.path, "", ""))
    return clean, (keys[0] if keys else None)


def resolve_key(url_key: str | None, api_key: str | None) -> str | None:
    """The key to use given one from the URL and one passed explicitly (argument or environment
    variable, resolved by the caller): the URL's wins over the environment's default, but an
    explicit argument that disagrees with it is an error (``ValueError``, no key echoed)."""
    if url_key and api_key and url_key != api_key:
        raise ValueError("two different API keys: one in the base URL and one passed as api_key; keep one")
    return url_key or api_key


# --------------------------------------------------------------------------------------------
# The one OpenAI-compatible base: endpoint resolution, the client, retries, the sqlite cache and
# the accounting, shared by fastsae.embed.openai.OpenAIEmbedder and fastsae.autointerp.client.ChatClient.
# --------------------------------------------------------------------------------------------

__all__ += ["Accounting", "NO_KEY_PLACEHOLDER", "PRICES", "PRICES_DATE", "RETRYABLE_STATUS", "RetryPolicy",
            "SqliteCache", "Usage", "estimate_cost", "is_retryable", "make_client", "price_for",
            "resolve_endpoint", "retry_after", "sanitize_url"]

NO_KEY_PLACEHOLDER = "EMPTY"
"""The key sent to a custom ``base_url`` when none is configured (vLLM, Ollama, llama.cpp ignore it)."""


def sanitize_url(url: str | None) -> str | None:
    """``url`` without user info, query or fragment, safe to log or save (no embedded secrets)."""
    if not url:
        return url
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


def resolve_endpoint(base_url: str | None, api_key: str | None, *, no_key: Callable[[], Exception] | None = None
                     ) -> tuple[str | None, str]:
    """(base_url, api_key) from the arguments, else ``OPENAI_BASE_URL`` / ``OPENAI_API_KEY``.

    A custom ``base_url`` without a key gets :data:`NO_KEY_PLACEHOLDER`; OpenAI itself without
    a key raises ``no_key()`` (default: a ``ValueError``). Credentials inside the URL
    (``http://user:KEY@host/v1``, ``?api_key=KEY``) are stripped from the returned URL and
    returned as the key (:func:`split_credentials`); they take precedence over
    ``OPENAI_API_KEY``, and an ``api_key`` argument that differs from them is a ``ValueError``."""
    # A key inside the URL becomes the key and leaves the URL, which the HTTP stack logs at INFO.
    base_url, url_key = split_credentials(base_url or os.environ.get("OPENAI_BASE_URL") or None)
    api_key = resolve_key(url_key, api_key) or os.environ.get("OPENAI_API_KEY") or None
    if not api_key:
        if base_url:
            return base_url, NO_KEY_PLACEHOLDER
        raise (no_key() if no_key is not None else ValueError("no API key: pass api_key= or set OPENAI_API_KEY"))
    return base_url, api_key


def make_client(base_url: str | None, api_key: str, *, timeout: float, asynchronous: bool = False):
    """The official ``openai`` client (sync or async) with the SDK's own retries off: ours count
    attempts, honour budgets and back off with jitter the same way for every caller."""
    import openai

    cls = openai.AsyncOpenAI if asynchronous else openai.OpenAI
    return cls(base_url=base_url, api_key=api_key, max_retries=0, timeout=timeout)


# -- retries ---------------------------------------------------------------------------------

RETRYABLE_STATUS = frozenset({408, 409, 429})
"""HTTP statuses retried besides every 5xx (409: OpenAI's lock timeouts, retried by its SDK too)."""


def is_retryable(exc: BaseException) -> bool:
    """Whether a failed request is worth retrying: connection errors and timeouts, 408/409/429
    and 5xx. Other 4xx (a bad key, an unknown model) would fail the same way every time."""
    import openai

    if isinstance(exc, openai.APIConnectionError):  # includes APITimeoutError
        return True
    status = getattr(exc, "status_code", None)
    return isinstance(exc, openai.APIStatusError) and status is not None and (
        status in RETRYABLE_STATUS or status >= 500)


def retry_after(exc: BaseException) -> float | None:
    """Seconds a server asked to wait (``retry-after-ms`` or ``retry-after``), or ``None``."""
    resp = getattr(exc, "response", None)
    headers = getattr(resp, "headers", None)
    if headers is None:
        return None
    for name, scale in (("retry-after-ms", 1e-3), ("retry-after", 1.0)):
        v = headers.get(name)
        if v is None:
            continue
        try:
            return max(float(v) * scale, 0.0)
        except ValueError:
            continue  # an HTTP date: ignore, the exponential backoff applies
    return None


@dataclass
class RetryPolicy:
    """Exponential backoff with "equal jitter": retry ``r`` (0-based) waits a uniform draw in
    ``[cap / 2, cap]`` with ``cap = min(max_delay, base_delay * 2**r)`` -- spread out, with a
    floor -- or longer when the server's ``Retry-After`` says so (capped at ``max_delay``)."""

    max_retries: int
    base_delay: float
    max_delay: float

    def __post_init__(self) -> None:
        self._rng = random.Random()

    def gives_up(self, attempt: int) -> bool:
        """True when ``attempt`` (0-based) was the last one allowed."""
        return attempt >= self.max_retries

    def delay(self, attempt: int, exc: BaseException | None = None) -> float:
        cap = min(self.max_delay, self.base_delay * (2 ** attempt))
        delay = cap / 2 + self._rng.uniform(0, cap / 2)
        ra = retry_after(exc) if exc is not None else None
        if ra is not None:
            delay = max(delay, min(ra, self.max_delay))
        return delay


# -- the on-disk cache -----------------------------------------------------------------------


class SqliteCache:
    """A keyed sqlite table on disk: the base of the embedding and the response caches.

    Subclasses name their table (:attr:`TABLE`, :attr:`COLUMNS` after the ``key`` primary key)
    and the version stamp in the ``meta`` table (:attr:`VERSION_KEY` = :attr:`VERSION`). Every
    write is one committed transaction, so a killed run keeps everything it has paid for; WAL
    journaling lets a second process read while one writes. Safe to share between threads.
    Only what the subclass stores is written: never a key or an endpoint URL."""

    TABLE: str = ""
    COLUMNS: str = ""
    VERSION_KEY: str = "format"
    VERSION: str = "1"
    WHAT: str = "cache"
    """How errors name this file."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        hint = "; delete it or pass another cache_path"
        try:
            self._db = sqlite3.connect(str(self.path), timeout=30.0, check_same_thread=False)
            try:
                self._db.execute("PRAGMA journal_mode=WAL")
                self._db.execute("PRAGMA synchronous=NORMAL")
            except sqlite3.DatabaseError as e:
                if "not a database" in str(e) or "malformed" in str(e):
                    raise
                # e.g. a file system without shared memory: the default journal still works
            self._db.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
            self._db.execute(f"CREATE TABLE IF NOT EXISTS {self.TABLE} (key TEXT PRIMARY KEY, {self.COLUMNS})")
            row = self._db.execute("SELECT value FROM meta WHERE key = ?", (self.VERSION_KEY,)).fetchone()
            if row is None:
                self._db.execute("INSERT INTO meta VALUES (?, ?)", (self.VERSION_KEY, str(self.VERSION)))
            elif row[0] != str(self.VERSION):
                self._db.close()
                raise ValueError(f"{self.path}: {self.WHAT} {self.VERSION_KEY} {row[0]!r}, expected "
                                 f"{str(self.VERSION)!r}{hint}")
            self._db.commit()
        except sqlite3.DatabaseError as e:
            raise ValueError(f"{self.path}: not a usable fastsae {self.WHAT} ({e}){hint}") from None

    def _query(self, sql: str, params: Any = ()) -> list[tuple]:
        with self._lock:
            return self._db.execute(sql, params).fetchall()

    def _write(self, sql: str, rows: list[tuple]) -> None:
        with self._lock, self._db:  # one transaction, committed on exit
            self._db.executemany(sql, rows)

    def __len__(self) -> int:
        return int(self._query(f"SELECT COUNT(*) FROM {self.TABLE}")[0][0])

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


# -- accounting ------------------------------------------------------------------------------

PRICES_DATE = "2025-08"
"""When :data:`PRICES` was copied from the providers' public price lists (standard tier, no
batch or cached-input discounts). Prices change: pass ``prices=`` for an up-to-date table."""

PRICES: dict[str, tuple[float, float]] = {
    # model (or prefix of a dated snapshot): (USD per 1M input tokens, USD per 1M output tokens)
    "gpt-4o": (2.50, 10.00),
    "gpt-4o-mini": (0.15, 0.60),
    "gpt-4.1": (2.00, 8.00),
    "gpt-4.1-mini": (0.40, 1.60),
    "gpt-4.1-nano": (0.10, 0.40),
    "gpt-4-turbo": (10.00, 30.00),
    "gpt-4": (30.00, 60.00),
    "gpt-3.5-turbo": (0.50, 1.50),
    "gpt-5": (1.25, 10.00),
    "gpt-5-mini": (0.25, 2.00),
    "gpt-5-nano": (0.05, 0.40),
    "o1": (15.00, 60.00),
    "o1-mini": (1.10, 4.40),
    "o3": (2.00, 8.00),
    "o3-mini": (1.10, 4.40),
    "o4-mini": (1.10, 4.40),
}
"""Built-in prices (see :data:`PRICES_DATE`). A model matches its exact name or the longest
entry it starts with followed by ``-`` (``gpt-4o-2024-08-06`` is priced as ``gpt-4o``).
Models not listed cost 0 (a local server) unless the caller passes ``prices``."""


def price_for(model: str, prices: Mapping[str, tuple[float, float]] | None = None) -> tuple[float, float] | None:
    """(input, output) USD per 1M tokens for ``model``, or ``None`` if no price is known.

    ``prices`` entries take precedence over :data:`PRICES`."""
    table = dict(PRICES)
    if prices:
        table.update({k: (float(v[0]), float(v[1])) for k, v in prices.items()})
    if model in table:
        return table[model]
    best = None
    for name in table:
        if model.startswith(name + "-") and (best is None or len(name) > len(best)):
            best = name
    return table[best] if best is not None else None


def estimate_cost(model: str, prompt_tokens: int, completion_tokens: int,
                  prices: Mapping[str, tuple[float, float]] | None = None) -> float:
    """Estimated USD cost of one request (0 for models without a known price)."""
    p = price_for(model, prices)
    if p is None:
        return 0.0
    return (prompt_tokens * p[0] + completion_tokens * p[1]) / 1e6


@dataclass(frozen=True)
class Usage:
    """Tokens and estimated cost of one answer."""

    prompt_tokens: int = 0
    """Input tokens, as the endpoint reported them (estimated when it did not)."""
    completion_tokens: int = 0
    """Output tokens, likewise."""
    cost: float = 0.0
    """Estimated USD cost from the price table (0 for unpriced models)."""
    estimated: bool = False
    """True when the endpoint sent no usage and tokens were estimated (4 characters per token)."""

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def __add__(self, other: "Usage") -> "Usage":
        return Usage(self.prompt_tokens + other.prompt_tokens, self.completion_tokens + other.completion_tokens,
                     self.cost + other.cost, self.estimated or other.estimated)


@dataclass
class Accounting:
    """What this session sent and spent (cache hits count as hits, not spending)."""

    requests: int = 0
    """Answers obtained from the endpoint (retries not counted)."""
    attempts: int = 0
    """HTTP requests sent, retries included."""
    retries: int = 0
    """Attempts that failed and were retried."""
    cache_hits: int = 0
    """Answers served from the cache."""
    failures: int = 0
    """Requests that gave up (after retries or at a fatal error)."""
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost: float = 0.0
    """Estimated USD spent by this session."""

    @property
    def tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def record(self, usage: Usage) -> None:
        """Count one answer obtained from the endpoint."""
        self.requests += 1
        self.prompt_tokens += usage.prompt_tokens
        self.completion_tokens += usage.completion_tokens
        self.cost += usage.cost

    def as_dict(self) -> dict:
        return {"requests": self.requests, "attempts": self.attempts, "retries": self.retries,
                "cache_hits": self.cache_hits, "failures": self.failures,
                "prompt_tokens": self.prompt_tokens, "completion_tokens": self.completion_tokens,
                "tokens": self.tokens, "cost": round(self.cost, 8)}
