"""A scriptable OpenAI-compatible HTTP server on loopback, for tests (standard library only).

It is a real ``ThreadingHTTPServer`` on ``127.0.0.1`` (an ephemeral port), so the code under
test talks to it through the real ``openai`` client and its HTTP stack::

    with LLMServer(chat=lambda req: chat_reply("FINAL: cats")) as srv:
        client = OpenAI(base_url=srv.url, api_key="x")
        ...
        assert srv.count("/v1/chat/completions") == 1

Routes are looked up by path (:meth:`LLMServer.route`), so the same server can answer
``/v1/embeddings`` or anything else a test needs; ``chat=`` is a shortcut for
``route("/v1/chat/completions", ...)``. A handler takes a :class:`Request` and returns a
:class:`Reply` (or a dict / str, see :func:`as_reply`).

Faults are injected in two ways:

* :meth:`LLMServer.script` queues one-shot replies that the next requests get (on any path
  or one path), before the route handler is consulted: ``srv.script(error(429), error(500))``
  makes the next two requests fail and the third succeed;
* :meth:`LLMServer.block_after` makes every request after the n-th hang until
  :meth:`LLMServer.release` (or :meth:`LLMServer.stop`), the tool for "kill a client mid-run".

:meth:`LLMServer.stop` closes the listening socket *and* every open connection, so a client
sees a server that died (connection refused / reset), not one that merely went quiet.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Union

CHAT_PATH = "/v1/chat/completions"
EMBEDDINGS_PATH = "/v1/embeddings"


@dataclass
class Request:
    """One request as the server received it."""

    index: int
    """0-based arrival order over the server's lifetime (all paths)."""
    method: str
    """HTTP method (``"POST"``, ``"GET"``)."""
    path: str
    """URL path without the query string, e.g. ``"/v1/chat/completions"``."""
    headers: dict[str, str]
    """Request headers (names lower-cased)."""
    body: bytes
    """Raw request body."""
    json: Any
    """The body parsed as JSON, or ``None`` when it is not JSON."""

    @property
    def messages(self) -> list[dict]:
        """Chat messages of a chat-completions request (empty otherwise)."""
        return list((self.json or {}).get("messages", [])) if isinstance(self.json, dict) else []

    @property
    def model(self) -> str | None:
        return self.json.get("model") if isinstance(self.json, dict) else None

    @property
    def prompt(self) -> str:
        """All message contents joined, for responders that answer from the prompt."""
        return "\n".join(str(m.get("content", "")) for m in self.messages)

    @property
    def last_user(self) -> str:
        users = [m for m in self.messages if m.get("role") == "user"]
        return str(users[-1].get("content", "")) if users else ""


@dataclass
class Reply:
    """What the server sends back."""

    status: int = 200
    """HTTP status code."""
    body: Union[bytes, str, dict, list] = b""
    """Response body; dicts and lists are sent as JSON, str as UTF-8 text."""
    headers: dict[str, str] = field(default_factory=dict)
    """Extra response headers (``Content-Type`` defaults to JSON for dict/list bodies)."""
    delay: float = 0.0
    """Seconds to wait before answering (a slow server; past the client timeout it is a timeout)."""
    drop: bool = False
    """Close the connection without answering (a server that crashed mid-request)."""


Handler = Callable[[Request], Any]


def as_reply(obj: Any) -> Reply:
    """A :class:`Reply` from a handler's return value: a Reply, a dict/list (JSON 200), or a
    str (taken as the assistant's message content of a chat completion)."""
    if isinstance(obj, Reply):
        return obj
    if isinstance(obj, (dict, list)):
        return Reply(body=obj)
    if isinstance(obj, str):
        return chat_reply(obj)
    raise TypeError(f"a handler returned {type(obj).__name__}; expected Reply, dict, list or str")


