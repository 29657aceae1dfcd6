"""Credentials in an OpenAI-compatible endpoint URL, shared by both clients (embeddings and chat).

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
