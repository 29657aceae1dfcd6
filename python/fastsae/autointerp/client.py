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
import time
import warnings
from dataclasses import dataclass
from typing import Any, Mapping

from .._checks import check_choice, check_int, check_number
from .._endpoint import (
    NO_KEY_PLACEHOLDER,
    PRICES,
    PRICES_DATE,
    RETRYABLE_STATUS,  # noqa: F401  (re-exported: it was defined here)
    Accounting,
    RetryPolicy,
    SqliteCache,
    Usage,
    estimate_cost,
    is_retryable,
    make_client,
    price_for,
    resolve_key,
    sanitize_url,
    split_credentials,
)
from .._endpoint import resolve_endpoint as _resolve_endpoint
from .prompts import PROMPT_VERSION

log = logging.getLogger("fastsae.autointerp")


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


def resolve_endpoint(base_url: str | None, api_key: str | None) -> tuple[str | None, str]:
    """(base_url, api_key) from the arguments, else ``OPENAI_BASE_URL`` / ``OPENAI_API_KEY``
    (:func:`fastsae._endpoint.resolve_endpoint`): a custom ``base_url`` without a key gets the
    placeholder ``"EMPTY"``; OpenAI itself without a key is a ``ValueError``; credentials inside
    the URL become the key and leave the URL."""
    return _resolve_endpoint(base_url, api_key, no_key=lambda: ValueError(
        "no API key: pass api_key=, set OPENAI_API_KEY, point base_url (or OPENAI_BASE_URL) at a local "
        "server, or use backend='keywords' (no LLM)"))


def cache_key(model: str, messages: list[dict], params: Mapping[str, Any]) -> str:
    """SHA-256 over (prompt version, model, messages, sampling parameters); no key, no URL."""
    blob = json.dumps({"v": PROMPT_VERSION, "model": model, "messages": messages, "params": dict(params)},
                      sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


class ResponseCache(SqliteCache):
    """Answers on disk (sqlite, :class:`fastsae._endpoint.SqliteCache`), keyed by :func:`cache_key`.

    Each insert is committed at once, so a killed run keeps every answer it paid for. WAL
    journaling lets a second process read while one writes."""

    SCHEMA = 1
    TABLE = "responses"
    COLUMNS = "model TEXT NOT NULL, response TEXT NOT NULL, created REAL NOT NULL"
    VERSION_KEY = "schema"
    VERSION = str(SCHEMA)
    WHAT = "response cache"

    def get(self, key: str) -> dict | None:
        rows = self._query("SELECT response FROM responses WHERE key=?", (key,))
        if not rows:
            return None
        try:
            return json.loads(rows[0][0])
        except ValueError:
            return None  # a damaged row is treated as a miss and overwritten by the next answer

    def put(self, key: str, model: str, response: dict) -> None:
        self._write("INSERT OR REPLACE INTO responses VALUES (?, ?, ?, ?)",
                    [(key, model, json.dumps(response, ensure_ascii=False), time.time())])


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
        # the one check policy (fastsae._checks); values are checked, never converted
        check_int(self.concurrency, "concurrency", min=1)
        check_number(self.timeout, "timeout (seconds)", min=0, min_open=True)
        for name in ("max_retries", "malformed_retries"):
            check_int(getattr(self, name), name, min=0)
        check_number(self.backoff_base, "backoff_base", min=0)
        check_number(self.backoff_max, "backoff_max", min=0)
        check_number(self.temperature, "temperature", min=0, max=2, none=True)
        check_int(self.max_output_tokens, "max_output_tokens", min=1, none=True)
        check_choice(self.token_param, "token_param", ("max_tokens", "max_completion_tokens"))
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


class ChatClient:
    """Async chat completions with a concurrency bound, retries, caching and accounting.

    Create it inside the event loop that uses it; close it with :meth:`aclose`."""

    def __init__(self, *, base_url: str | None, api_key: str, config: ClientConfig | None = None,
                 cache: ResponseCache | None = None, accounting: Accounting | None = None):
        self.config = config or ClientConfig()
        self.cache = cache
        self.accounting = accounting or Accounting()
        # Also for a client built directly: the URL it keeps and logs holds no key.
        base_url, url_key = split_credentials(base_url)
        api_key = resolve_key(url_key, None if api_key == NO_KEY_PLACEHOLDER else api_key) or api_key
        self.base_url = base_url
        self._secret = api_key
        self._client = make_client(base_url, api_key, timeout=self.config.timeout, asynchronous=True)
        self._sem = asyncio.Semaphore(self.config.concurrency)
        self._retry = RetryPolicy(self.config.max_retries, self.config.backoff_base, self.config.backoff_max)
        self._params = self.config.request_params()
        self._unpriced: set[str] = set()

    def __repr__(self) -> str:  # never show the key
        return f"ChatClient(base_url={sanitize_url(self.base_url)!r}, concurrency={self.config.concurrency})"

    def scrub(self, text: str) -> str:
        """``text`` with the API key masked (for error messages that may echo a request)."""
        if self._secret and self._secret != NO_KEY_PLACEHOLDER and len(self._secret) >= 4:
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
        return self._retry.delay(attempt, exc)

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
                if not is_retryable(e):
                    self.accounting.failures += 1
                    raise EndpointError(self.scrub(f"{model}: HTTP {status} from the endpoint (not retried): "
                                                   f"{_short(e)}"), fatal=True, status=status) from None
                if self._retry.gives_up(attempt):
                    self.accounting.failures += 1
                    raise EndpointError(self.scrub(f"{model}: HTTP {status} after {attempt + 1} tries: {_short(e)}"),
                                        status=status) from None
                err = e
            except openai.APIConnectionError as e:  # includes APITimeoutError
                if self._retry.gives_up(attempt):
                    self.accounting.failures += 1
                    what = "timed out" if isinstance(e, openai.APITimeoutError) else "connection failed"
                    raise EndpointError(self.scrub(f"{model}: request {what} after {attempt + 1} tries "
                                                   f"(timeout {cfg.timeout:g} s): {_short(e)}")) from None
                err = e
            else:
                pt, ct, est = _tokens(usage, messages, content)
                u = self._usage(model, pt, ct, est)
                self.accounting.record(u)
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