def chat_completion(content: str, *, model: str = "test-model", prompt_tokens: int = 100,
                    completion_tokens: int = 20, usage: bool = True) -> dict:
    """A chat-completions response body with one choice holding ``content``."""
    body: dict[str, Any] = {
        "id": "chatcmpl-test",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "finish_reason": "stop",
                     "message": {"role": "assistant", "content": content}}],
    }
    if usage:
        body["usage"] = {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                         "total_tokens": prompt_tokens + completion_tokens}
    return body


def chat_reply(content: str, **kw) -> Reply:
    """A 200 :class:`Reply` carrying :func:`chat_completion` ``(content, **kw)``."""
    return Reply(body=chat_completion(content, **kw))


def embeddings_response(vectors, *, model: str = "test-embedding", prompt_tokens: int = 0) -> dict:
    """An ``/v1/embeddings`` response body for ``vectors`` (a list of lists of floats)."""
    return {"object": "list", "model": model,
            "data": [{"object": "embedding", "index": i, "embedding": [float(x) for x in v]}
                     for i, v in enumerate(vectors)],
            "usage": {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens}}


def error(status: int, message: str = "injected error", **kw) -> Reply:
    """An OpenAI-style error reply (``{"error": {...}}``) with HTTP ``status``."""
    return Reply(status=status, body={"error": {"message": message, "type": "test_error", "code": status}}, **kw)


def malformed(text: str = "<html>this is not JSON</html>") -> Reply:
    """A 200 reply whose body is not JSON (a misconfigured proxy)."""
    return Reply(body=text, headers={"Content-Type": "application/json"})


def slow(reply: Any, seconds: float) -> Reply:
    r = as_reply(reply)
    return Reply(status=r.status, body=r.body, headers=r.headers, delay=seconds, drop=r.drop)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, like real servers; stop() closes kept connections
    server: "_Server"

    def log_message(self, format, *args):  # noqa: A002 - silence the per-request stderr log
        pass

    def setup(self):
        super().setup()
        self.server.owner._track(self.connection, add=True)

    def finish(self):
        try:
            super().finish()
        finally:
            self.server.owner._track(self.connection, add=False)

    def _serve(self, method: str) -> None:
        owner = self.server.owner
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        try:
            parsed = json.loads(body) if body else None
        except ValueError:
            parsed = None
        path = self.path.split("?", 1)[0]
        req = owner._record(method, path, {k.lower(): v for k, v in self.headers.items()}, body, parsed)
        owner._enter()
        try:
            self._answer(owner, req)
        finally:
            owner._leave()

    def _answer(self, owner: "LLMServer", req: Request) -> None:
        reply = owner._dispatch(req)
        if owner._should_block(req):
            owner._released.wait()
        if reply.delay:
            owner._stopping.wait(reply.delay)
        if reply.drop or owner._stopping.is_set():
            self.close_connection = True
            try:
                self.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            return
        payload = reply.body
        headers = dict(reply.headers)
        if isinstance(payload, (dict, list)):
            payload = json.dumps(payload).encode()
            headers.setdefault("Content-Type", "application/json")
        elif isinstance(payload, str):
            payload = payload.encode()
            headers.setdefault("Content-Type", "text/plain; charset=utf-8")
        try:
            self.send_response(reply.status)
            for k, v in headers.items():
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)
            self.wfile.flush()
        except OSError:  # the client gave up (its timeout) and closed the socket
            self.close_connection = True

    def do_POST(self):  # noqa: N802
        self._serve("POST")

    def do_GET(self):  # noqa: N802
        self._serve("GET")


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    owner: "LLMServer"


