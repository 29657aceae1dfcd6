"""An async chat-completions client for any OpenAI-compatible endpoint: bounded concurrency,
retries with backoff, a per-request timeout, an on-disk response cache and cost accounting.

It wraps the official ``openai`` package (``AsyncOpenAI``), so OpenAI, vLLM, llama.cpp's
server, Ollama, LiteLLM and any other server speaking ``/v1/chat/completions`` work the same;
``base_url`` and ``api_key`` come from arguments or ``OPENAI_BASE_URL`` / ``OPENAI_API_KEY``.

* **Retries.** 429, 408, 409, 5xx, timeouts, connection errors and malformed bodies are retried
  with exponential backoff and jitter (a ``Retry-After`` header is honoured, capped at
  ``backoff_max``). Other 4xx (a bad key, an unknown model) are fatal at once: retrying them
  only burns time, and every later request would fail the same way.
* **Cache.** Every valid answer is stored in sqlite under a SHA-256 of (model, messages,
  sampling parameters, prompt version); asking the same again costs nothing and sends nothing.
  The cache never sees the API key or the endpoint URL (so a cache built against one server is
  reused against another serving the same model name).
* **Accounting.** Each answer carries its token usage and an estimated cost from
  :data:`PRICES` (or the caller's ``prices``); :class:`Accounting` totals what this session
  actually sent (cache hits are free), which is what budgets are checked against.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import math
import os
import random
import sqlite3
import threading
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping
from urllib.parse import urlsplit, urlunsplit

from .._endpoint import resolve_key, split_credentials
from .prompts import PROMPT_VERSION

log = logging.getLogger("fastsae.autointerp")

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

RETRYABLE_STATUS = frozenset({408, 409, 429})
"""HTTP statuses retried besides every 5xx (409: OpenAI's lock timeouts, retried by its SDK too)."""


class EndpointError(RuntimeError):
    """The endpoint could not give a usable answer (after retries, or at once when ``fatal``)."""

    def __init__(self, message: str, *, fatal: bool = False, status: int | None = None):
        super().__init__(message)
        self.fatal = fatal
        """True for errors that every later request would hit too (bad key, unknown model)."""
        self.status = status
        """The HTTP status of the last failure, when there was one."""


class MalformedResponse(ValueError):
    """A 200 answer that is not a chat completion (not JSON, no ``choices``, no ``message``)."""


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


def sanitize_url(url: str | None) -> str | None:
    """``url`` without user info, query or fragment, safe to log or save (no embedded secrets)."""
    if not url:
        return url
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


def resolve_endpoint(base_url: str | None, api_key: str | None) -> tuple[str | None, str]:
    """(base_url, api_key) from the arguments, else ``OPENAI_BASE_URL`` / ``OPENAI_API_KEY``.

    A custom ``base_url`` without a key gets the placeholder ``"EMPTY"`` (local servers such as
    vLLM or Ollama ignore it); OpenAI itself without a key is an error. Credentials inside the
    URL (``http://user:KEY@host/v1``, ``?api_key=KEY``) are stripped from the returned URL and
    returned as the key (:func:`fastsae._endpoint.split_credentials`); they take precedence
    over ``OPENAI_API_KEY``, and an ``api_key`` argument that differs from them is a
    ``ValueError``."""
    # A key inside the URL (user:KEY@host, ?api_key=KEY) becomes the key and leaves the URL,
    # which the HTTP stack logs at INFO (see fastsae._endpoint).
    base_url, url_key = split_credentials(base_url or os.environ.get("OPENAI_BASE_URL") or None)
    api_key = resolve_key(url_key, api_key) or os.environ.get("OPENAI_API_KEY") or None
    if not api_key:
        if base_url:
            api_key = "EMPTY"
        else:
            raise ValueError("no API key: pass api_key=, set OPENAI_API_KEY, point base_url (or "
                             "OPENAI_BASE_URL) at a local server, or use backend='keywords' (no LLM)")
    return base_url, api_key


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


@dataclass(frozen=True)
class Completion:
    """One answer from the endpoint (or the cache)."""

    content: str
    """The assistant message text ("" when the endpoint sent none)."""
    usage: Usage
    """Tokens and cost of producing it (also for cache hits: what the answer cost originally)."""
    cached: bool
    """True when it came from the cache (nothing was sent, nothing spent now)."""
    model: str
    """The model the request named."""


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

    def as_dict(self) -> dict:
        return {"requests": self.requests, "attempts": self.attempts, "retries": self.retries,
                "cache_hits": self.cache_hits, "failures": self.failures,
                "prompt_tokens": self.prompt_tokens, "completion_tokens": self.completion_tokens,
                "tokens": self.tokens, "cost": round(self.cost, 8)}


def cache_key(model: str, messages: list[dict], params: Mapping[str, Any]) -> str:
    """SHA-256 over (prompt version, model, messages, sampling parameters); no key, no URL."""
    blob = json.dumps({"v": PROMPT_VERSION, "model": model, "messages": messages, "params": dict(params)},
                      sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


class ResponseCache:
    """Answers on disk (sqlite), keyed by :func:`cache_key`.

    Each insert is committed at once, so a killed run keeps every answer it paid for. WAL
    journaling lets a second process read while one writes."""

    SCHEMA = 1

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        try:
            self._db = sqlite3.connect(str(self.path), timeout=30.0, check_same_thread=False)
            try:
                self._db.execute("PRAGMA journal_mode=WAL")
                self._db.execute("PRAGMA synchronous=NORMAL")
            except sqlite3.DatabaseError:
                pass  # e.g. a file system without shared memory: the default journal still works
            self._db.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
            self._db.execute("CREATE TABLE IF NOT EXISTS responses (key TEXT PRIMARY KEY, model TEXT NOT NULL, "
                             "response TEXT NOT NULL, created REAL NOT NULL)")
            row = self._db.execute("SELECT value FROM meta WHERE key='schema'").fetchone()
            if row is None:
                self._db.execute("INSERT INTO meta VALUES ('schema', ?)", (str(self.SCHEMA),))
            elif row[0] != str(self.SCHEMA):
                raise ValueError(f"{self.path}: response cache schema {row[0]}, expected {self.SCHEMA}; "
                                 "delete it or pass another cache_path")
            self._db.commit()
        except sqlite3.DatabaseError as e:
            raise ValueError(f"{self.path}: not a usable response cache ({e}); delete it or pass another "
                             "cache_path") from e

    def get(self, key: str) -> dict | None:
        with self._lock:
            row = self._db.execute("SELECT response FROM responses WHERE key=?", (key,)).fetchone()
        if row is None:
            return None
        try:
            return json.loads(row[0])
        except ValueError:
            return None  # a damaged row is treated as a miss and overwritten by the next answer

    def put(self, key: str, model: str, response: dict) -> None:
        with self._lock:
            self._db.execute("INSERT OR REPLACE INTO responses VALUES (?, ?, ?, ?)",
                             (key, model, json.dumps(response, ensure_ascii=False), time.time()))
            self._db.commit()

    def __len__(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM responses").fetchone()[0])

    def close(self) -> None:
        with self._lock:
            self._db.close()


@dataclass
class ClientConfig:
    """How requests are sent: concurrency, timeout, retries, sampling parameters, prices."""

    concurrency: int = 8
    """Requests in flight at once."""
    timeout: float = 60.0
    """Seconds before one request is abandoned (and retried)."""
    max_retries: int = 6
    """Retries of one request after a retryable failure (429, 5xx, timeout, connection error)."""
    backoff_base: float = 1.0
    """Seconds of the first backoff; attempt i waits about ``backoff_base * 2**i`` (with jitter)."""
    backoff_max: float = 60.0
    """Cap on one backoff wait (also caps a server's ``Retry-After``)."""
    malformed_retries: int = 2
    """Retries of a 200 answer that is not a chat completion (non-JSON, no choices); fewer than
    ``max_retries`` because a misconfigured endpoint rarely heals within seconds."""
    temperature: float | None = 0.0
    """Sampling temperature sent with every request; ``None`` omits it (models that reject it)."""
    max_output_tokens: int | None = 1024
    """Cap on each answer's tokens; ``None`` omits it."""
    token_param: str = "max_tokens"
    """Name of the request field carrying ``max_output_tokens``: ``"max_tokens"`` (widest server
    support) or ``"max_completion_tokens"`` (required by OpenAI's reasoning models)."""
    prices: dict[str, tuple[float, float]] | None = None
    """Extra or overriding (input, output) USD per 1M tokens per model; see :data:`PRICES`."""

    def __post_init__(self) -> None:
        if not isinstance(self.concurrency, int) or self.concurrency < 1:
            raise ValueError(f"concurrency must be an integer >= 1, got {self.concurrency!r}")
        if not (isinstance(self.timeout, (int, float)) and math.isfinite(self.timeout) and self.timeout > 0):
            raise ValueError(f"timeout must be a positive number of seconds, got {self.timeout!r}")
        for name in ("max_retries", "malformed_retries"):
            v = getattr(self, name)
            if not isinstance(v, int) or v < 0:
                raise ValueError(f"{name} must be an integer >= 0, got {v!r}")
        if self.backoff_base < 0 or self.backoff_max < 0:
            raise ValueError("backoff_base and backoff_max must be >= 0")
        if self.temperature is not None and not (0 <= self.temperature <= 2):
            raise ValueError(f"temperature must be in [0, 2] or None, got {self.temperature!r}")
        if self.max_output_tokens is not None and (not isinstance(self.max_output_tokens, int)
                                                   or self.max_output_tokens < 1):
            raise ValueError(f"max_output_tokens must be a positive integer or None, got {self.max_output_tokens!r}")
        if self.token_param not in ("max_tokens", "max_completion_tokens"):
            raise ValueError("token_param must be 'max_tokens' or 'max_completion_tokens'")
        if self.prices is not None:
            for k, v in self.prices.items():
                if len(v) != 2 or min(float(v[0]), float(v[1])) < 0:
                    raise ValueError(f"prices[{k!r}] must be (input, output) USD per 1M tokens, both >= 0")

    def request_params(self) -> dict:
        """The sampling parameters sent with (and cached under) every request."""
        p: dict[str, Any] = {}
        if self.temperature is not None:
            p["temperature"] = self.temperature
        if self.max_output_tokens is not None:
            p[self.token_param] = self.max_output_tokens
        return p


def _parse_body(text: str) -> tuple[str, dict | None, str | None]:
    """(content, usage, response model) of a chat-completions body; MalformedResponse otherwise."""
    try:
        body = json.loads(text)
    except ValueError:
        raise MalformedResponse(f"the answer is not JSON: {text[:80]!r}") from None
    if not isinstance(body, dict):
        raise MalformedResponse(f"the answer is JSON {type(body).__name__}, not an object")
    if "error" in body and "choices" not in body:
        raise MalformedResponse(f"the answer is an error object: {str(body['error'])[:200]}")
    choices = body.get("choices")
    if not isinstance(choices, list) or not choices:
        raise MalformedResponse("the answer has no 'choices'")
    msg = choices[0].get("message") if isinstance(choices[0], dict) else None
    if not isinstance(msg, dict):
        raise MalformedResponse("the answer's first choice has no 'message'")
    content = msg.get("content")
    if content is None:
        content = ""
    if isinstance(content, list):  # some servers send content parts
        content = "".join(p.get("text", "") for p in content if isinstance(p, dict))
    if not isinstance(content, str):
        raise MalformedResponse(f"the message content is {type(content).__name__}, not text")
    usage = body.get("usage") if isinstance(body.get("usage"), dict) else None
    model = body.get("model") if isinstance(body.get("model"), str) else None
    return content, usage, model


def _tokens(usage: dict | None, messages: list[dict], content: str) -> tuple[int, int, bool]:
    try:
        pt, ct = int(usage["prompt_tokens"]), int(usage.get("completion_tokens") or 0)  # type: ignore[index]
        if pt >= 0 and ct >= 0:
            return pt, ct, False
    except (TypeError, KeyError, ValueError):
        pass
    # No usage reported: estimate (about 4 characters per token) so budgets still bind.
    chars = sum(len(str(m.get("content", ""))) for m in messages)
    return math.ceil(chars / 4), math.ceil(len(content) / 4), True


def _retry_after(exc: Exception) -> float | None:
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


class ChatClient:
    """Async chat completions with a concurrency bound, retries, caching and accounting.

    Create it inside the event loop that uses it; close it with :meth:`aclose`."""

    def __init__(self, *, base_url: str | None, api_key: str, config: ClientConfig | None = None,
                 cache: ResponseCache | None = None, accounting: Accounting | None = None):
        import openai

        self.config = config or ClientConfig()
        self.cache = cache
        self.accounting = accounting or Accounting()
        # Also for a client built directly: the URL it keeps and logs holds no key.
        base_url, url_key = split_credentials(base_url)
        api_key = resolve_key(url_key, None if api_key == "EMPTY" else api_key) or api_key
        self.base_url = base_url
        self._secret = api_key
        # The SDK's own retries are off: ours count attempts, honour the budget and back off
        # with jitter across all concurrent requests the same way.
        self._client = openai.AsyncOpenAI(base_url=base_url, api_key=api_key, max_retries=0,
                                          timeout=self.config.timeout)
        self._sem = asyncio.Semaphore(self.config.concurrency)
        self._rng = random.Random()
        self._params = self.config.request_params()
        self._unpriced: set[str] = set()

    def __repr__(self) -> str:  # never show the key
        return f"ChatClient(base_url={sanitize_url(self.base_url)!r}, concurrency={self.config.concurrency})"

    def scrub(self, text: str) -> str:
        """``text`` with the API key masked (for error messages that may echo a request)."""
        if self._secret and self._secret != "EMPTY" and len(self._secret) >= 4:
            text = text.replace(self._secret, "***")
        return text

    async def aclose(self) -> None:
        await self._client.close()

    def _usage(self, model: str, pt: int, ct: int, estimated: bool) -> Usage:
        if price_for(model, self.config.prices) is None and model not in self._unpriced:
            self._unpriced.add(model)
            log.info("no price known for model %r: its cost is counted as 0 (pass prices= to set one)", model)
        return Usage(pt, ct, estimate_cost(model, pt, ct, self.config.prices), estimated)

    def _backoff(self, attempt: int, exc: Exception) -> float:
        cap = min(self.config.backoff_max, self.config.backoff_base * (2 ** attempt))
        delay = cap / 2 + self._rng.uniform(0, cap / 2)  # "equal jitter": spreads retries, keeps a floor
        ra = _retry_after(exc)
        if ra is not None:
            delay = max(delay, min(ra, self.config.backoff_max))
        return delay

    async def complete(self, model: str, messages: list[dict]) -> Completion:
        """The answer to ``messages`` from ``model``: from the cache, or from the endpoint.

        Raises :class:`EndpointError` when no usable answer came after the retries (or at once
        for a fatal error such as a rejected key or an unknown model)."""
        import openai

        key = cache_key(model, messages, self._params)
        if self.cache is not None:
            hit = self.cache.get(key)
            if hit is not None and isinstance(hit.get("content"), str):
                self.accounting.cache_hits += 1
                u = self._usage(model, int(hit.get("prompt_tokens", 0)), int(hit.get("completion_tokens", 0)),
                                bool(hit.get("estimated", False)))
                return Completion(hit["content"], u, True, model)

        cfg = self.config
        attempt = malformed = 0
        while True:
            self.accounting.attempts += 1
            try:
                async with self._sem:
                    raw = await self._client.chat.completions.with_raw_response.create(
                        model=model, messages=messages, timeout=cfg.timeout, **self._params)
                    text = raw.http_response.text
                content, usage, resp_model = _parse_body(text)
            except MalformedResponse as e:
                if malformed >= cfg.malformed_retries:
                    self.accounting.failures += 1
                    raise EndpointError(self.scrub(f"{model}: malformed answer from the endpoint after "
                                                   f"{malformed + 1} tries: {e}")) from None
                malformed += 1
                err: Exception = e
            except openai.APIStatusError as e:
                status = e.status_code
                if status not in RETRYABLE_STATUS and status < 500:
                    self.accounting.failures += 1
                    raise EndpointError(self.scrub(f"{model}: HTTP {status} from the endpoint (not retried): "
                                                   f"{_short(e)}"), fatal=True, status=status) from None
                if attempt >= cfg.max_retries:
                    self.accounting.failures += 1
                    raise EndpointError(self.scrub(f"{model}: HTTP {status} after {attempt + 1} tries: {_short(e)}"),
                                        status=status) from None
                err = e
            except openai.APIConnectionError as e:  # includes APITimeoutError
                if attempt >= cfg.max_retries:
                    self.accounting.failures += 1
                    what = "timed out" if isinstance(e, openai.APITimeoutError) else "connection failed"
                    raise EndpointError(self.scrub(f"{model}: request {what} after {attempt + 1} tries "
                                                   f"(timeout {cfg.timeout:g} s): {_short(e)}")) from None
                err = e
            else:
                pt, ct, est = _tokens(usage, messages, content)
                u = self._usage(model, pt, ct, est)
                acc = self.accounting
                acc.requests += 1
                acc.prompt_tokens += pt
                acc.completion_tokens += ct
                acc.cost += u.cost
                if self.cache is not None and content.strip():
                    # Empty answers are not cached: they are as likely a glitch as an answer.
                    self.cache.put(key, model, {"content": content, "prompt_tokens": pt, "completion_tokens": ct,
                                                "estimated": est, "response_model": resp_model})
                return Completion(content, u, False, model)
            delay = self._backoff(attempt, err)
            attempt += 1
            self.accounting.retries += 1
            log.debug("retrying %s in %.2f s after %s", model, delay, self.scrub(_short(err)))
            await asyncio.sleep(delay)


def _short(e: Exception) -> str:
    s = f"{type(e).__name__}: {e}"
    return s if len(s) <= 300 else s[:297] + "..."


def warn_unpriced(models: list[str], prices: Mapping[str, tuple[float, float]] | None, max_cost: float | None) -> None:
    """Warn when a cost budget is set but a model has no price (its spending would count as 0)."""
    if max_cost is None:
        return
    missing = sorted({m for m in models if price_for(m, prices) is None})
    if missing:
        warnings.warn(f"max_cost is set but no price is known for {missing}: their requests count as $0, so the "
                      "cost budget cannot stop them (pass prices={model: (input, output)} per 1M tokens, or "
                      "use max_tokens)", stacklevel=3)


__all__ = [
    "Accounting", "ChatClient", "ClientConfig", "Completion", "EndpointError", "MalformedResponse", "PRICES",
    "PRICES_DATE", "ResponseCache", "Usage", "cache_key", "estimate_cost", "price_for", "resolve_endpoint",
    "sanitize_url", "warn_unpriced",
]