class LLMServer:
    """A chat-completions (and any other path) server on 127.0.0.1, in a background thread."""

    def __init__(self, chat: Handler | None = None, *, routes: dict[str, Handler] | None = None,
                 host: str = "127.0.0.1", port: int = 0):
        self._routes: dict[str, Handler] = dict(routes or {})
        if chat is not None:
            self._routes[CHAT_PATH] = chat
        self._lock = threading.Lock()
        self._requests: list[Request] = []
        self._script: deque[tuple[str | None, Any]] = deque()
        self._block_after: int | None = None
        self._released = threading.Event()
        self._released.set()
        self._stopping = threading.Event()
        self._conns: set[socket.socket] = set()
        self._active = 0
        self.max_concurrent = 0
        """Most requests the server was answering at the same time (a concurrency bound check)."""
        self._server = _Server((host, port), _Handler)
        self._server.owner = self
        self._thread: threading.Thread | None = None

    # -- lifecycle -----------------------------------------------------------------------------
    def start(self) -> "LLMServer":
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        daemon=True, name="llm-server")
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop answering: close the listener and every open connection (idempotent)."""
        if self._stopping.is_set():
            return
        self._stopping.set()
        self._released.set()
        self._server.shutdown()
        self._server.server_close()
        with self._lock:
            conns = list(self._conns)
        for c in conns:
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> "LLMServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def port(self) -> int:
        return self._server.server_address[1]

    @property
    def url(self) -> str:
        """Base URL for an OpenAI client (``.../v1``)."""
        return f"http://127.0.0.1:{self.port}/v1"

    # -- configuration -------------------------------------------------------------------------
    def route(self, path: str, handler: Handler) -> None:
        """Answer requests to ``path`` (e.g. ``"/v1/embeddings"``) with ``handler``."""
        self._routes[path] = handler

    def script(self, *replies: Any, path: str | None = CHAT_PATH) -> None:
        """Queue one-shot replies for the next requests to ``path`` (``None``: any path).

        Each item is a :class:`Reply`, a dict/str (see :func:`as_reply`) or a handler
        (``callable(Request)``) used once."""
        with self._lock:
            for r in replies:
                self._script.append((path, r))

    def block_after(self, n: int | None) -> None:
        """Requests after the first ``n`` (counted over the server's lifetime) hang until
        :meth:`release`; ``None`` turns blocking off."""
        with self._lock:
            self._block_after = n
            if n is None:
                self._released.set()
            else:
                self._released.clear()

    def release(self) -> None:
        self.block_after(None)

    # -- observation ---------------------------------------------------------------------------
    @property
    def requests(self) -> list[Request]:
        with self._lock:
            return list(self._requests)

    def count(self, path: str | None = None) -> int:
        """Requests received (on ``path``, or on any path)."""
        with self._lock:
            return sum(1 for r in self._requests if path is None or r.path == path)

    def wait_for(self, n: int, *, path: str | None = None, timeout: float = 30.0) -> bool:
        """Wait until at least ``n`` requests arrived; False on timeout."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.count(path) >= n:
                return True
            time.sleep(0.01)
        return False

    # -- internals -----------------------------------------------------------------------------
    def _track(self, conn: socket.socket, *, add: bool) -> None:
        with self._lock:
            (self._conns.add if add else self._conns.discard)(conn)

    def _enter(self) -> None:
        with self._lock:
            self._active += 1
            self.max_concurrent = max(self.max_concurrent, self._active)

    def _leave(self) -> None:
        with self._lock:
            self._active -= 1

    def _record(self, method, path, headers, body, parsed) -> Request:
        with self._lock:
            req = Request(len(self._requests), method, path, headers, body, parsed)
            self._requests.append(req)
            return req

    def _should_block(self, req: Request) -> bool:
        with self._lock:
            return self._block_after is not None and req.index >= self._block_after

    def _dispatch(self, req: Request) -> Reply:
        with self._lock:
            scripted = None
            for i, (p, r) in enumerate(self._script):
                if p is None or p == req.path:
                    scripted = r
                    del self._script[i]
                    break
        try:
            if scripted is not None:
                return as_reply(scripted(req) if callable(scripted) else scripted)
            handler = self._routes.get(req.path)
            if handler is None:
                return error(404, f"no route for {req.path}")
            return as_reply(handler(req))
        except Exception as e:  # a bug in a test handler: answer 599 so the test sees it, not a hang
            return error(599, f"test handler raised {type(e).__name__}: {e}")
